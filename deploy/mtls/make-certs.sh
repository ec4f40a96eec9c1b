#!/bin/sh
# Makes the mutual-TLS deployment's certificates in DIR, at every start (docker-compose.mtls.yml
# runs it before anything else): a CA, and for etcd, greeter1, greeter2 and a caller (the
# host's grpcurl or `micro`) an EC P-256 key and a certificate naming the service, localhost and
# 127.0.0.1, good for server and client use, valid 30 days. The CA's key is deleted once they
# are signed: nothing else can be signed with it, and no key is ever committed.
#
#   sh deploy/mtls/make-certs.sh DIR
set -eu
dir=${1:?usage: make-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=micro-rs compose CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
for name in etcd greeter1 greeter2 caller; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
  printf '%s\n' \
    "subjectAltName=DNS:$name,DNS:localhost,IP:127.0.0.1" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "keyUsage=critical,digitalSignature" \
    "basicConstraints=critical,CA:FALSE" >"$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 30 -extfile "$work/$name.ext" -out "$work/$name.pem" 2>/dev/null
done
# Keys first, certificates last, each by rename: a running service that re-reads its files
# (every 5 s) never sees a half-written one.
for name in etcd greeter1 greeter2 caller; do
  cp "$work/$name.key" "$name.key.tmp" && chmod 600 "$name.key.tmp" && mv "$name.key.tmp" "$name.key"
done
for name in ca etcd greeter1 greeter2 caller; do
  cp "$work/$name.pem" "$name.pem.tmp" && mv "$name.pem.tmp" "$name.pem"
done
echo "make-certs: CA and certificates for etcd, greeter1, greeter2, caller in $dir"
