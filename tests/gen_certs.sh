#!/usr/bin/env bash
# gen_certs.sh DIR
#
# Create a throw-away test PKI in DIR for the mock Cerebras upstream:
#   DIR/ca.crt, DIR/ca.key          self-signed test CA (CA:TRUE, keyCertSign)
#   DIR/server.crt, DIR/server.key  server cert signed by that CA, valid for
#                                   DNS:localhost, IP:127.0.0.1, IP:::1
# Keys are EC P-256, certificates are valid for 30 days. Existing files are
# overwritten, so the script is idempotent. Output is quiet unless an error
# occurs.
#
# Clients (libcurl/OpenSSL 3) verify the mock with CURLOPT_CAINFO=DIR/ca.crt,
# e.g.: curl --cacert DIR/ca.crt https://127.0.0.1:PORT/v1/models
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi

dir=$1
mkdir -p "$dir"

days=30
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- CA -------------------------------------------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$tmp/ca.key" 2>/dev/null

cat > "$tmp/ca.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt             = no
x509_extensions    = v3_ca

[dn]
CN = cerebras-proxy test CA

[v3_ca]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
CNF

openssl req -new -x509 -config "$tmp/ca.cnf" -key "$tmp/ca.key" \
    -sha256 -days "$days" -set_serial "0x$(openssl rand -hex 8)" \
    -out "$tmp/ca.crt" 2>/dev/null

# --- server leaf ----------------------------------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$tmp/server.key" 2>/dev/null

cat > "$tmp/server.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt             = no

[dn]
CN = localhost

[v3_server]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid, issuer
CNF

openssl req -new -config "$tmp/server.cnf" -key "$tmp/server.key" \
    -out "$tmp/server.csr" 2>/dev/null

openssl x509 -req -in "$tmp/server.csr" \
    -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" \
    -sha256 -days "$days" \
    -extfile "$tmp/server.cnf" -extensions v3_server \
    -out "$tmp/server.crt" 2>/dev/null

# Sanity check: the leaf must chain to the CA.
openssl verify -CAfile "$tmp/ca.crt" "$tmp/server.crt" >/dev/null

# Install atomically-ish into DIR (overwriting any previous set).
chmod 600 "$tmp/ca.key" "$tmp/server.key"
for f in ca.crt ca.key server.crt server.key; do
    mv -f "$tmp/$f" "$dir/$f"
done
