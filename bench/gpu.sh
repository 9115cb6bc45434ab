#!/usr/bin/env bash
# The torch engine on a CUDA device, in one command (its steps time out after 9 minutes in all,
# so one 10-minute device call holds it):
#   1. installs the service's packages the machine lacks from build/gpu-wheels (made beforehand,
#      where a package index is reachable, by bench/gpu-wheels.sh) into build/gpu-site, offline;
#   2. runs the CUDA tests (skipped where there is no device) and the mask and engine tests;
#   3. runs bench/gpu_check.py: correctness checks (mask bits, same seed, batched == alone,
#      chunk invariance, adaptive rounds, CPU == GPU, on the reference MLP and the Fashion-MNIST
#      convnet) and figures (TFLOP/s of the MC pass against the mask-free chain for float32,
#      TF32 and bf16; HTTP requests/s at concurrency 64 against the GPU compute ceiling).
# Writes $OUT/gpu.json (default OUT=build/gpu-results) and $OUT/pytest.txt; exits non-zero when a
# test or a check fails. Usage, from anywhere:
#   PY=python3 OUT=/tmp/results bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-build/gpu-results}
mkdir -p "$OUT"
SITE=build/gpu-site
NEEDED="pydantic pydantic_settings fastapi starlette uvicorn sqlalchemy alembic tqdm yaml onnx"

missing() {
  "$PY" - "$@" <<'PYCODE'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PYCODE
}

export PYTHONPATH="$PWD:$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$(missing $NEEDED)" ]; then
  if ! ls build/gpu-wheels/*.whl >/dev/null 2>&1; then
    echo "bench/gpu.sh: missing $(missing $NEEDED) and no wheels in build/gpu-wheels;" \
      "run bench/gpu-wheels.sh where PyPI is reachable and bring build/gpu-wheels along" >&2
    exit 2
  fi
  echo "== installing $(missing $NEEDED) from build/gpu-wheels into $SITE"
  # Without pip, or if pip refuses: a wheel is a zip archive laid out for site-packages.
  "$PY" -m pip install --quiet --no-index --find-links build/gpu-wheels --target "$SITE" \
    build/gpu-wheels/*.whl \
    || "$PY" -c 'import glob, sys, zipfile
for w in glob.glob("build/gpu-wheels/*.whl"): zipfile.ZipFile(w).extractall(sys.argv[1])' "$SITE"
  still=$(missing $NEEDED)
  if [ -n "$still" ]; then echo "bench/gpu.sh: still missing: $still" >&2; exit 2; fi
fi

"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'

status=0
echo "== tests"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/engines/test_masks.py tests/engines/test_mc_kernel.py \
  tests/engines/test_engine.py tests/serving/test_adaptive_serving.py tests/api/test_models.py \
  2>&1 | tee "$OUT/pytest.txt" | tail -15 || status=1
echo "== checks and figures"
(cd bench && timeout 270 "$PY" gpu_check.py --out "$(cd .. && realpath "$OUT")/gpu.json") \
  || status=1
echo "== graph models (package_torch / import-onnx) on onnxruntime's CUDA provider"
timeout 120 "$PY" bench/gpu_byom.py --out "$OUT/gpu_byom.json" || status=1
echo "results in $OUT/gpu.json; exit status $status"
exit $status
