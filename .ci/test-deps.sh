#!/usr/bin/env bash
# Optional system packages for the referral tests, from Debian's registry: chromium (the review
# page's and /docs' browser tests), PostgreSQL (the store's PostgreSQL run), and podman, runc
# and debootstrap (the container check). Best effort: without root,
# apt-get or network the tests that need them skip. Installing PostgreSQL creates no cluster
# (create_main_cluster = false), so nothing is left running; .ci/postgres.sh starts a throwaway
# server and stops it.
set -uo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# deploy/check-image.sh: build and run the container image without a registry.
# Installs skip recommends, so name podman's network stack (netavark, iptables) too.
command -v podman >/dev/null || need+=(podman netavark iptables)
for tool in runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "test-deps: not root or no apt-get; tests needing ${need[*]} will skip" >&2
    exit 0
fi
if [[ " ${need[*]} " == *" postgresql "* ]]; then
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/mcdrop-ci.conf
fi
export DEBIAN_FRONTEND=noninteractive
timeout 900 apt-get update -qq >/dev/null \
    && timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "test-deps: could not install ${need[*]}; tests needing them will skip" >&2
exit 0
