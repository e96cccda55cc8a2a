"""One settings object for the whole project.

Read from the environment (prefix ``ESTEIRA_``) and an optional ``.env`` file when asked for,
never at import. Defaults are the embedded ones: everything lives under one local data folder
(``ESTEIRA_HOME``, default ``./.esteira``), so nothing has to be started by hand.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESTEIRA_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".esteira"), description="Local data folder for the embedded default.")
    database_url: str | None = Field(
        default=None, description="Registry database URL; default sqlite under `home`. postgresql+psycopg://..."
    )
    artifact_root: str | None = Field(
        default=None, description="Artifact store root: a folder or any fsspec URI (s3://bucket/prefix)."
    )
    feature_repo: Path = Field(
        default=PROJECT_ROOT / "feature_repo", description="Feast feature repository (feature definitions)."
    )
    feast_online_store: str = Field(
        default="sqlite", description="'sqlite' (embedded) or a redis connection string host:port[,db=N]."
    )
    feast_project: str = Field(
        default="esteira", description="Feast project name; also namespaces online-store keys (Redis)."
    )
    feast_registry: str | None = Field(
        default=None,
        description="Feast registry: default a file under `home`; postgresql+psycopg://... for the SQL registry.",
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster address (ray://host:10001 or host:6379); None starts local Ray."
    )
    stack_ray_port: int = Field(
        default=6390, description="GCS port of the Ray head `esteira up` starts (Ray's default 6379 is Redis's)."
    )
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_predict_token: SecretStr | None = Field(
        default=None, description="Bearer token for predictions and feedback; None leaves them open."
    )
    gateway_admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for admin routes and /metrics; None leaves them open."
    )
    gateway_poll_interval_s: float = Field(
        default=0.5, description="How often the gateway checks the registry for alias moves."
    )
    prefect_host: str = Field(
        default="127.0.0.1", description="Bind address of the local Prefect server started by `esteira up`."
    )
    prefect_port: int = Field(
        default=4242, description="Local Prefect server port (not 4200: a user's own server stays alone)."
    )
    prefect_database_url: str | None = Field(
        default=None,
        description="Prefect server database; default SQLite under `home`/prefect; postgresql+asyncpg://...",
    )
    prefect_worker_limit: int = Field(
        default=2, description="Most flow runs the local worker runs at once (training uses Ray's CPUs)."
    )
    inference_log_uri: str | None = Field(
        default=None, description="Inference log root: a folder or fsspec URI; default `home`/inference."
    )

    @property
    def resolved_inference_log_uri(self) -> str:
        return self.inference_log_uri or str(self.home / "inference")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str(self.home / "artifacts")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use. Tests call ``get_settings.cache_clear()``."""
    return Settings()
