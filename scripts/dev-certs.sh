#!/usr/bin/env bash
# Development TLS material for deployments/nats (hub.conf, cluster/n*.conf).
#
#   scripts/dev-certs.sh [extra-name-or-ip ...]
#
# Writes into deployments/nats/certs/ (git-ignored; never commit keys):
#   ca.pem, ca-key.pem          a local CA (kept and reused if already there)
#   server.pem, server-key.pem  server certificate signed by that CA, for
#                               localhost, 127.0.0.1, ::1 and any extra names
# The server certificate has both serverAuth and clientAuth usages because
# cluster nodes present it to each other for mutual TLS on routes.
# Bridges and services trust ca.pem (nats.RootCAs("certs/ca.pem")).
# For production use certificates from your own PKI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUTPOST_CERTS_DIR:-$root/deployments/nats/certs}"
days="${OUTPOST_CERT_DAYS:-825}"

command -v openssl >/dev/null || { echo "dev-certs: openssl not found" >&2; exit 1; }
mkdir -p "$out"
umask 077
cd "$out"

if [[ ! -f ca.pem || ! -f ca-key.pem ]]; then
	openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout ca-key.pem -out ca.pem -days "$days" \
		-subj "/O=Outpost dev/CN=Outpost dev CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	echo "dev-certs: new CA in $out/ca.pem"
else
	echo "dev-certs: reusing CA $out/ca.pem"
fi

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
	if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
		san="$san,IP:$name"
	else
		san="$san,DNS:$name"
	fi
done

ext="$(mktemp)"
trap 'rm -f "$ext" server.csr' EXIT
cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san
EOF

openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
	-keyout server-key.pem -out server.csr -subj "/O=Outpost dev/CN=localhost" 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
	-out server.pem -days "$days" -extfile "$ext" 2>/dev/null
rm -f ca.srl
chmod 600 ca-key.pem server-key.pem
chmod 644 ca.pem server.pem

openssl verify -CAfile ca.pem server.pem >/dev/null
echo "dev-certs: server certificate $out/server.pem for $san"
