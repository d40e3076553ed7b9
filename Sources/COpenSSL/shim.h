#ifndef POSTGATE_COPENSSL_SHIM_H
#define POSTGATE_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/rand.h>
#include <openssl/bn.h>
#include <openssl/sha.h>
#include <openssl/param_build.h>
#include <openssl/core_names.h>

/* Macros Swift cannot import, as constants. */
static const unsigned long postgate_XN_FLAG_RFC2253 = XN_FLAG_RFC2253;
#include <openssl/rsa.h>

/* Builds an RSA EVP_PKEY from OpenSSH's private-key fields (n, e, d, iqmp, p, q);
   the CRT exponents are derived. Returns NULL on failure. */
static inline EVP_PKEY *postgate_rsa_from_components(
    const unsigned char *n, size_t nl, const unsigned char *e, size_t el, const unsigned char *d, size_t dl,
    const unsigned char *p, size_t pl, const unsigned char *q, size_t ql, const unsigned char *iqmp, size_t il) {
    EVP_PKEY *pkey = NULL;
    BN_CTX *ctx = BN_CTX_new();
    BIGNUM *N = BN_bin2bn(n, (int)nl, NULL), *E = BN_bin2bn(e, (int)el, NULL), *D = BN_bin2bn(d, (int)dl, NULL);
    BIGNUM *P = BN_bin2bn(p, (int)pl, NULL), *Q = BN_bin2bn(q, (int)ql, NULL), *IQMP = BN_bin2bn(iqmp, (int)il, NULL);
    BIGNUM *DMP1 = BN_new(), *DMQ1 = BN_new(), *T = BN_new();
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    if (!ctx || !N || !E || !D || !P || !Q || !IQMP || !DMP1 || !DMQ1 || !T || !bld) goto done;
    if (!BN_sub(T, P, BN_value_one()) || !BN_mod(DMP1, D, T, ctx)) goto done;
    if (!BN_sub(T, Q, BN_value_one()) || !BN_mod(DMQ1, D, T, ctx)) goto done;
    if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, N) || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, E)
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_D, D)
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR1, P) || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR2, Q)
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT1, DMP1) || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT2, DMQ1)
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, IQMP)) goto done;
    params = OSSL_PARAM_BLD_to_param(bld);
    pctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!params || !pctx || EVP_PKEY_fromdata_init(pctx) != 1) goto done;
    if (EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1) pkey = NULL;
done:
    EVP_PKEY_CTX_free(pctx); OSSL_PARAM_free(params); OSSL_PARAM_BLD_free(bld);
    BN_free(N); BN_free(E); BN_clear_free(D); BN_clear_free(P); BN_clear_free(Q); BN_clear_free(IQMP);
    BN_clear_free(DMP1); BN_clear_free(DMQ1); BN_clear_free(T); BN_CTX_free(ctx);
    return pkey;
}
#endif
