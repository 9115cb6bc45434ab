#!/usr/bin/env bash
# Build the container image from a local base, run it, wait for /health/ready, predict, stop.
#
# No image registry is needed: the base is a Debian root file system made with debootstrap
# (python3 and pip from Debian's packages) and imported into podman once. Run as root.
#
#   deploy/check-image.sh            # skips (exit 0, with a message) when podman is missing
#   deploy/check-image.sh --require  # fails instead of skipping
#
# Settings (environment):
#   MCDROP_CHECK_BASE     base image name           (localhost/mcdrop-base:bookworm)
#   MCDROP_CHECK_MIRROR   Debian mirror for the base (http://deb.debian.org/debian)
#   MCDROP_CHECK_WHEELS   folder of wheels pip may use while building, e.g. a CPU torch wheel
#                         (/opt/wheels when it exists)
#   MCDROP_CHECK_TORCH_INDEX  the index torch comes from (the Dockerfile's default, torch's CPU
#                         index; PyPI when the wheels folder supplies the CPU torch wheel)
#   MCDROP_CHECK_TIMEOUT  seconds to wait for /health/ready (180)
set -euo pipefail
cd "$(dirname "$0")/.."

require=0
[[ "${1:-}" == "--require" ]] && require=1

skip() {
    if ((require)); then
        echo "check-image: cannot run: $*" >&2
        exit 1
    fi
    echo "check-image: skipped: $*" >&2
    exit 0
}

command -v podman >/dev/null || skip "podman is not installed (apt-get install podman)"
[[ $(id -u) == 0 ]] || skip "needs root (rootful podman; rootless needs subordinate ids)"
command -v curl >/dev/null || skip "curl is not installed"

base=${MCDROP_CHECK_BASE:-localhost/mcdrop-base:bookworm}
mirror=${MCDROP_CHECK_MIRROR:-http://deb.debian.org/debian}
wheels=${MCDROP_CHECK_WHEELS:-/opt/wheels}
timeout=${MCDROP_CHECK_TIMEOUT:-180}
image=localhost/mcdrop:check
name=mcdrop-check-$$
# Two things stop podman's defaults on some hosts (virtual machines, sandboxes):
# - it raises the open-file and process limits to its own maxima, and setrlimit is refused:
#   ask for limits at or below the host's instead;
# - crun refuses hybrid cgroups (v1 controllers with a cgroup2 mount beside them), even with
#   --cgroups=disabled; runc, where installed, handles them.
nofile=$(ulimit -Hn)
[[ "$nofile" == unlimited ]] && nofile=65536
run_opts=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
podman_cmd=(podman)
command -v runc >/dev/null && podman_cmd+=(--runtime runc)

if ! podman image exists "$base"; then
    command -v debootstrap >/dev/null || skip "no base image $base and no debootstrap to make one"
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    echo "check-image: making the base $base with debootstrap (once)" >&2
    debootstrap --variant=minbase \
        --include=python3,python3-pip,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$mirror" >/dev/null
    # This base plays the part of python:3.11-slim, where pip installs into the system Python.
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --quiet - "$base" >/dev/null
    echo "check-image: base made" >&2
    rm -rf "$rootfs"
    trap - EXIT
fi

# docker format: the OCI format has no HEALTHCHECK.
build_opts=(--format docker --build-arg "BASE_IMAGE=$base" "${run_opts[@]}")
if [[ -d "$wheels" ]]; then
    # The wheels folder holds the CPU torch wheel, so torch's own index (the Dockerfile's
    # default, which may be unreachable here) is not needed: the extra index is PyPI's.
    build_opts+=(--volume "$wheels:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels
        --build-arg "TORCH_INDEX_URL=${MCDROP_CHECK_TORCH_INDEX:-https://pypi.org/simple}")
elif [[ -n "${MCDROP_CHECK_TORCH_INDEX:-}" ]]; then
    build_opts+=(--build-arg "TORCH_INDEX_URL=$MCDROP_CHECK_TORCH_INDEX")
fi
# Behind a TLS-inspecting proxy pip needs the host's CA bundle.
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [[ -f "$ca" ]]; then
    build_opts+=(--volume "$ca:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
echo "check-image: building $image" >&2
started=$SECONDS
"${podman_cmd[@]}" build --quiet "${build_opts[@]}" -t "$image" . >/dev/null
echo "check-image: built in $((SECONDS - started))s" >&2

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Without systemd podman logs errors about its healthcheck timers; they go to a file, shown
# only when something fails. The HEALTHCHECK is run once by hand below instead.
podman_log=$(mktemp)
"${podman_cmd[@]}" run -d --rm --name "$name" "${run_opts[@]}" -p "127.0.0.1:$port:8000" \
    "$image" >/dev/null 2>>"$podman_log" || { cat "$podman_log" >&2; exit 1; }
trap 'podman stop --time 10 "$name" >/dev/null 2>&1 || true; rm -f "$podman_log"' EXIT

base_url="http://127.0.0.1:$port"
started=$SECONDS
until curl -fsS "$base_url/health/ready" >/dev/null 2>&1; do
    if ((SECONDS - started > timeout)) || ! podman container exists "$name"; then
        echo "check-image: not ready after ${timeout}s; its log:" >&2
        podman logs "$name" 2>&1 | tail -30 >&2 || true
        exit 1
    fi
    sleep 1
done
echo "check-image: ready after $((SECONDS - started))s" >&2
"${podman_cmd[@]}" healthcheck run "$name" >/dev/null \
    || { echo "check-image: the image's HEALTHCHECK failed" >&2; exit 1; }
echo "check-image: HEALTHCHECK passed" >&2

answer=$(curl -fsS "$base_url/v1/models/diabetes/predict" -H 'content-type: application/json' \
    -d '{"inputs": [[0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]], "seed": 7}')
python3 -c '
import json, sys
body = json.loads(sys.argv[1])
row = body["predictions"][0]
assert body["model"] == "diabetes" and body["seed"] == 7, body
assert len(row["mean"]) == 1 and row["variance"][0] > 0, row
print("check-image: predict ok: mean %.3f, std %.3f" % (row["mean"][0], row["std"][0]))
' "$answer"
# /docs with its scripts from the installed package (package data, not the source tree).
for path in /docs /docs/assets/swagger-ui-bundle.js /redoc /docs/assets/redoc.standalone.js; do
    curl -fsS "$base_url$path" -o /dev/null || { echo "check-image: GET $path failed" >&2; exit 1; }
done
echo "check-image: /docs and /redoc served with their scripts" >&2
"${podman_cmd[@]}" stop --time 10 "$name" >/dev/null 2>>"$podman_log"
trap - EXIT
rm -f "$podman_log"
echo "check-image: stopped; image $image passed" >&2
