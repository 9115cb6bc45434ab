# mcdrop: MC dropout uncertainty serving. A CPU image by default:
#   docker build -t mcdrop .
# A CUDA image: the same Python base, torch's CUDA build from PyPI (it carries the CUDA runtime
# libraries as wheels; the host needs the NVIDIA driver and container toolkit), see docs/gpu.md:
#   docker build --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t mcdrop:gpu .
# BASE_IMAGE may name any image with python3.11+ and pip on it.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
# Where torch==2.13.0 (constraints.txt) comes from: the CPU wheel index by default (on PyPI,
# Linux x86_64 torch is the multi-GB CUDA build).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OMP_WAIT_POLICY=PASSIVE \
    MCDROP_HOST=0.0.0.0 \
    MCDROP_PORT=8000 \
    MCDROP_MODEL_DIR=/app/models \
    MCDROP_DATABASE_URL=sqlite:////var/lib/mcdrop/referrals.db \
    MCDROP_REFERRAL_SPOOL=/var/lib/mcdrop/referrals.spool.jsonl

WORKDIR /app

# Optional, for builds without the public index or behind a proxy: a folder of wheels (e.g. a
# CPU torch wheel) and a CA bundle, each mounted into the build (see deploy/check-image.sh).
ARG PIP_FIND_LINKS
ARG PIP_CERT

# Same install as the README: the package with torch pinned through constraints.txt.
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" -c constraints.txt . \
    && useradd --create-home --uid 10001 mcdrop \
    && mkdir -p /var/lib/mcdrop && chown 10001 /var/lib/mcdrop

# The referral queue (SQLite file and spool) lives here; mount a volume to keep it.
VOLUME ["/var/lib/mcdrop"]

COPY --chown=root:root models ./models

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status == 200 else 1)"]
CMD ["mcdrop", "serve"]
