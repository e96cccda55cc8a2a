"""The gateway's configuration: one plain, picklable object.

Ray Serve passes deployment arguments by value to every replica (and a ``serve deploy`` config file
passes them as YAML ``args``), so the configuration is a pydantic model that round-trips through a
dict. Anything not given falls back to :mod:`core.settings` when the replica starts, not at import.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class GatewayConfig(BaseModel):
    """What one gateway serves and how. Every field has a safe embedded default."""

    project: str | None = Field(default=None, description="The project folder whose feature_store.yaml describes "
                                "the feature stores (entity-key lookups); default: the settings' one.")
    database_url: str | None = Field(default=None, description="Registry URL; default: the settings' one.")
    artifact_root: str | None = Field(default=None, description="Artifact store root; default: the settings' one.")
    models: list[str] | None = Field(
        default=None, description="Models to serve; None serves every registered model that has the serving alias."
    )
    serving_alias: str = Field(default="production", description="The alias whose version answers requests.")
    shadow_alias: str | None = Field(
        default="challenger", description="An alias scored in shadow on the same requests; None turns shadow off."
    )
    poll_interval_s: float | None = Field(default=None, gt=0, description="Registry poll period (default: settings).")
    pinned_cache_size: int = Field(default=4, ge=1, description="Versions kept loaded for pinned-version routes.")
    refused_retry_s: float = Field(default=60.0, gt=0, description="Wait before retrying a refused version.")
    predict_token: str | None = Field(default=None, description="Bearer token for predictions (default: settings).")
    admin_token: str | None = Field(default=None, description="Bearer token for admin and /metrics (default: settings).")
    inference_log_uri: str | None = Field(default=None, description="Inference log root (default: settings).")
    log_inference: bool = True
    log_buffer_size: int = Field(default=100_000, ge=1, description="Requests held before logging drops.")
    log_flush_interval_s: float = Field(default=5.0, gt=0, description="Micro-batch period of the log writer.")
    profile_window_s: int = Field(default=3600, ge=1, description="Width of one whylogs profile window.")
    profile_in_subprocess: bool = Field(
        default=True, description="Compute the whylogs window profiles in a child process of the replica (from the "
        "parquet batch just written), so profiling never holds the replica's GIL; False profiles in the writer thread.")
    inline_predict_max_rows: int = Field(
        default=32, ge=0, description="Requests up to this many rows are scored on the event loop; larger ones in a thread."
    )
    batch_max_rows: int = Field(
        default=64, ge=0, description="Concurrent small requests for one version are scored in one predictor call of at "
        "most this many rows (opportunistic, one event-loop yield, no timer); 0 or 1 turns batching off.")
    switch_interval_ms: float | None = Field(
        default=0.5, gt=0, description="The replica's GIL switch interval (Python's default is 5 ms): how long the "
        "event loop can wait for the GIL while a background thread (log writer, registry poll) holds it. None leaves "
        "Python's default.")
    feast_lookup: bool = Field(default=True, description="Allow entity-key requests (online features from Feast).")
    inline_lookup_max_rows: int = Field(
        default=8, ge=0, description="Entity-key reads of up to this many entities from a local (SQLite) online store "
        "run on the event loop (a thread hop costs more than the read); network stores always use a thread.")

    def to_args(self) -> dict[str, Any]:
        """The dict a Ray Serve deployment is bound with (JSON-friendly, so YAML configs can carry it)."""
        return self.model_dump(exclude_none=True)

    def resolved(self) -> GatewayConfig:
        """A copy with the settings' defaults filled in. Called in the replica, never at import."""
        from core.settings import get_settings

        settings = get_settings()
        secret = lambda value: value.get_secret_value() if value is not None else None  # noqa: E731
        return self.model_copy(update={
            "project": self.project or (str(settings.project) if settings.project else None),
            "database_url": self.database_url or settings.resolved_database_url,
            "artifact_root": self.artifact_root or settings.resolved_artifact_root,
            "poll_interval_s": self.poll_interval_s or settings.gateway_poll_interval_s,
            "predict_token": self.predict_token or secret(settings.gateway_predict_token),
            "admin_token": self.admin_token or secret(settings.gateway_admin_token),
            "inference_log_uri": self.inference_log_uri or settings.resolved_inference_log_uri,
        })
