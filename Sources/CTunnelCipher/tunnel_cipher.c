/* See tunnel_cipher.h. EVP_CIPHER_meth_* are deprecated in OpenSSL 3 but supported throughout 3.x;
 * libssh2 itself builds its fallback AES-CTR the same way. */
#define OPENSSL_SUPPRESS_DEPRECATED
#define _GNU_SOURCE
#include "tunnel_cipher.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>

enum { KEYSTREAM_BYTES = 4096 };

typedef struct {
    EVP_CIPHER_CTX *aes;                    /* OpenSSL's AES-CTR, run over zeros to make keystream */
    unsigned char stream[KEYSTREAM_BYTES];  /* keystream not yet used from `used` on */
    size_t used;
} keystream_state;

static const unsigned char zeros[KEYSTREAM_BYTES];

static const char *openssl_name(int key_len) {
    switch (key_len) {
    case 16: return "AES-128-CTR";
    case 24: return "AES-192-CTR";
    case 32: return "AES-256-CTR";
    default: return NULL;
    }
}

static int keystream_init(EVP_CIPHER_CTX *ctx, const unsigned char *key, const unsigned char *iv, int enc) {
    (void)enc; /* CTR encrypts and decrypts alike */
    keystream_state *s = EVP_CIPHER_CTX_get_cipher_data(ctx);
    if (s == NULL) return 0;
    if (key == NULL && iv == NULL) return 1;
    if (key == NULL) {
        /* A new IV on the current key: restart the stream there. */
        if (s->aes == NULL || EVP_EncryptInit_ex(s->aes, NULL, NULL, NULL, iv) != 1) return 0;
    } else {
        if (iv == NULL) return 0;
        const char *name = openssl_name(EVP_CIPHER_CTX_get_key_length(ctx));
        if (name == NULL) return 0;
        /* Fetched by name from the providers, never through EVP_aes_*_ctr, which is this file. */
        EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, name, NULL);
        if (aes == NULL) return 0;
        if (s->aes == NULL) s->aes = EVP_CIPHER_CTX_new();
        int ok = s->aes != NULL && EVP_EncryptInit_ex(s->aes, aes, NULL, key, iv) == 1;
        EVP_CIPHER_free(aes);
        if (!ok) return 0;
    }
    OPENSSL_cleanse(s->stream, sizeof s->stream);
    s->used = KEYSTREAM_BYTES;
    return 1;
}

static int keystream_refill(keystream_state *s) {
    int out = 0;
    if (EVP_EncryptUpdate(s->aes, s->stream, &out, zeros, KEYSTREAM_BYTES) != 1 || out != KEYSTREAM_BYTES) return 0;
    s->used = 0;
    return 1;
}

typedef unsigned char block16 __attribute__((vector_size(16)));

/* XORs 16 bytes at a time with one 16-byte store each: libssh2 copies every block out with a
   16-byte load right after, which narrower stores would stall (no store-to-load forwarding). */
static void xor_bytes(unsigned char *out, const unsigned char *in, const unsigned char *ks, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        block16 a, b;
        memcpy(&a, in + i, 16);
        memcpy(&b, ks + i, 16);
        a ^= b;
        memcpy(out + i, &a, 16);
    }
    for (; i < n; i++) out[i] = in[i] ^ ks[i];
}

/* A custom cipher (EVP_CIPH_FLAG_CUSTOM_CIPHER), as OpenSSL's own AES-CTR: returns the bytes
   written, 0 for the final call (in == NULL), and -1 on failure, which is what libssh2 checks. */
static int keystream_cipher(EVP_CIPHER_CTX *ctx, unsigned char *out, const unsigned char *in, size_t len) {
    keystream_state *s = EVP_CIPHER_CTX_get_cipher_data(ctx);
    if (in == NULL) return 0;
    if (s == NULL || s->aes == NULL || len > INT32_MAX) return -1;
    const size_t total = len;
    while (len > 0) {
        if (s->used == KEYSTREAM_BYTES) {
            /* Buffer spent: OpenSSL's context stands exactly at the stream position, so a long
               input can go straight through it. */
            if (len >= KEYSTREAM_BYTES) {
                int n = 0;
                size_t whole = len - len % KEYSTREAM_BYTES;
                if (EVP_EncryptUpdate(s->aes, out, &n, in, (int)whole) != 1 || (size_t)n != whole) return -1;
                in += whole; out += whole; len -= whole;
                continue;
            }
            if (!keystream_refill(s)) return -1;
        }
        size_t n = KEYSTREAM_BYTES - s->used;
        if (n > len) n = len;
        xor_bytes(out, in, s->stream + s->used, n);
        s->used += n;
        in += n; out += n; len -= n;
    }
    return (int)total;
}

/* EVP_CIPHER_CTX_copy copies the state bytes; the copy needs its own OpenSSL context. */
static int keystream_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr) {
    (void)arg;
    if (type != EVP_CTRL_COPY) return -1;
    keystream_state *from = EVP_CIPHER_CTX_get_cipher_data(ctx);
    keystream_state *to = EVP_CIPHER_CTX_get_cipher_data((EVP_CIPHER_CTX *)ptr);
    if (from == NULL || to == NULL) return 0;
    to->aes = NULL;
    if (from->aes == NULL) return 1;
    to->aes = EVP_CIPHER_CTX_new();
    if (to->aes == NULL || EVP_CIPHER_CTX_copy(to->aes, from->aes) != 1) {
        EVP_CIPHER_CTX_free(to->aes);
        to->aes = NULL;
        OPENSSL_cleanse(to->stream, sizeof to->stream);
        to->used = KEYSTREAM_BYTES;
        return 0;
    }
    return 1;
}

static int keystream_cleanup(EVP_CIPHER_CTX *ctx) {
    keystream_state *s = EVP_CIPHER_CTX_get_cipher_data(ctx);
    if (s != NULL) {
        EVP_CIPHER_CTX_free(s->aes);
        s->aes = NULL;
        OPENSSL_cleanse(s->stream, sizeof s->stream);
    }
    return 1;
}

static EVP_CIPHER *ciphers[3];
static pthread_once_t ciphers_once = PTHREAD_ONCE_INIT;

static void make_ciphers(void) {
    static const int nids[3] = {NID_aes_128_ctr, NID_aes_192_ctr, NID_aes_256_ctr};
    for (int i = 0; i < 3; i++) {
        EVP_CIPHER *c = EVP_CIPHER_meth_new(nids[i], 1, 16 + 8 * i);
        if (c == NULL) continue;
        if (EVP_CIPHER_meth_set_iv_length(c, 16) != 1
            || EVP_CIPHER_meth_set_flags(c, EVP_CIPH_CTR_MODE | EVP_CIPH_CUSTOM_IV | EVP_CIPH_ALWAYS_CALL_INIT
                                              | EVP_CIPH_FLAG_CUSTOM_CIPHER | EVP_CIPH_CUSTOM_COPY) != 1
            || EVP_CIPHER_meth_set_init(c, keystream_init) != 1
            || EVP_CIPHER_meth_set_do_cipher(c, keystream_cipher) != 1
            || EVP_CIPHER_meth_set_cleanup(c, keystream_cleanup) != 1
            || EVP_CIPHER_meth_set_ctrl(c, keystream_ctrl) != 1
            || EVP_CIPHER_meth_set_impl_ctx_size(c, sizeof(keystream_state)) != 1) {
            EVP_CIPHER_meth_free(c);
            continue;
        }
        ciphers[i] = c;
    }
}

/* The bulk-keystream cipher for a key of 16 + 8 * index bytes, or NULL if it could not be made. */
static const EVP_CIPHER *bulk_cipher(int index) {
    pthread_once(&ciphers_once, make_ciphers);
    return ciphers[index];
}

/* libcrypto's own static ciphers (the next definitions after this one), for when the bulk ciphers
   could not be made. */
static const EVP_CIPHER *cipher_for(int index) {
    static const char *const symbols[3] = {"EVP_aes_128_ctr", "EVP_aes_192_ctr", "EVP_aes_256_ctr"};
    const EVP_CIPHER *c = bulk_cipher(index);
    if (c != NULL) return c;
    const EVP_CIPHER *(*next)(void) = (const EVP_CIPHER *(*)(void))dlsym(RTLD_NEXT, symbols[index]);
    return next != NULL ? next() : NULL;
}

const EVP_CIPHER *EVP_aes_128_ctr(void) { return cipher_for(0); }
const EVP_CIPHER *EVP_aes_192_ctr(void) { return cipher_for(1); }
const EVP_CIPHER *EVP_aes_256_ctr(void) { return cipher_for(2); }

int postgate_tunnel_cipher_active(void) {
    const EVP_CIPHER *(*resolved)(void) = (const EVP_CIPHER *(*)(void))dlsym(RTLD_DEFAULT, "EVP_aes_128_ctr");
    return resolved != NULL && bulk_cipher(0) != NULL && resolved() == bulk_cipher(0);
}

int postgate_tunnel_cipher_apply(int bulk, const unsigned char *key, size_t key_len, const unsigned char *iv,
                                 const unsigned char *in, unsigned char *out, size_t len, size_t chunk) {
    if (key_len != 16 && key_len != 24 && key_len != 32) return 0;
    EVP_CIPHER *reference = NULL;
    const EVP_CIPHER *cipher = NULL;
    if (bulk) {
        cipher = bulk_cipher((int)(key_len - 16) / 8);
    } else {
        reference = EVP_CIPHER_fetch(NULL, openssl_name((int)key_len), NULL);
        cipher = reference;
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = cipher != NULL && ctx != NULL && EVP_CipherInit(ctx, cipher, key, iv, 1) == 1;
    if (chunk == 0) chunk = len;
    for (size_t at = 0; ok && at < len; at += chunk) {
        size_t n = len - at < chunk ? len - at : chunk;
        if (bulk) {
            ok = EVP_Cipher(ctx, out + at, in + at, (unsigned int)n) == (int)n;
        } else {
            int written = 0;
            ok = EVP_EncryptUpdate(ctx, out + at, &written, in + at, (int)n) == 1 && (size_t)written == n;
        }
    }
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(reference);
    return ok;
}

int postgate_tunnel_cipher_apply_with_copy(const unsigned char *key, size_t key_len, const unsigned char *iv,
                                           const unsigned char *in, unsigned char *out, size_t len, size_t split) {
    if ((key_len != 16 && key_len != 24 && key_len != 32) || split > len) return 0;
    const EVP_CIPHER *cipher = bulk_cipher((int)(key_len - 16) / 8);
    EVP_CIPHER_CTX *first = EVP_CIPHER_CTX_new(), *second = EVP_CIPHER_CTX_new();
    int ok = cipher != NULL && first != NULL && second != NULL && EVP_CipherInit(first, cipher, key, iv, 1) == 1
        && EVP_Cipher(first, out, in, (unsigned int)split) == (int)split
        && EVP_CIPHER_CTX_copy(second, first) == 1;
    EVP_CIPHER_CTX_free(first);
    ok = ok && EVP_Cipher(second, out + split, in + split, (unsigned int)(len - split)) == (int)(len - split);
    EVP_CIPHER_CTX_free(second);
    return ok;
}
