"""esteira's model registry and ML metadata store (SQLModel; SQLite by default, PostgreSQL in production)."""

from registry.api import ModelRef, Registry
from registry.errors import (
    FlavorNotFound,
    IntegrityError,
    InvalidName,
    NotFound,
    RegistryError,
    RegistryUnavailable,
    UntrustedArtifact,
)
from registry.models import (
    AuditEvent,
    GatewayReplica,
    ModelAlias,
    ModelVersion,
    MonitoringReport,
    RegisteredModel,
    TrainingRun,
    Trial,
)

__all__ = [
    "AuditEvent", "FlavorNotFound", "GatewayReplica", "IntegrityError", "InvalidName", "ModelAlias",
    "ModelRef", "ModelVersion", "MonitoringReport", "NotFound", "RegisteredModel", "Registry", "RegistryError",
    "RegistryUnavailable", "TrainingRun", "Trial", "UntrustedArtifact",
]
