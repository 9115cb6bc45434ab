#!/usr/bin/env bash
# Wheels for the lent GPU machine, made here (it reaches no package registry). That machine has
# python3.12 with torch, numpy, onnxruntime, safetensors, scipy, httpx, prometheus-client,
# pytest and uvloop; the service also needs the web and storage stack below. bench/gpu.sh
# installs these wheels there with --no-index into build/gpu-site.
#   bench/gpu-wheels.sh        (from the repository root; writes build/gpu-wheels, git-ignored)
# Versions are those the test suite runs with here; pass PINS="..." to override.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
PINS=${PINS:-"pydantic==2.14.4 pydantic-settings==2.16.3 fastapi==0.165.0 starlette==1.10.0
  uvicorn==0.55.0 httptools==0.9.0 sqlalchemy==2.1.9 alembic==1.20.1 tqdm==4.70.1 pyyaml==6.0.4 onnx==1.23.2"}
DEST=build/gpu-wheels
mkdir -p "$DEST"
# shellcheck disable=SC2086  # PINS is a list of requirement words
"$PY" -m pip download --quiet --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$DEST" $PINS
# The GPU machine has its own numpy, which its torch and onnxruntime were built against.
rm -f "$DEST"/numpy-*.whl
ls "$DEST"
du -sh "$DEST"
