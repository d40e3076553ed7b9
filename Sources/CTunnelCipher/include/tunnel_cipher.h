#ifndef POSTGATE_TUNNEL_CIPHER_H
#define POSTGATE_TUNNEL_CIPHER_H
#include <stddef.h>

/* AES-CTR for the SSH tunnel with the keystream made in bulk.
 *
 * libssh2 1.10 runs its cipher one 16-byte block per EVP_Cipher call. For AES-CTR that means one
 * unpipelined AES block plus OpenSSL's provider dispatch for every 16 bytes received. This file
 * defines EVP_aes_{128,192,256}_ctr, which libssh2 resolves to ahead of libcrypto's (the
 * executable comes first in the dynamic linker's lookup order). They return a cipher whose
 * contexts ask OpenSSL's own AES-CTR for 4 KiB of keystream at a time and XOR each call's bytes
 * with it. The output is AES-CTR exactly: CTR keystream depends only on key, IV and position. */

/* 1 when libssh2's EVP_aes_128_ctr resolves to the bulk-keystream cipher, else 0. */
int postgate_tunnel_cipher_active(void);

/* Encrypts `len` bytes of `in` into `out` with AES-CTR (key of 16, 24 or 32 bytes, 16-byte IV),
 * through the bulk-keystream cipher when `bulk` is 1, else through OpenSSL's AES-CTR in one call,
 * in calls of `chunk` bytes. For tests. Returns 1 on success. */
int postgate_tunnel_cipher_apply(int bulk, const unsigned char *key, size_t key_len, const unsigned char *iv,
                                 const unsigned char *in, unsigned char *out, size_t len, size_t chunk);

/* Encrypts `len` bytes with the bulk-keystream cipher, copying the context with EVP_CIPHER_CTX_copy
 * after `split` bytes and finishing on the copy after freeing the original. For tests. Returns 1 on
 * success. */
int postgate_tunnel_cipher_apply_with_copy(const unsigned char *key, size_t key_len, const unsigned char *iv,
                                           const unsigned char *in, unsigned char *out, size_t len, size_t split);
#endif
