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
    canary_alias: str | None = Field(
        default="canary", description="An alias that answers a share of the requests that name no version (the "
        "model's canary share in the registry), sticky by entity key or request id; None turns canary routing off.")
    poll_interval_s: float | None = Field(default=None, gt=0, description="Registry poll period (default: settings).")
    pinned_cache_size: int = Field(default=4, ge=1, description="Versions kept loaded for pinned-version routes.")
    pinned_cold_loads: int = Field(
        default=2, ge=1, description="Versions a replica loads at once for pinned-version routes; a request for one "
        "more version not yet loaded gets 503 with Retry-After instead of queueing another load.")
    refused_retry_s: float = Field(default=60.0, gt=0, description="Wait before retrying a refused version.")
    predict_token: str | None = Field(default=None, description="Bearer token for predictions (default: settings).")
    admin_token: str | None = Field(default=None, description="Bearer token for admin and /metrics (default: settings).")
    feedback_token: str | None = Field(
        default=None, description="Bearer token for feedback (default: settings). The admin token is accepted too; "
        "with neither set, feedback takes the predict token, as predictions do.")
    feedback_horizon_s: float | None = Field(
        default=None, gt=0, description="Labels are accepted for answers at most this old (default: settings, 7 days).")
    feedback_index_size: int = Field(
        default=100_000, ge=0, description="Recent answers each replica remembers in memory for feedback checks (about "
        "185 bytes each); older ones, and other replicas' answers, are looked up in the inference log.")
    feedback_wait_s: float | None = Field(
        default=None, ge=0, description="A label whose request id is not known yet waits this long for another "
        "replica's log write before it is refused (default: the log's flush interval + 0.5 s, at most 5 s).")
    inference_log_uri: str | None = Field(default=None, description="Inference log root (default: settings).")
    log_inference: bool = True
    log_buffer_size: int = Field(default=100_000, ge=1, description="Requests held before logging drops (a request's "
                                 "prediction and request records are kept or dropped together).")
    log_flush_interval_s: float = Field(
        default=1.0, gt=0, description="The log writer writes what it holds at least this often: a replica killed "
        "loses at most this long of traffic (see log_max_unflushed_records).")
    log_max_unflushed_records: int = Field(
        default=10_000, ge=1, description="Records (requests or labels) held unwritten that make the writer write at "
        "once, before the flush interval: the other bound on what a killed replica loses.")
    profile_window_s: int = Field(default=3600, ge=1, description="Width of one whylogs profile window.")
    profile_in_subprocess: bool = Field(
        default=True, description="Compute the whylogs window profiles in a child process of the replica (from the "
        "parquet batch just written), so profiling never holds the replica's GIL; False profiles in the writer thread.")
    inline_predict_max_rows: int = Field(
        default=32, ge=0, description="Requests up to this many rows are scored on the event loop; larger ones in a thread."
    )
    batch_max_rows: int = Field(
        default=64, ge=0, description="Concurrent small requests for one version are scored in one predictor call of at "
        "most this many rows (opportunistic, one event-loop yield, no timer); entity-key lookups for one feature service "
        "share one online-store read of at most this many entities the same way; 0 or 1 turns batching off.")
    switch_interval_ms: float | None = Field(
        default=0.5, gt=0, description="The replica's GIL switch interval (Python's default is 5 ms): how long the "
        "event loop can wait for the GIL while a background thread (log writer, registry poll) holds it. None leaves "
        "Python's default.")
    feast_lookup: bool = Field(default=True, description="Allow entity-key requests (online features from Feast).")
    inline_lookup_max_rows: int = Field(
        default=8, ge=0, description="Entity-key reads of up to this many entities from a local (SQLite) online store "
        "run on the event loop (a thread hop costs more than the read); network stores always use a thread.")
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest request body read (413 past it, checked on "
        "Content-Length before reading; a chunked body is cut off at the cap). Decoding JSON holds 15 to 36 times "
        "the body in memory (tests/test_gateway_hardening.py measures it), so this also bounds a request's memory. "
        "8 MiB fits 10,000 rows of 14 features (3 MiB).")
    max_string_chars: int = Field(
        default=4096, ge=1, description="Longest string (feature value, entity key, label, object key) a body may "
        "carry: 422 naming the field, before any array is built or anything is logged.")

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
            "feedback_token": self.feedback_token or secret(settings.gateway_feedback_token),
            "feedback_horizon_s": self.feedback_horizon_s or settings.feedback_horizon_s,
            "inference_log_uri": self.inference_log_uri or settings.resolved_inference_log_uri,
        })
