"""One Settings class for the API, the workers and the CLI, read from TRAINYARD_* variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Embedded defaults run everything on one machine: a SQLite file and a filesystem broker."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    home: Path = Field(default=Path(".trainyard"), description="SQLite file, broker, logs, token")
    data_dir: Path | None = Field(
        default=None, description="Root of operator-provided datasets (MNIST, CIFAR-10, ...)"
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite")
    broker_url: str | None = Field(default=None, description="Celery broker; default filesystem")

    min_free_disk_mb: int = Field(
        default=512, description="/readyz fails when less is free under home (nearly full)"
    )

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str | None = Field(default=None, description="Base URL printed to users")

    max_request_bytes: int = Field(default=256 * 1024, description="Largest accepted JSON body")
    max_params: int = Field(default=50_000_000, description="Largest model a job may build")
    max_epochs: int = Field(default=1000, description="Most epochs a job may ask for")
    max_steps: int = Field(default=10_000_000, description="Most optimizer steps a job may ask for")
    max_batch_size: int = Field(default=8192, description="Largest batch_size a job may ask for")
    max_train_memory_mb: int = Field(
        default=8192, description="Largest estimated training footprint (weights + activations)"
    )
    max_world_size: int = Field(
        default=8, ge=1, description="Most training processes one distributed job may ask for"
    )
    node_address: str | None = Field(
        default=None,
        description="Address other workers reach this one at for jobs over several nodes "
        "(default: this host's address on the route to the broker)",
    )
    rendezvous_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of a multi-node job's rendezvous store on its first node (0: any)",
    )
    rendezvous_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a job over several nodes waits for all of them before it goes "
        "back to the queue (and before it may be claimed again)",
    )
    collective_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a collective of a distributed job waits for a rank before the "
        "group fails",
    )
    # Quotas per owner (0: none). Over one, a submission gets 429 naming it.
    quota_max_queued: int = Field(default=200, ge=0, description="Queued jobs one owner may have")
    quota_max_running: int = Field(
        default=0, ge=0, description="Jobs of one owner running at once; more wait their turn"
    )
    quota_max_job_seconds: float = Field(
        default=0.0, ge=0, description="Wall-clock seconds from a job's first start"
    )
    rate_limit: str = Field(
        default="600 per minute;50 per second",
        description="Requests per token (flask-limiter syntax; empty: no limit)",
    )
    page_limit: int = Field(default=100, description="Default and maximum page size")
    check_responses: bool = Field(
        default=False,
        description="Check every JSON answer against its OpenAPI model (the tests do; "
        "a mismatch is a 500 and a log line)",
    )
    max_result_rows: int = Field(
        default=50_000, description="Most metric points or trace rows one request returns"
    )

    max_infer_samples: int = Field(
        default=256, description="Most samples one inference request holds"
    )
    max_image_pixels: int = Field(
        default=2048 * 2048, description="Largest image (width x height) an inference input may be"
    )
    max_image_side: int = Field(
        default=4096, ge=1, description="Longest side of an inference image, in pixels"
    )
    max_image_aspect: float = Field(
        default=16.0, ge=1.0, description="Longest side over shortest of an inference image"
    )
    predict_wait_seconds: float = Field(
        default=10.0, description="How long POST .../predict waits before answering 202"
    )
    predict_max_waiting: int | None = Field(
        default=None,
        ge=0,
        description="Predictions one API process waits for at once; more answer 202 at once. "
        "Default 64 with the gevent worker class (a waiting request is a greenlet), 4 with "
        "gthread (it holds one of the process's 4 threads)",
    )
    model_cache_mb: int = Field(
        default=1024, description="Memory an inference worker keeps loaded models in (LRU)"
    )
    token_cache_seconds: float = Field(
        default=30.0,
        ge=0.0,
        le=3600.0,
        description="How long an API process trusts a checked token while no token is "
        "revoked (a Redis broker only; 0: look every token up)",
    )
    predict_serving: bool = Field(
        default=True,
        description="Predictions without an Idempotency-Key go down the Redis serving line "
        "to a warm inference worker (a Redis broker only); off: each is an infer job",
    )
    predict_max_batch: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Most samples the serving line puts in one forward pass (1: no batching)",
    )
    predict_batch_wait_ms: float = Field(
        default=1.0,
        ge=0.0,
        le=1000.0,
        description="How long the serving line waits for more requests to batch with one",
    )
    predict_expire_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A request older than this when the serving line takes it is not run: "
        "it is recorded failed (its caller got a 202 long ago), so a backlog left by an "
        "outage drains at once",
    )
    predict_record_flush_ms: float = Field(
        default=200.0,
        ge=1.0,
        le=60_000.0,
        description="How often a serving worker writes the records of its predictions",
    )

    # A dead worker's job is re-sent once its lease runs out and the sweeper next looks:
    # lease + sweep period stays under 30 s. The heartbeat runs on a thread of its own, so
    # a long step never lets the lease run out.
    lease_seconds: int = Field(default=20, description="A running job's claim without heartbeat")
    heartbeat_seconds: float = Field(default=5.0, description="Progress / lease update period")
    sweep_seconds: float = Field(default=5.0, description="Period of the sweeper's passes")
    stream_poll_seconds: float = Field(
        default=0.5, gt=0, le=60, description="How often a job's live stream reads new rows"
    )
    api_worker_class: Literal["gevent", "gthread"] | None = Field(
        default=None,
        description="gunicorn's worker class for the API: gevent serves each request on a "
        "greenlet, so hundreds of live streams wait on a few processes; gthread serves it "
        "on one of 4 threads per process. Default: gevent on PostgreSQL, gthread on the "
        "embedded SQLite (whose waits for its file lock would stall a gevent process)",
    )
    stream_max_open: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Live streams open at once per API process (429 past it); default 500 "
        "with the gevent worker class, 2 with gthread (a stream holds a request thread)",
    )
    stream_max_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A live stream closes after this long and its client reconnects with "
        "Last-Event-ID (no request thread is held for ever)",
    )
    job_log_max_lines: int = Field(
        default=5000,
        ge=0,
        le=1_000_000,
        description="Log lines kept per job (worker.job_log); past it one line says how "
        "many more were left in the worker's own log",
    )
    sweep_pass_seconds: float = Field(
        default=15.0,
        gt=0,
        description="A running hyperparameter sweep whose controller has not passed for this "
        "long gets a pass from the sweeper (trial ends and API calls send one at once)",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        description="A worker told to stop exits at most this long after (compose waits 90 s)",
    )
    db_outage_seconds: float = Field(
        default=60.0,
        description="How long a worker retries database writes before the job fails",
    )
    flush_seconds: float = Field(default=1.0, description="Metric and trace batch write period")
    rollup_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A running job rolls up its series (and applies hooks.keep_raw_steps) "
        "this often, and at its end",
    )
    worker_name: str | None = Field(
        default=None,
        description="What a worker's claims are held under, before ':<pid>' (default: the "
        "hostname); set apart where workers share a hostname and PIDs (host networking)",
    )
    heartbeat_file: Path | None = Field(
        default=None,
        description="A worker touches this file every heartbeat in which it reached its Redis "
        "broker, the sweeper after every pass that reached the database (`trainyard health "
        "heartbeat` reads its age: the compose healthchecks)",
    )
    auto_gpu_wait_seconds: float = Field(
        default=10.0,
        ge=0,
        description="A CPU worker hands a `device: auto` job younger than this to the GPU "
        "workers when one of them is idle (0: never)",
    )
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token that GET /metrics asks for (unset: /metrics answers 404)",
    )
    max_attempts: int = Field(default=3, description="Claims before a lost job is failed")
    checkpoint_seconds: float = Field(
        default=120.0, description="A running job takes a resumable checkpoint at least this often"
    )
    keep_checkpoints: int = Field(
        default=2, ge=1, description="Resume states kept per job (plus best and final)"
    )
    requeue_after_seconds: int = Field(
        default=300,
        description="Without a view into the broker: a queued job untouched this long is re-sent",
    )
    resend_grace_seconds: float = Field(
        default=10.0,
        description="With Redis: a job whose message is gone this long is re-sent (once)",
    )

    def resolved_stream_max_open(self) -> int:
        """Open live streams per API process, by the worker class's default."""
        if self.stream_max_open is not None:
            return self.stream_max_open
        return 500 if self.resolved_api_worker_class() == "gevent" else 2

    def resolved_predict_max_waiting(self) -> int:
        """Predictions one API process waits for at once, by the worker class's default."""
        if self.predict_max_waiting is not None:
            return self.predict_max_waiting
        return 64 if self.resolved_api_worker_class() == "gevent" else 4

    def resolved_api_worker_class(self) -> Literal["gevent", "gthread"]:
        """The API's gunicorn worker class, by the database when not set."""
        if self.api_worker_class is not None:
            return self.api_worker_class
        return "gthread" if self.resolved_database_url().startswith("sqlite") else "gevent"

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'trainyard.db').resolve()}"

    def shown_database_url(self) -> str:
        """The database URL with its password masked: what logs and messages print."""
        return masked_url(self.resolved_database_url())

    def resolved_broker_url(self) -> str:
        """The broker URL, defaulting to kombu's filesystem transport in home."""
        return self.broker_url or "filesystem://"

    def broker_folder(self) -> Path:
        """Folder the filesystem transport exchanges message files through."""
        return (self.home / "broker").resolve()

    def base_url(self) -> str:
        """Where users reach the API."""
        return self.public_url or f"http://{self.api_host}:{self.api_port}"


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str) -> bool:
    """Whether a broker URL names Redis (what presence, serving and revocations need)."""
    return url.startswith(REDIS_SCHEMES)


def masked_url(url: str) -> str:
    """`url` with the password of its user part (if any) shown as ***."""
    from sqlalchemy.engine import make_url  # the URL grammar SQLAlchemy itself reads
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@", 1)[-1] if "@" in url else url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once from the environment."""
    return Settings()
