"""One Settings class for the API, the workers and the CLI, read from TRAINYARD_* variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
    page_limit: int = Field(default=100, description="Default and maximum page size")
    max_result_rows: int = Field(
        default=50_000, description="Most metric points or trace rows one request returns"
    )

    max_infer_samples: int = Field(
        default=256, description="Most samples one inference request holds"
    )
    max_image_pixels: int = Field(
        default=2048 * 2048, description="Largest image (width x height) an inference input may be"
    )
    predict_wait_seconds: float = Field(
        default=10.0, description="How long POST .../predict waits before answering 202"
    )
    predict_max_waiting: int = Field(
        default=4,
        description="Predictions one API process waits for at once; more answer 202 at once",
    )
    model_cache_mb: int = Field(
        default=1024, description="Memory an inference worker keeps loaded models in (LRU)"
    )

    lease_seconds: int = Field(default=120, description="A running job's claim without heartbeat")
    heartbeat_seconds: float = Field(default=2.0, description="Progress / lease update period")
    flush_seconds: float = Field(default=1.0, description="Metric and trace batch write period")
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

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'trainyard.db').resolve()}"

    def resolved_broker_url(self) -> str:
        """The broker URL, defaulting to kombu's filesystem transport in home."""
        return self.broker_url or "filesystem://"

    def broker_folder(self) -> Path:
        """Folder the filesystem transport exchanges message files through."""
        return (self.home / "broker").resolve()

    def base_url(self) -> str:
        """Where users reach the API."""
        return self.public_url or f"http://{self.api_host}:{self.api_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once from the environment."""
    return Settings()
