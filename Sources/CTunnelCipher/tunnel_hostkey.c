/* See tunnel_hostkey.h. */
#define _GNU_SOURCE
#include "tunnel_hostkey.h"
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

/* libssh2 1.10's struct _LIBSSH2_HOSTKEY_METHOD (src/libssh2_priv.h); the session is opaque here. */
typedef struct {
    const char *name;
    unsigned long hash_len;
    int (*init)(void *session, const unsigned char *data, size_t data_len, void **abstract);
    int (*initPEM)(void *session, const char *file, const unsigned char *passphrase, void **abstract);
    int (*initPEMFromMemory)(void *session, const char *data, size_t data_len, const unsigned char *passphrase, void **abstract);
    int (*sig_verify)(void *session, const unsigned char *sig, size_t sig_len, const unsigned char *m, size_t m_len, void **abstract);
    int (*signv)(void *session, unsigned char **sig, size_t *sig_len, int count, const struct iovec vec[], void **abstract);
    int (*encrypt)(void *session, unsigned char **dst, size_t *dst_len, const unsigned char *src, size_t src_len, void **abstract);
    int (*dtor)(void *session, void **abstract);
} hostkey_method;

/* Exported by libssh2 (not in its public header): its NULL-terminated host-key method table. */
extern const hostkey_method **libssh2_hostkey_methods(void);
extern const char *libssh2_version(int required);

/* An SSH wire string at *p (of *left bytes): sets out/out_len and advances. 0 on success. */
static int wire_string(const unsigned char **p, size_t *left, const unsigned char **out, size_t *out_len) {
    if (*left < 4) return -1;
    size_t n = ((size_t)(*p)[0] << 24) | ((size_t)(*p)[1] << 16) | ((size_t)(*p)[2] << 8) | (size_t)(*p)[3];
    if (n > *left - 4) return -1;
    *out = *p + 4;
    *out_len = n;
    *p += 4 + n;
    *left -= 4 + n;
    return 0;
}

static int rsa_dtor(void *session, void **abstract) {
    (void)session;
    EVP_PKEY_free((EVP_PKEY *)*abstract);
    *abstract = NULL;
    return 0;
}

/* Reads the server's `ssh-rsa` key blob (string "ssh-rsa", mpint e, mpint n). */
static int rsa_init(void *session, const unsigned char *data, size_t data_len, void **abstract) {
    if (*abstract) rsa_dtor(session, abstract);
    const unsigned char *p = data, *name, *e, *n;
    size_t left = data_len, name_len, e_len, n_len;
    if (wire_string(&p, &left, &name, &name_len) || name_len != 7 || memcmp(name, "ssh-rsa", 7) != 0) return -1;
    if (wire_string(&p, &left, &e, &e_len) || wire_string(&p, &left, &n, &n_len)) return -1;
    BIGNUM *bn_e = BN_bin2bn(e, (int)e_len, NULL), *bn_n = BN_bin2bn(n, (int)n_len, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    if (bn_e && bn_n && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) == 1
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) == 1 && (params = OSSL_PARAM_BLD_to_param(bld)) != NULL
        && (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) != NULL && EVP_PKEY_fromdata_init(ctx) == 1) {
        if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_e);
    BN_free(bn_n);
    if (pkey == NULL) return -1;
    *abstract = pkey;
    return 0;
}

/* Checks an RFC 8332 signature blob (string algorithm, string signature) over m. */
static int rsa_verify(const char *algorithm, const EVP_MD *md, const unsigned char *sig, size_t sig_len,
                      const unsigned char *m, size_t m_len, void **abstract) {
    EVP_PKEY *pkey = (EVP_PKEY *)*abstract;
    const unsigned char *p = sig, *name, *s;
    size_t left = sig_len, name_len, s_len;
    if (pkey == NULL || md == NULL) return -1;
    if (wire_string(&p, &left, &name, &name_len) || name_len != strlen(algorithm) || memcmp(name, algorithm, name_len) != 0) return -1;
    if (wire_string(&p, &left, &s, &s_len)) return -1;
    /* A signature may come without its leading zero bytes; OpenSSL wants the modulus length. */
    size_t mod_len = (size_t)EVP_PKEY_get_size(pkey);
    if (s_len == 0 || s_len > mod_len) return -1;
    unsigned char *padded = calloc(1, mod_len);
    if (padded == NULL) return -1;
    memcpy(padded + (mod_len - s_len), s, s_len);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, md, NULL, pkey) == 1
             && EVP_DigestVerify(ctx, padded, mod_len, m, m_len) == 1;
    EVP_MD_CTX_free(ctx);
    free(padded);
    return ok ? 0 : -1;
}

static int rsa_sha2_512_verify(void *session, const unsigned char *sig, size_t sig_len, const unsigned char *m, size_t m_len, void **abstract) {
    (void)session;
    return rsa_verify("rsa-sha2-512", EVP_sha512(), sig, sig_len, m, m_len, abstract);
}

static int rsa_sha2_256_verify(void *session, const unsigned char *sig, size_t sig_len, const unsigned char *m, size_t m_len, void **abstract) {
    (void)session;
    return rsa_verify("rsa-sha2-256", EVP_sha256(), sig, sig_len, m, m_len, abstract);
}

static const hostkey_method rsa_sha2_512 = {"rsa-sha2-512", 16, rsa_init, NULL, NULL, rsa_sha2_512_verify, NULL, NULL, rsa_dtor};
static const hostkey_method rsa_sha2_256 = {"rsa-sha2-256", 16, rsa_init, NULL, NULL, rsa_sha2_256_verify, NULL, NULL, rsa_dtor};

/* The protection of the mapping holding addr, from /proc/self/maps; -1 if not found. */
static int protection_of(uintptr_t addr) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL) return -1;
    char line[512];
    int prot = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) != 3 || addr < lo || addr >= hi) continue;
        prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) | (perms[2] == 'x' ? PROT_EXEC : 0);
        break;
    }
    fclose(f);
    return prot;
}

/* Points table[index] at method, unprotecting the (RELRO, read-only) page around it for the write
   and restoring its protection after. */
static int replace_slot(const hostkey_method **table, size_t index, const hostkey_method *method) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t addr = (uintptr_t)&table[index];
    int prot = protection_of(addr);
    if (page <= 0 || prot < 0 || addr % sizeof(void *) != 0) return 0;
    void *start = (void *)(addr & ~((uintptr_t)page - 1));
    if (!(prot & PROT_WRITE) && mprotect(start, (size_t)page, prot | PROT_WRITE) != 0) return 0;
    __atomic_store_n(&table[index], method, __ATOMIC_SEQ_CST);
    if (!(prot & PROT_WRITE)) mprotect(start, (size_t)page, prot);
    return 1;
}

static int install_result;

static void install(void) {
    if (libssh2_version(0x010b00) != NULL) { install_result = 2; return; }
    if (libssh2_version(0x010a00) == NULL) return;
    const hostkey_method **table = libssh2_hostkey_methods();
    if (table == NULL) return;
    size_t slots[2], found = 0, count = 0;
    int rsa_seen = 0;
    for (; count < 64 && table[count] != NULL; count++) {
        const hostkey_method *m = table[count];
        if (m->name == NULL) return;
        if (strcmp(m->name, "rsa-sha2-512") == 0 || strcmp(m->name, "rsa-sha2-256") == 0) { install_result = 2; return; }
        /* The layout check: 1.10's ssh-rsa entry verifies and cannot encrypt. */
        if (strcmp(m->name, "ssh-rsa") == 0) rsa_seen = m->init != NULL && m->sig_verify != NULL && m->encrypt == NULL && m->dtor != NULL;
        /* Certificate entries without a signature check: never negotiable as host keys. */
        if (found < 2 && (strcmp(m->name, "ecdsa-sha2-nistp521-cert-v01@openssh.com") == 0 || strcmp(m->name, "ecdsa-sha2-nistp384-cert-v01@openssh.com") == 0)
            && m->init == NULL && m->sig_verify == NULL && m->dtor != NULL) {
            slots[found++] = count;
        }
    }
    if (!rsa_seen || found != 2 || count >= 64) return;
    if (!replace_slot(table, slots[0], &rsa_sha2_512)) return;
    if (!replace_slot(table, slots[1], &rsa_sha2_256)) return;
    install_result = 1;
}

int postgate_hostkey_install_rsa_sha2(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install);
    return install_result;
}
