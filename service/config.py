"""Service settings, read from the environment with the prefix MCDROP_ (MCDROP_PORT=9000 ...).

Every default is safe for a single machine: loopback only, bounded request sizes. Add a field
with a type, a default and a docstring under it; docs/configuration.md lists them all.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.artifacts.names import valid_model_name


class Settings(BaseSettings):
    """mcdrop serving configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MCDROP_",
        extra="forbid",
        use_attribute_docstrings=True,
        protected_namespaces=(),
    )

    model_dir: str = "models"
    """Folder holding one sub-folder per model (model.json + weights.safetensors)."""

    default_model: str | None = None
    """Model used by POST /predict when the request names none (default: first name
    alphabetically)."""

    host: str = "127.0.0.1"
    """Interface to bind. Loopback by default; the container sets 0.0.0.0."""

    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port to listen on."""

    max_rows: int = Field(default=1024, ge=1)
    """Most input rows (N) one request may carry."""

    max_samples: int = Field(default=10_000, ge=2)
    """Global cap on T; a model's own max_samples applies when it is lower."""

    max_sample_rows: int = Field(default=2_000_000, ge=1)
    """Cap on T×N per request, which bounds the memory a request's samples take."""

    max_returned_values: int = Field(default=100_000, ge=1)
    """Cap on T×N×D values sent back when a request sets return_samples."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest request body accepted, in bytes (chunked bodies included); larger ones get 413."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the torch engine runs: auto picks CUDA when torch sees a device, else the CPU."""

    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    """Log level of mcdrop and uvicorn."""

    engine: Literal["torch", "onnx"] = "torch"
    """MC engine used for every model."""

    precision: Literal["float32", "tf32", "bf16"] = "float32"
    """Matrix products of the torch engine on CUDA: float32, TF32 tensor cores (float32
    storage) or bfloat16. The CPU runs float32 only; another value is refused at load."""

    max_activation_mb: float = Field(default=256.0, gt=0)
    """Memory budget of one batched pass; larger T×N is cut into chunks under it."""

    num_threads: int = Field(default=0, ge=0)
    """Intra-op threads of the torch engine, per engine worker (0: torch's default, one per
    core, with one worker; cores / engine_workers with several), and of each onnxruntime
    session (0: every core)."""

    engine_workers: int = Field(default=1, ge=1, le=64)
    """MC passes the torch engine runs at once on the CPU, each on its own thread with
    num_threads intra-op threads. 1 (default): one pass at a time on every core, the lowest
    latency per request. The number of cores, with num_threads 1: the most requests/s under
    concurrent load (no OpenMP team to synchronise, and the event loop's work overlaps a pass
    instead of stalling its team); a lone request then runs on one core."""

    engine_process: bool | Literal["auto"] = "auto"
    """Run the MC passes in child processes, one per engine worker, each with its own GIL and
    every model's engine; false: on threads of the server process; auto: in the child processes
    for each model whose lone pass takes 1 ms or more, measured at load (docs/engine-process.md)."""

    batching: bool = True
    """Batch concurrent requests for the same model into shared passes (dynamic batcher). Each
    request keeps its own T, seed, threshold and metric; a lone request does not wait."""

    batch_wait_ms: float = Field(default=2.0, ge=0)
    """How long the batcher waits for more requests before running a pass, in milliseconds."""

    batch_max_rows: int = Field(default=64, ge=1)
    """Budget of one batched pass: at most batch_max_rows x T stacked rows (T the largest in it)."""

    referrals: bool = True
    """Record every abstained row in the referral store (unless the request sends "refer":
    false) and serve the review API (/v1/referrals) and page (/review)."""

    database_url: str = "sqlite:///mcdrop-referrals.db"
    """SQLAlchemy URL of the referral store. The default is a SQLite file in the working
    directory; postgresql+psycopg://user:pass@host/db lets several replicas share one queue."""

    referral_store_inputs: bool = True
    """Keep each referred row's input; false keeps only its SHA-256 (the page then shows no
    input)."""

    referral_spool: str = "mcdrop-referrals.spool.jsonl"
    """Local append-only file holding referrals the store did not take in time; replayed into the
    store at start-up and every few seconds."""

    referral_write_timeout_ms: float = Field(default=500.0, gt=0)
    """How long a prediction waits for its referrals' database insert before spooling them."""

    referral_claim_lease_s: float = Field(default=300.0, gt=0)
    """How long a claim hides a referral from other reviewers, when the claim names no lease."""

    referral_webhook: str | None = None
    """URL that receives a POST for each new referral (best effort, off the prediction path)."""

    referral_webhook_timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of one webhook POST; failed POSTs are retried 3 times with backoff."""

    # ---- calibration watch (is live traffic still exchangeable with the calibration data?)

    calibration_watch: bool = True
    """Test each model's live uncertainty against its reference scores (stored by `mcdrop
    calibrate`) and report in GET /v1/models/{name}, /metrics and /review when it shifts."""

    watch_alpha: float = Field(default=0.01, gt=0, lt=1)
    """False-alarm probability of the watch: it turns 'shifted' when its test martingale reaches
    1/watch_alpha, which exchangeable traffic does with probability at most watch_alpha (Ville)."""

    watch_window: int = Field(default=500, ge=10)
    """Tested requests in the windowed referral rate shown beside the martingale."""

    # ---- reliability and security (admission control, deadlines, shutdown, API keys)

    max_inflight_sample_rows: int = Field(default=4_000_000, ge=1)
    """Admission bound: most samples×rows (T×N) of all requests being computed at once; at least
    MCDROP_MAX_SAMPLE_ROWS so the largest allowed request can run."""

    max_queued_requests: int = Field(default=64, ge=0)
    """Requests that may wait for room under the admission bound; beyond it, 503 at once with
    Retry-After."""

    request_timeout_s: float = Field(default=30.0, gt=0)
    """Deadline of a prediction, queueing included; past it, 504. A request's timeout_ms may
    only lower it."""

    shutdown_grace_s: int = Field(default=10, ge=1)
    """On SIGTERM, seconds the requests in flight get to finish before the process exits."""

    max_connections: int = Field(default=1024, ge=1)
    """Backstop only: uvicorn's limit on concurrent connections (idle keep-alive ones count),
    past which it answers 503 to everything but the health probes."""

    header_read_timeout_s: float = Field(default=10.0, gt=0)
    """A request head (request line and headers) must arrive whole within this many seconds of
    its first byte, or of the connection's opening; else 408 and the connection is closed."""

    body_read_timeout_s: float = Field(default=30.0, gt=0)
    """A request body must arrive whole within this many seconds of the end of its head (a
    deadline on the whole body, so a trickled body cannot stretch it); else the connection is
    closed."""

    api_keys: SecretStr | None = None
    """Comma-separated API keys; when set (here or in api_keys_file), every route but health,
    docs and (unless metrics_need_key) /metrics needs one as X-API-Key or Authorization: Bearer."""

    api_keys_file: str | None = None
    """File with one API key per line (blank lines and lines starting with '#' ignored)."""

    metrics_need_key: bool = False
    """Also require an API key for GET /metrics (when keys are configured)."""

    @model_validator(mode="after")
    def _bound_fits_a_request(self) -> Settings:
        if self.max_inflight_sample_rows < self.max_sample_rows:
            raise ValueError(
                "MCDROP_MAX_INFLIGHT_SAMPLE_ROWS must be at least MCDROP_MAX_SAMPLE_ROWS, or "
                "the largest allowed request could never be admitted"
            )
        if self.engine_workers > 1 and self.engine != "torch":
            raise ValueError(
                "MCDROP_ENGINE_WORKERS above 1 needs MCDROP_ENGINE=torch: each onnxruntime "
                "session already runs one pass on every core"
            )
        return self

    @field_validator("default_model")
    @classmethod
    def _valid_default(cls, v: str | None) -> str | None:
        if v is not None and not valid_model_name(v):
            raise ValueError("model names are letters, digits, '.', '_' and '-' (no '..')")
        return v

    @field_validator("referral_webhook")
    @classmethod
    def _http_webhook(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return v
