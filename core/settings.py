"""One settings object for every part of esteira.

Read from the environment (prefix ``ESTEIRA_``) and an optional ``.env`` file when asked for,
never at import. Defaults are the embedded ones: everything a run writes lives under one local
data folder (``ESTEIRA_HOME``), so nothing has to be started by hand. That folder is
``<project>/.esteira`` when a project is known (``ESTEIRA_PROJECT``, or the current folder when it
holds a ``feature_store.yaml``), else ``./.esteira``: two projects on one machine never share a
registry or a Prefect server by accident.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.project import find_project_root

ESTEIRA_ROOT = Path(__file__).resolve().parent.parent
"""Where esteira's own source lives (``deployments.yaml``, ``examples/``); not a user's project."""
FEEDBACK_HORIZON_S = 7 * 24 * 3600.0
"""Default of ``feedback_horizon_s``: labels are accepted up to a week after the answer they label."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESTEIRA_", env_file=".env", extra="ignore")

    project: Path | None = Field(
        default=None, description="The project folder (feature_store.yaml, feature definitions, specs/); default: "
        "the current folder when it holds a feature_store.yaml.")
    home: Path = Field(default=None, validate_default=False,  # type: ignore[assignment]  # filled in below
                       description="Local data folder; default <project>/.esteira, else ./.esteira.")
    database_url: str | None = Field(
        default=None, description="Registry database URL; default sqlite under `home`. postgresql+psycopg://..."
    )
    artifact_root: str | None = Field(
        default=None, description="Artifact store root: a folder or any fsspec URI (s3://bucket/prefix)."
    )
    feast_online_store: str | None = Field(
        default=None, description="Override the project's online store: 'sqlite' (under `home`) or a Redis URL "
        "(redis://host:6379/0, or Feast's host:port,db=N form). Default: what feature_store.yaml says.")
    feast_project: str | None = Field(
        default=None, description="Override the Feast project name (it namespaces online-store keys in Redis).")
    feast_registry: str | None = Field(
        default=None, description="Override the project's Feast registry: a file path, or postgresql+psycopg://... "
        "for Feast's SQL registry. Default: what feature_store.yaml says.")
    ray_ship_project: str = Field(
        default="auto", pattern="^(auto|always|never)$",
        description="Upload the project folder to Ray as the replicas' working directory: auto (only for a remote "
        "cluster), always, never (the cluster has the project at the same path).")
    ray_address: str | None = Field(
        default=None, description="Ray cluster address (ray://host:10001 or host:6379); None starts local Ray."
    )
    stack_ray_port: int = Field(
        default=6390, description="GCS port of the Ray head `esteira up` starts (Ray's default 6379 is Redis's)."
    )
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_predict_token: SecretStr | None = Field(
        default=None, description="Bearer token for predictions (and for feedback when neither a feedback nor an "
        "admin token is set); None leaves them open."
    )
    gateway_admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for admin routes and /metrics (and feedback, see "
        "gateway_feedback_token); None leaves them open."
    )
    gateway_feedback_token: SecretStr | None = Field(
        default=None, description="Bearer token for sending labels (feedback decides retraining); default: the admin "
        "token. The admin token is accepted too; the predict token only when neither is set."
    )
    feedback_horizon_s: float = Field(
        default=FEEDBACK_HORIZON_S, gt=0, description="Labels are accepted up to this long after the answer they "
        "label; the monitor reads feedback files up to this long after a window's end."
    )
    gateway_poll_interval_s: float = Field(
        default=0.5, description="How often the gateway checks the registry for alias moves."
    )
    gateway_heartbeat_s: float = Field(
        default=15.0, gt=0, description="How often each gateway replica refreshes its row in the registry "
        "(what it serves and refuses; it also writes at once after a hot swap). A replica not seen for 3 "
        "heartbeats is gone."
    )
    gateway_insecure: bool = Field(
        default=False, description="Let the gateway listen off loopback without its predict and admin tokens (it "
        "warns); without this it refuses to start there (gateway.exposure).")
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
    console_host: str = Field(default="127.0.0.1", description="Bind address of the web console (`esteira console`, "
                              "`esteira up`); off loopback it needs the admin token (gateway_admin_token).")
    console_port: int = Field(default=4280, description="Web console port.")
    console_url: str | None = Field(
        default=None, description="The console's address as users reach it (behind a proxy, say), for links from "
        "Prefect artifacts; default http://<console_host>:<console_port>.")
    inference_log_uri: str | None = Field(
        default=None, description="Inference log root: a folder or fsspec URI; default `home`/inference."
    )
    trusted_types: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Full type names (comma-separated, or a JSON list) that model artifacts "
        "may hold besides those esteira's own training produces, e.g. mypkg.models.MyEstimator. Exact names only: "
        "a prefix such as 'numpy.' is refused.")
    webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Where registry events are POSTed as signed JSON webhooks: "
        "http(s) URLs, comma-separated or a JSON list. Empty: no webhooks (Prefect events still go out to a "
        "configured Prefect API).")
    webhook_secret: SecretStr | None = Field(
        default=None, description="Key of the webhooks' X-Esteira-Signature-256 header (HMAC-SHA256 of the "
        "body). None sends them unsigned, with a warning.")
    webhook_max_attempts: int = Field(
        default=5, ge=1, description="Tries per webhook delivery before it is recorded as failed.")
    webhook_backoff_s: float = Field(
        default=0.5, ge=0, description="Wait after a webhook's first failed try; doubled after each further "
        "one (with jitter, at most 60 s).")
    webhook_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout of one webhook request, in seconds.")

    @field_validator("trusted_types", "webhook_urls", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        """``a.B,c.D`` or ``["a.B", "c.D"]`` from the environment; a list as it is from Python."""
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [n.strip() for n in text.split(",") if n.strip()]
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        """Only http(s) URLs: a typo (``htps://``, a bare host) is refused when the settings are read, not
        found later as every delivery failing."""
        return [check_webhook_url(url) for url in value]

    @field_validator("webhook_secret")
    @classmethod
    def _secret_has_a_value(cls, value: SecretStr | None) -> SecretStr | None:
        """A secret that is set must hold something: an empty one would sign with an empty key."""
        if value is None:
            return None
        if not value.get_secret_value().strip():
            raise ValueError("ESTEIRA_WEBHOOK_SECRET is set but empty: give it a value, or unset it to send "
                             "webhooks unsigned")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("gateway_predict_token", "gateway_admin_token", "gateway_feedback_token")
    @classmethod
    def _token_has_a_value(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """A token that is set must hold something: ``ESTEIRA_GATEWAY_PREDICT_TOKEN=""`` would otherwise read as "no
        token" and leave the routes open while the operator believes them closed. Surrounding whitespace (a trailing
        newline from ``$(cat token-file)``) is dropped: the gateway strips what clients send the same way."""
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError(f"ESTEIRA_{str(info.field_name).upper()} is set but empty: give it a value, or unset it "
                             "to leave those routes open (only allowed on 127.0.0.1 unless ESTEIRA_GATEWAY_INSECURE=1)")
        return SecretStr(token)

    @property
    def resolved_inference_log_uri(self) -> str:
        return self.inference_log_uri or str(self.home / "inference")

    @model_validator(mode="after")
    def _locations(self) -> Settings:
        """Absolute paths, so that a flow run, a Ray worker and the CLI agree whatever their working folder."""
        project = self.project.expanduser().resolve() if self.project is not None else find_project_root(Path.cwd())
        object.__setattr__(self, "project", project)
        home = self.home if self.home is not None else (project or Path.cwd()) / ".esteira"
        object.__setattr__(self, "home", Path(home).expanduser().resolve())
        return self

    @property
    def resolved_console_url(self) -> str:
        if self.console_url:
            return self.console_url.rstrip("/")
        from core.network import client_host

        host = client_host(self.console_host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.console_port}"

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


_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s'\"]*:)[^\s'\"]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|pwd)=)[^&#\s'\"]*", re.IGNORECASE)


def redact_urls(text: str) -> str:
    """``text`` (a URL, or a message quoting some) with the password of every URL in it shown as ``***``, in
    ``user:password@`` or in a ``?password=`` parameter: what may be printed, logged or stored of a database URL.

    A pattern rather than SQLAlchemy's ``make_url``: it also covers the text around a URL (libraries quote the
    URL they were given in their errors: "Could not parse SQLAlchemy URL from string ..."), URLs SQLAlchemy
    cannot parse, and an unencoded ``@`` in the password (masked up to the URL's last ``@``, where ``make_url``
    shows the rest as the host)."""
    return _QUERY_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>***@", text))


def check_webhook_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host, else ValueError saying which one is wrong."""
    parts = urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = url_origin(url) if parts.hostname else url.strip()[:60]
        raise ValueError(f"webhook URL {shown!r} is not an http(s) URL with a host "
                         "(e.g. https://hooks.example.org/esteira)")
    return url.strip()


def url_origin(url: str) -> str:
    """What may be logged of a webhook URL: its scheme, host and port (a path or query may hold a token)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    hidden = "/..." if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{hidden}"
