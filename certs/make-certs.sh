#!/usr/bin/env bash
# Generates the lab's throw-away TLS material with openssl, at run time. Nothing here is committed.
#   certs/make-certs.sh OUTDIR CLIENT_KEY_PASSWORD
# OUTDIR receives:
#   ca.crt / ca.key            the lab CA
#   server.crt / server.key    server certificate for db.postgate.test, 127.0.0.1 and $POSTGATE_LAB_EXTRA_SAN
#                              (not "localhost", so verify-full name mismatches can be tested)
#   client.crt / client.key    client certificate for role postgate_cert; key encrypted (PKCS#8, AES-256)
#   other-ca.crt               an unrelated CA, for "wrong CA" tests
# Private keys are created 0600 under a 0700 directory.
set -euo pipefail
out=${1:?usage: make-certs.sh OUTDIR CLIENT_KEY_PASSWORD}
client_pw=${2:?usage: make-certs.sh OUTDIR CLIENT_KEY_PASSWORD}
server_name=${POSTGATE_LAB_DB_HOSTNAME:-db.postgate.test}
# Extra subjectAltName entries, e.g. "IP:10.213.0.2".
extra_san=${POSTGATE_LAB_EXTRA_SAN:-}
umask 077
mkdir -p "$out"
chmod 700 "$out"
cd "$out"

ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ec ca.key
openssl req -x509 -new -key ca.key -sha256 -days 90 -subj "/CN=Postgate Lab CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt

ec other-ca.key
openssl req -x509 -new -key other-ca.key -sha256 -days 90 -subj "/CN=Unrelated CA" \
  -addext "basicConstraints=critical,CA:TRUE" -out other-ca.crt
rm -f other-ca.key

ec server.key
openssl req -new -key server.key -subj "/CN=${server_name}" -out server.csr
printf 'subjectAltName=DNS:%s,IP:127.0.0.1%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$server_name" "${extra_san:+,$extra_san}" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 -sha256 -extfile server.ext -out server.crt 2>/dev/null

ec client.plain.key
openssl req -new -key client.plain.key -subj "/CN=postgate_cert" -out client.csr
printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 -sha256 -extfile client.ext -out client.crt 2>/dev/null
openssl pkcs8 -topk8 -v2 aes-256-cbc -in client.plain.key -passout "pass:${client_pw}" -out client.key
rm -f client.plain.key *.csr *.ext *.srl
chmod 644 ca.crt other-ca.crt server.crt client.crt
