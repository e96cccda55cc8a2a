"""The registry's tables. SQLModel classes are both the database schema and the Python types.

Alembic migrations under ``registry/migrations`` must produce exactly this schema; a test compares them.
JSON columns hold the open-ended parts (params, metrics, signatures, drift scores) so that a new
metric or model family needs no migration.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, UniqueConstraint, false
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """A timestamp the registry wrote, with its zone: SQLite hands them back naive, and they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _json(**kwargs: Any) -> Any:
    """A JSON column; ``default_factory`` keeps one mutable default per row."""
    return Field(sa_column=Column(JSON, nullable=kwargs.pop("nullable", False)), **kwargs)


def _ts(**kwargs: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=kwargs.pop("nullable", False)), **kwargs)


class RegisteredModel(SQLModel, table=True):
    __tablename__ = "registered_model"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True, index=True)
    description: str = Field(default="", max_length=4000)
    tags: dict[str, str] = _json(default_factory=dict)
    canary_share: float | None = None
    """The share of requests (0 < share <= 1) the gateway sends to the ``canary`` alias's version, by a hash
    of the entity key or request id; set by :meth:`registry.Registry.start_canary` and changed at run time by
    ``set_canary_share`` (both audited). Kept when a canary ends, as the next canary's default."""
    created_at: datetime = _ts(default_factory=utcnow)


class ModelVersion(SQLModel, table=True):
    """One trained model: its artifact and everything needed to know where it came from."""

    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"),)

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="registered_model.id", index=True)
    model_name: str = Field(max_length=128, index=True)
    version: int
    status: str = Field(default="ready", max_length=32)
    servable: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    """Set when the version is first promoted to any alias, and kept: the gateway's pinned-version routes
    serve only servable versions, so a version merely registered is never served by number."""
    flavor: str = Field(max_length=64)
    artifact_uri: str = Field(max_length=2048)
    artifact_sha256: str = Field(max_length=64)
    artifact_size: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    signature: dict[str, Any] = _json(default_factory=dict)
    params: dict[str, Any] = _json(default_factory=dict)
    metrics: dict[str, float] = _json(default_factory=dict)
    tags: dict[str, str] = _json(default_factory=dict)
    feature_service: str | None = Field(default=None, max_length=256)
    training_set_uri: str | None = Field(default=None, max_length=2048)
    training_set_sha256: str | None = Field(default=None, max_length=64)
    reference_profile_uri: str | None = Field(default=None, max_length=2048)
    reference_profile_sha256: str | None = Field(default=None, max_length=64)
    code_version: str | None = Field(default=None, max_length=128)
    package_versions: dict[str, str] = _json(default_factory=dict)
    flow_run_id: str | None = Field(default=None, max_length=64)
    training_run_id: int | None = Field(default=None, foreign_key="training_run.id")
    description: str = Field(default="", max_length=4000)
    calibration: dict[str, Any] | None = _json(default=None, nullable=True)
    """How the version's predicted probabilities map to observed frequencies on its holdout (isotonic
    breakpoints as plain numbers, see :mod:`flows.calibration`): the monitor estimates performance from
    them while labels have not arrived. None for regressions and versions registered without it."""
    created_at: datetime = _ts(default_factory=utcnow)

    @property
    def ref(self) -> str:
        return f"{self.model_name}:{self.version}"


class ModelAlias(SQLModel, table=True):
    """(model, alias) -> version. The primary key makes an alias unique per model."""

    __tablename__ = "model_alias"

    model_id: int = Field(foreign_key="registered_model.id", primary_key=True)
    alias: str = Field(max_length=64, primary_key=True)
    version_id: int = Field(foreign_key="model_version.id")
    version: int
    updated_at: datetime = _ts(default_factory=utcnow)


class TrainingRun(SQLModel, table=True):
    """One search: the spec it ran, the data it saw, how it ended."""

    __tablename__ = "training_run"

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=128, index=True)
    status: str = Field(default="running", max_length=32)
    spec: dict[str, Any] = _json(default_factory=dict)
    training_set_sha256: str | None = Field(default=None, max_length=64)
    flow_run_id: str | None = Field(default=None, max_length=64)
    best_trial_id: int | None = Field(default=None)
    registered_version: int | None = Field(default=None)
    summary: dict[str, Any] = _json(default_factory=dict)
    error: str | None = Field(default=None, max_length=8000)
    started_at: datetime = _ts(default_factory=utcnow)
    finished_at: datetime | None = _ts(default=None, nullable=True)


class Trial(SQLModel, table=True):
    """One candidate configuration evaluated during a training run."""

    __tablename__ = "trial"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="training_run.id", index=True)
    family: str = Field(max_length=128)
    params: dict[str, Any] = _json(default_factory=dict)
    metrics: dict[str, float] = _json(default_factory=dict)
    duration_s: float = 0.0
    status: str = Field(default="succeeded", max_length=32)
    error: str | None = Field(default=None, max_length=8000)
    created_at: datetime = _ts(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Who did what to which model, from which version to which, and why. Append-only; ``id`` orders it."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_model_alias", "model_name", "alias"),)

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=128)
    action: str = Field(max_length=64)
    alias: str | None = Field(default=None, max_length=64)
    from_version: int | None = None
    to_version: int | None = None
    actor: str = Field(default="unknown", max_length=256)
    reason: str = Field(default="", max_length=4000)
    details: dict[str, Any] = _json(default_factory=dict)
    created_at: datetime = _ts(default_factory=utcnow)


class MonitoringReport(SQLModel, table=True):
    """One monitoring run: a window of traffic compared with the version's reference profile."""

    __tablename__ = "monitoring_report"

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=128, index=True)
    kind: str = Field(default="monitor", max_length=32, sa_column_kwargs={"server_default": "monitor"})
    """``monitor`` (a window of traffic against the reference: drift and performance) or ``canary`` (a canary
    verdict: its evidence in ``performance``, its verdict, promote / rollback / continue, in ``decision``)."""
    version: int | None = None
    window_start: datetime | None = _ts(default=None, nullable=True)
    window_end: datetime | None = _ts(default=None, nullable=True)
    n_rows: int = 0
    n_labelled: int = 0
    status: str = Field(default="ok", max_length=32)
    drift: dict[str, Any] = _json(default_factory=dict)
    drift_share: float | None = None
    performance: dict[str, Any] = _json(default_factory=dict)
    decision: str = Field(default="none", max_length=32)
    reason: str = Field(default="", max_length=4000)
    triggered_run: str | None = Field(default=None, max_length=128)
    flow_run_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts(default_factory=utcnow)


class GatewayReplica(SQLModel, table=True):
    """One gateway replica process and what it serves, refreshed by the replica like a heartbeat.

    A replica answers its admin status for itself only; this row is how a reader learns every replica's
    state. ``served`` maps ``"<model>@<alias>"`` (the serving and shadow aliases) and ``"<model>:<version>"``
    (other versions held loaded for pinned-version routes) to ``{"version", "flavor", "role"}``, ``role``
    being ``serving``, ``shadow`` or ``pinned``; ``refused`` maps ``"<model>:<version>"`` to why its load was
    refused. A row whose ``seen_at`` is older than three heartbeats belongs to a replica that is gone.
    """

    __tablename__ = "gateway_replica"

    replica_id: str = Field(primary_key=True, max_length=256)
    host: str = Field(max_length=256)
    pid: int
    project: str | None = Field(default=None, max_length=2048)
    served: dict[str, Any] = _json(default_factory=dict)
    refused: dict[str, str] = _json(default_factory=dict)
    started_at: datetime = _ts(default_factory=utcnow)
    seen_at: datetime = _ts(default_factory=utcnow)
    stopped_at: datetime | None = _ts(default=None, nullable=True)

    @property
    def models(self) -> set[str]:
        """The models this replica holds a version of (keys of ``served`` without their alias or version)."""
        return {key.partition("@")[0].partition(":")[0] for key in self.served}

    def serving_version(self, model_name: str) -> int | None:
        """The version this replica answers ``model_name``'s requests with (its serving alias), or None."""
        for key, entry in self.served.items():
            if entry.get("role") == "serving" and key.partition("@")[0] == model_name:
                return int(entry["version"])
        return None


class WebhookDelivery(SQLModel, table=True):
    """One registry event sent (or being sent) to one webhook URL: what was tried and how it ended.

    ``status`` is ``pending`` until a 2xx answer (``delivered``) or the last attempt (``failed``);
    ``attempts`` counts the tries, ``response_code`` and ``error`` describe the last one.
    """

    __tablename__ = "webhook_delivery"

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="audit_event.id", index=True)
    url: str = Field(max_length=2048)
    status: str = Field(default="pending", max_length=32)
    attempts: int = 0
    response_code: int | None = None
    error: str | None = Field(default=None, max_length=4000)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
