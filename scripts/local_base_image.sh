#!/usr/bin/env bash
# Where Docker Hub cannot be reached: build the images docker-compose.yml starts from out
# of Debian's packages, with debootstrap (root), for podman or docker:
#   localhost/trainyard-base:bookworm   Debian 12 + Python 3.11 + venv + tini (for the Dockerfile)
#   localhost/trainyard-postgres:15     PostgreSQL 15, same POSTGRES_* settings as postgres:15
#   localhost/trainyard-redis:7         Redis 7
# Then set in .env: TRAINYARD_BASE_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE (the script prints them).
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-$(command -v podman || command -v docker)}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tini \
    bookworm "$root" "$MIRROR" >/dev/null
# The host's own certificate authorities (a TLS-inspecting proxy's, say) go in too, and pip
# reads the system bundle: what this host can download, the image builds can.
CA_DIR=${LOCAL_CA_DIR:-/usr/local/share/ca-certificates}
if compgen -G "$CA_DIR/*.crt" >/dev/null; then
    cp "$CA_DIR"/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | "$ENGINE" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' - localhost/trainyard-base:bookworm
for name in postgres redis; do
    tag=$([ "$name" = postgres ] && echo 15 || echo 7)
    "$ENGINE" build -q -f "deploy/local-images/$name.Containerfile" \
        -t "localhost/trainyard-$name:$tag" deploy/local-images
done
cat <<OUT
TRAINYARD_BASE_IMAGE=localhost/trainyard-base:bookworm
POSTGRES_IMAGE=localhost/trainyard-postgres:15
REDIS_IMAGE=localhost/trainyard-redis:7
OUT
