#!/bin/sh
# Run a command trusting an extra CA bundle, if one was given; used by the Dockerfile's install
# steps only. Behind a TLS-intercepting proxy pip and uv must trust the proxy's CA; pass it as a
# BuildKit build secret, never as a file or argument that would stay in the image:
#
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt -t safebench .
#
# BuildKit mounts the secret at /run/secrets/ca for the RUN steps that ask for it
# (`RUN --mount=type=secret,id=ca ...`). This script appends it to the base image's own bundle
# in a temporary file, points pip (PIP_CERT), uv (SSL_CERT_FILE) and requests at it, runs the
# command, and removes the file. Without the secret it runs the command as is.
#
#   sh scripts/setup/docker_ca.sh COMMAND [ARGS...]
#
# SAFEBENCH_CA_SECRET: where the secret is (default /run/secrets/ca); the tests set it.
set -eu

secret="${SAFEBENCH_CA_SECRET:-/run/secrets/ca}"
if [ "$#" -eq 0 ]; then
  echo "usage: sh scripts/setup/docker_ca.sh COMMAND [ARGS...]" >&2
  exit 2
fi
if [ ! -s "$secret" ]; then
  exec "$@"
fi

bundle="$(mktemp)"
trap 'rm -f "$bundle"' EXIT
# The system bundle first (Debian/Ubuntu path), so that the secret adds trust, never removes it.
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  cat /etc/ssl/certs/ca-certificates.crt >"$bundle"
fi
cat "$secret" >>"$bundle"
SSL_CERT_FILE="$bundle" PIP_CERT="$bundle" REQUESTS_CA_BUNDLE="$bundle"
export SSL_CERT_FILE PIP_CERT REQUESTS_CA_BUNDLE
echo "docker_ca.sh: trusting the extra CA bundle from the build secret" >&2
status=0
"$@" || status=$?
exit "$status"
