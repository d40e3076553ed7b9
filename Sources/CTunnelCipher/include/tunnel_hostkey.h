#ifndef POSTGATE_TUNNEL_HOSTKEY_H
#define POSTGATE_TUNNEL_HOSTKEY_H

/* RSA host keys with SHA-2 signatures (RFC 8332) for libssh2 1.10.
 *
 * libssh2 1.10 knows the RSA host key only as `ssh-rsa` (SHA-1 signatures), which OpenSSH 8.8 and
 * later no longer offer, so a bastion's RSA key could never be negotiated. This adds host-key methods
 * `rsa-sha2-512` and `rsa-sha2-256` to libssh2's method table, in two of its slots that cannot be
 * negotiated anyway (the ECDSA-P384/P521 certificate entries, which have no signature check). libssh2
 * then offers them, checks the exchange-hash signature through them and reports the key as RSA.
 *
 * Returns 1 when the methods were added (or already were), 2 when libssh2 has its own (1.11 and
 * later), 0 when its table is not the expected one (nothing changed). Call before any session. */
int postgate_hostkey_install_rsa_sha2(void);

#endif
