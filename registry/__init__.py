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
from registry.events import EVENT_NAMES, PublicEvent
from registry.models import (
    AuditEvent,
    GatewayReplica,
    ModelAlias,
    ModelVersion,
    MonitoringReport,
    RegisteredModel,
    TrainingRun,
    Trial,
    WebhookDelivery,
)
from registry.webhooks import WebhookConfig, sign, verify_signature

__all__ = [
    "EVENT_NAMES", "AuditEvent", "FlavorNotFound", "GatewayReplica", "IntegrityError", "InvalidName", "ModelAlias",
    "ModelRef", "ModelVersion", "MonitoringReport", "NotFound", "PublicEvent", "RegisteredModel", "Registry",
    "RegistryError", "RegistryUnavailable", "TrainingRun", "Trial", "UntrustedArtifact", "WebhookConfig",
    "WebhookDelivery", "sign", "verify_signature",
]
