"""The registry's Python API: one ``Registry`` object over one database and one artifact store.

Every change that must be all-or-nothing (register a version, move an alias, roll back) is one write
transaction that first locks the model's row, so concurrent writers on the same model queue up instead
of interleaving; the audit event is written in that same transaction, so the log can never disagree
with the aliases.
"""

from __future__ import annotations

import contextvars
import operator
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import case, delete, func, select
from sqlalchemy import event as sa_event
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlmodel import Session

from registry import db
from registry.artifacts import ArtifactStore, StoredArtifact
from registry.errors import InvalidName, NotFound, RegistryError, RegistryUnavailable
from registry.events import (
    CANARY_ALIAS,
    PrefectEmission,
    Publisher,
    collect_audit_events,
    flushed_public_events,
    prefect_api_configured,
    public_event,
)
from registry.flavors.base import Predictor, check_artifact, get_flavor
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
    as_utc,
    utcnow,
)
from registry.names import check_alias, check_model_name
from registry.webhooks import STATUSES, Delivery, Poster, WebhookConfig, stage_deliveries

ALIAS_CHANGES = ("promote", "rollback")
TRIAL_SORTS = ("id", "family", "cv", "std", "duration", "status")
"""What :meth:`Registry.leaderboard` sorts trials by: id, family, CV score, its spread, duration, status."""
PRODUCTION = "production"
CANARY = CANARY_ALIAS
DEFAULT_CANARY_SHARE = 0.1
"""The share of requests a model's first canary gets when ``start_canary`` is given none."""
REPLICA_RETENTION_S = 24 * 3600.0
"""A gateway replica's row is deleted once it has not been seen (or has been stopped) for this long."""
CLOSE_WAIT_S = 10.0
"""How long :meth:`Registry.close` waits for event deliveries in flight; what is left stays ``pending``."""
STALE_PENDING_S = 600.0
"""A ``pending`` delivery not updated for this long was left by a process that died (a live one updates its
row after every attempt, at most a minute of back-off apart): :meth:`Registry.redeliver` sends it again."""


def check_share(share: float) -> float:
    """A canary's traffic share: a number with 0 < share <= 1, or a clear error."""
    try:
        value = float(share)
    except (TypeError, ValueError):
        raise RegistryError(f"canary share must be a number in (0, 1], got {share!r}") from None
    if not 0.0 < value <= 1.0:
        raise RegistryError(f"canary share must be in (0, 1], got {value}")
    return value


@dataclass(frozen=True)
class ModelRef:
    """``name``, ``name:3`` or ``name@production``, parsed."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        if "@" in text:
            name, alias = text.split("@", 1)
            return cls(check_model_name(name), alias=check_alias(alias))
        if ":" in text:
            name, version = text.split(":", 1)
            if not (version.isascii() and version.isdigit()):
                raise InvalidName(f"invalid version {version!r} in {text!r}: expected a positive integer")
            return cls(check_model_name(name), version=int(version))
        return cls(check_model_name(text))


_COMPARATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "=": operator.eq,
                "==": operator.eq, "!=": operator.ne}
_FILTER_RE = re.compile(r"^\s*(metrics|params|tags)\.([\w.-]+)\s*(>=|<=|==|!=|>|<|=)\s*(.+?)\s*$")


def _parse_filter(text: str) -> tuple[str, str, Any, Any]:
    """``metrics.roc_auc > 0.8`` -> (section, key, comparator, value)."""
    match = _FILTER_RE.match(text)
    if not match:
        raise RegistryError(f"invalid filter {text!r}: expected e.g. 'metrics.roc_auc > 0.8' or 'tags.team = risk'")
    section, key, op, raw = match.groups()
    raw = raw.strip("'\"")
    value: Any
    try:
        value = float(raw)
    except ValueError:
        value = raw
    return section, key, _COMPARATORS[op], value


class Registry:
    """Model registry and ML metadata store.

    >>> reg = Registry.from_url("sqlite:///.esteira/registry.db")   # doctest: +SKIP
    >>> mv = reg.register_version("fraud", model, signature=sig, metrics={"roc_auc": 0.91})  # doctest: +SKIP
    >>> reg.promote("fraud", mv.version, alias="production", reason="beats v1")  # doctest: +SKIP
    """

    def __init__(self, url: str, artifact_root: str, *, migrate: bool = True, notify: bool = True,
                 webhooks: WebhookConfig | None = None) -> None:
        """``notify=False``: this registry's writes go out neither as Prefect events nor as webhooks (for
        tools that must stay silent). ``webhooks``: where events go; default: the ``ESTEIRA_WEBHOOK_*``
        settings."""
        self.url = db.normalise_url(url)
        self.notify = notify
        self.webhooks = webhooks if webhooks is not None else (
            WebhookConfig.from_settings() if notify else WebhookConfig())
        self._publisher: Publisher | None = None  # started with the first event that goes out
        self._poster = Poster(self.webhooks.timeout_s)
        self._publisher_lock = threading.Lock()
        try:
            self.read_engine, self.write_engine = db.make_engines(self.url)
        except (ArgumentError, NoSuchModuleError) as exc:
            from core.settings import redact_urls  # SQLAlchemy's message quotes the URL, password included

            raise RegistryError(redact_urls(f"invalid database URL {url!r}: {exc}")) from None
        self.artifacts = ArtifactStore(artifact_root)
        if migrate:
            with self._unavailable_as_error():
                db.upgrade(self.url, self.write_engine)

    @classmethod
    def from_url(cls, url: str | None = None, artifact_root: str | None = None, *, migrate: bool = True,
                 notify: bool = True) -> Registry:
        """A registry on ``url`` (default: the settings' database), migrated to the latest schema."""
        if url is None or artifact_root is None:
            from core.settings import get_settings

            settings = get_settings()
            url = url or settings.resolved_database_url
            artifact_root = artifact_root or settings.resolved_artifact_root
        return cls(url, artifact_root, migrate=migrate, notify=notify)

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Wait up to ``timeout`` seconds for event deliveries in flight, then release the database."""
        with self._publisher_lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close(timeout)
        self._poster.close()
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()

    # -- sessions -------------------------------------------------------------------------------------------

    @contextmanager
    def _unavailable_as_error(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise RegistryUnavailable(f"registry database unreachable ({self._safe_url()}): {exc.orig}") from exc

    def _safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._unavailable_as_error(), Session(self.read_engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction. The audit events it writes go out once it has committed, never when it rolls
        back: their webhook deliveries are rows of the same transaction, sent by a background thread."""
        with self._unavailable_as_error(), Session(self.write_engine, expire_on_commit=False) as session:
            if self.notify:
                sa_event.listen(session, "after_flush", collect_audit_events)
            with session.begin():
                yield session
                jobs = self._outbox(session) if self.notify else []
        if jobs:
            self._events_publisher().submit(jobs)

    def _outbox(self, session: Session) -> list[Any]:
        """What tells the world about the audit events ``session`` wrote: a Prefect emission each (when a
        Prefect API is configured) and a delivery per webhook URL, whose rows join the transaction."""
        session.flush()
        events = flushed_public_events(session)
        if not events:
            return []
        jobs: list[Any] = []
        if prefect_api_configured():
            context = contextvars.copy_context()
            jobs += [PrefectEmission(event, context) for event in events]
        rows = stage_deliveries(session, events, self.webhooks.urls)
        by_id = {event.id: event for event in events}
        jobs += [Delivery(row.id, row.url, by_id[row.event_id], self.webhooks, self._write,  # type: ignore
                          self._poster) for row in rows]
        return jobs

    def _events_publisher(self) -> Publisher:
        with self._publisher_lock:
            if self._publisher is None:
                self._publisher = Publisher()
            return self._publisher

    @staticmethod
    def _lock_model(session: Session, name: str) -> RegisteredModel:
        """The model's row, locked for the rest of the transaction (SQLite: the write lock is already held)."""
        model = session.execute(
            select(RegisteredModel).where(RegisteredModel.name == name).with_for_update()  # type: ignore[arg-type]
        ).scalar_one_or_none()
        if model is None:
            raise NotFound(f"model {name!r} not found")
        return model

    # -- models ---------------------------------------------------------------------------------------------

    def create_model(self, name: str, description: str = "", tags: dict[str, str] | None = None,
                     actor: str = "unknown") -> RegisteredModel:
        """Create the model if it does not exist; return it either way."""
        check_model_name(name)
        existing = self.get_model(name, missing_ok=True)
        if existing is not None:
            return existing
        try:
            with self._write() as session:
                model = RegisteredModel(name=name, description=description, tags=tags or {})
                session.add(model)
                session.add(AuditEvent(model_name=name, action="create_model", actor=actor))
                session.flush()
                return model
        except SAIntegrityError:  # created concurrently by someone else
            return self.get_model(name)  # type: ignore[return-value]

    def get_model(self, name: str, *, missing_ok: bool = False) -> RegisteredModel | None:
        with self._read() as session:
            model = session.execute(select(RegisteredModel).where(RegisteredModel.name == name)).scalar_one_or_none()
        if model is None and not missing_ok:
            raise NotFound(f"model {name!r} not found")
        return model

    def list_models(self) -> list[RegisteredModel]:
        with self._read() as session:
            return list(session.execute(select(RegisteredModel).order_by(RegisteredModel.name)).scalars())

    # -- versions -------------------------------------------------------------------------------------------

    def register_version(self, name: str, model: Any, *, flavor: str = "sklearn", **metadata: Any) -> ModelVersion:
        """Serialise ``model`` with its flavor, store and hash the artifact, record a new version.

        ``metadata`` are ModelVersion fields: signature, params, metrics, tags, feature_service,
        training_set_uri, training_set_sha256, code_version, package_versions, flow_run_id,
        training_run_id, description, reference_profile (bytes of a whylogs profile).
        """
        plugin = get_flavor(flavor)
        return self.register_artifact(name, plugin.save(model), flavor=flavor, file_name=plugin.file_name,
                                      **metadata)

    def register_artifact(self, name: str, data: bytes, *, flavor: str, file_name: str | None = None,
                          reference_profile: bytes | None = None, actor: str = "unknown",
                          **fields: Any) -> ModelVersion:
        """Record a version from already-serialised bytes (what a flavor's ``save`` returned).

        The flavor checks the bytes first (the scikit-learn flavor: every type on the trusted list), so an
        artifact it would refuse to load is never stored and never becomes a version.
        """
        check_model_name(name)
        unknown = set(fields) - set(ModelVersion.model_fields)
        if unknown:
            raise RegistryError(f"unknown version fields: {', '.join(sorted(unknown))}")
        if "servable" in fields:
            raise RegistryError("a version becomes servable when it is promoted to an alias, not at registration")
        plugin = get_flavor(flavor)
        check_artifact(plugin, data)
        self.create_model(name, actor=actor)
        stored = self.artifacts.put(name, file_name or plugin.file_name, data)
        profile: StoredArtifact | None = None
        if reference_profile is not None:
            profile = self.artifacts.put(f"{name}/profiles", "reference.bin", reference_profile)
        with self._write() as session:
            model = self._lock_model(session, name)
            latest = session.execute(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
            version = ModelVersion(
                model_id=model.id, model_name=name, version=(latest.scalar() or 0) + 1, flavor=flavor,
                artifact_uri=stored.uri, artifact_sha256=stored.sha256, artifact_size=stored.size,
                reference_profile_uri=profile.uri if profile else None,
                reference_profile_sha256=profile.sha256 if profile else None, **fields,
            )
            session.add(version)
            session.flush()
            session.add(AuditEvent(model_name=name, action="register", to_version=version.version, actor=actor,
                                   details={"artifact_sha256": stored.sha256, "flavor": flavor}))
            return version

    def get_version(self, name: str, version: int) -> ModelVersion:
        with self._read() as session:
            found = session.execute(
                select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.version == version)
            ).scalar_one_or_none()
        if found is None:
            self.get_model(name)  # says "model not found" when that is the problem
            raise NotFound(f"version {version} of model {name!r} not found")
        return found

    def get_by_alias(self, name: str, alias: str) -> ModelVersion:
        version = self.resolve_alias(name, alias)
        if version is None:
            self.get_model(name)
            raise NotFound(f"model {name!r} has no alias {alias!r}")
        return self.get_version(name, version)

    def get(self, ref: str | ModelRef) -> ModelVersion:
        """``name:3``, ``name@production`` or ``name`` (its latest version)."""
        parsed = ModelRef.parse(ref) if isinstance(ref, str) else ref
        if parsed.alias:
            return self.get_by_alias(parsed.name, parsed.alias)
        if parsed.version is not None:
            return self.get_version(parsed.name, parsed.version)
        versions = self.list_versions(parsed.name, limit=1)
        if not versions:
            raise NotFound(f"model {parsed.name!r} has no versions")
        return versions[0]

    def resolve_alias(self, name: str, alias: str) -> int | None:
        """The version number an alias points at, or None. The gateway polls this: one indexed query."""
        with self._unavailable_as_error(), self.read_engine.connect() as connection:
            return connection.execute(
                select(ModelAlias.version)
                .join(RegisteredModel, RegisteredModel.id == ModelAlias.model_id)  # type: ignore[arg-type]
                .where(RegisteredModel.name == name, ModelAlias.alias == alias)
            ).scalar_one_or_none()

    def count_versions(self, name: str) -> int:
        with self._unavailable_as_error(), self.read_engine.connect() as connection:
            return int(connection.execute(
                select(func.count()).select_from(ModelVersion).where(ModelVersion.model_name == name)).scalar() or 0)

    def alias_rows(self, name: str) -> list[ModelAlias]:
        """The model's aliases with when each last moved."""
        with self._read() as session:
            return list(session.execute(
                select(ModelAlias).join(RegisteredModel, RegisteredModel.id == ModelAlias.model_id)  # type: ignore[arg-type]
                .where(RegisteredModel.name == name).order_by(ModelAlias.alias)).scalars())

    def aliases(self, name: str) -> dict[str, int]:
        with self._unavailable_as_error(), self.read_engine.connect() as connection:
            rows = connection.execute(
                select(ModelAlias.alias, ModelAlias.version)
                .join(RegisteredModel, RegisteredModel.id == ModelAlias.model_id)  # type: ignore[arg-type]
                .where(RegisteredModel.name == name)
                .order_by(ModelAlias.alias)
            )
            return {alias: version for alias, version in rows}

    def list_versions(self, name: str, *, filters: Sequence[str] = (), order_by: str | None = None,
                      limit: int | None = None, offset: int = 0) -> list[ModelVersion]:
        """Versions of a model, newest first, optionally filtered (``metrics.roc_auc > 0.8``, ``tags.k = v``)
        and ordered (``metrics.roc_auc`` descending, or ``-metrics.roc_auc`` ascending); ``offset`` and
        ``limit`` page through the result."""
        self.get_model(name)
        parsed = [_parse_filter(text) for text in filters]
        query = select(ModelVersion).where(ModelVersion.model_name == name).order_by(ModelVersion.version.desc())  # type: ignore[union-attr]
        in_sql = not parsed and not order_by  # a plain page is read as a page, not as every version
        if in_sql and limit:
            query = query.limit(limit)
        if in_sql and offset:
            query = query.offset(offset)
        with self._read() as session:
            versions = list(session.execute(query).scalars())
        if in_sql:
            return versions

        def matches(mv: ModelVersion) -> bool:
            for section, key, compare, value in parsed:
                have = getattr(mv, section).get(key)
                if have is None:
                    return False
                try:
                    if not compare(type(value)(have) if isinstance(value, float) else str(have), value):
                        return False
                except (TypeError, ValueError):
                    return False
            return True

        versions = [mv for mv in versions if matches(mv)]
        if order_by:
            ascending = order_by.startswith("-")
            section, _, key = order_by.lstrip("-").partition(".")
            if section not in ("metrics", "params") or not key:
                raise RegistryError(f"invalid order {order_by!r}: expected e.g. 'metrics.roc_auc'")
            with_key = [mv for mv in versions if getattr(mv, section).get(key) is not None]
            without = [mv for mv in versions if getattr(mv, section).get(key) is None]
            with_key.sort(key=lambda mv: getattr(mv, section)[key], reverse=not ascending)
            versions = with_key + without
        versions = versions[offset:]
        return versions[:limit] if limit else versions

    def set_version_status(self, name: str, version: int, status: str, *, reason: str = "",
                           actor: str = "unknown", details: dict[str, Any] | None = None) -> None:
        with self._write() as session:
            self._lock_model(session, name)
            mv = session.execute(
                select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.version == version)
            ).scalar_one_or_none()
            if mv is None:
                raise NotFound(f"version {version} of model {name!r} not found")
            previous, mv.status = mv.status, status
            session.add(mv)
            session.add(AuditEvent(model_name=name, action=f"status:{status}", to_version=version, actor=actor,
                                   reason=reason, details={"previous": previous, **(details or {})}))

    # -- artifacts ------------------------------------------------------------------------------------------

    def read_artifact(self, mv: ModelVersion) -> bytes:
        """The version's artifact bytes; IntegrityError if they no longer match the recorded sha256."""
        return ArtifactStore.read_verified(mv.artifact_uri, mv.artifact_sha256)

    def load_predictor(self, mv: ModelVersion) -> Predictor:
        """Verify the artifact's hash, then let the version's flavor turn it into a predictor."""
        return get_flavor(mv.flavor).load(self.read_artifact(mv), mv.signature)

    def read_reference_profile(self, mv: ModelVersion) -> bytes | None:
        if not mv.reference_profile_uri or not mv.reference_profile_sha256:
            return None
        return ArtifactStore.read_verified(mv.reference_profile_uri, mv.reference_profile_sha256)

    def put_artifact(self, namespace: str, file_name: str, data: bytes) -> StoredArtifact:
        """Store side artifacts (training-set snapshots, reports) in the same content-addressed store.

        ``namespace`` starts with a model name (``<model>/training-sets``); the store refuses any key that
        would leave its root.
        """
        check_model_name(namespace.split("/", 1)[0])
        return self.artifacts.put(namespace, file_name, data)

    # -- aliases --------------------------------------------------------------------------------------------

    def promote(self, name: str, version: int, *, alias: str = "production", reason: str = "",
                actor: str = "unknown", details: dict[str, Any] | None = None) -> AuditEvent:
        """Point ``alias`` at ``version``: one transaction, with its audit event."""
        check_alias(alias)
        with self._write() as session:
            model = self._lock_model(session, name)
            return self._move_alias(session, model, alias, version, "promote", reason, actor, details)

    def rollback(self, name: str, *, alias: str = "production", reason: str = "",
                 actor: str = "unknown") -> AuditEvent:
        """Point ``alias`` back at the version that held it before the current holder was promoted.

        Promotions push onto the alias's history and rollbacks pop, so rolling back twice after
        v1 -> v2 -> v3 gives v2, then v1.
        """
        check_alias(alias)
        with self._write() as session:
            model = self._lock_model(session, name)
            stack = self._holder_stack(session, name, alias)
            if len(stack) < 2:
                raise NotFound(f"alias {alias!r} of model {name!r} has no earlier version to roll back to")
            return self._move_alias(session, model, alias, stack[-2], "rollback", reason, actor, None)

    def delete_alias(self, name: str, alias: str, *, reason: str = "", actor: str = "unknown") -> AuditEvent:
        check_alias(alias)
        with self._write() as session:
            model = self._lock_model(session, name)
            row = session.get(ModelAlias, (model.id, alias))
            if row is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            session.delete(row)
            event = AuditEvent(model_name=name, action="delete_alias", alias=alias, from_version=row.version,
                               actor=actor, reason=reason)
            session.add(event)
            session.flush()
            return event

    @staticmethod
    def _holder_stack(session: Session, name: str, alias: str) -> list[int]:
        events = session.execute(
            select(AuditEvent.action, AuditEvent.to_version)
            .where(AuditEvent.model_name == name, AuditEvent.alias == alias,
                   AuditEvent.action.in_(ALIAS_CHANGES + ("delete_alias",)))  # type: ignore[attr-defined]
            .order_by(AuditEvent.id)
        ).all()
        stack: list[int] = []
        for action, to_version in events:
            if action == "promote":
                stack.append(to_version)
            elif action == "rollback" and to_version is None:  # a canary's rollback: the alias is gone
                stack.clear()
            elif action == "rollback" and stack:
                stack.pop()
            elif action == "delete_alias":
                stack.clear()
        return stack

    def _move_alias(self, session: Session, model: RegisteredModel, alias: str, version: int, action: str,
                    reason: str, actor: str, details: dict[str, Any] | None) -> AuditEvent:
        target = session.execute(
            select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
        ).scalar_one_or_none()
        if target is None:
            raise NotFound(f"version {version} of model {model.name!r} not found")
        if not target.servable:  # promoted once, servable for good: a rollback target stays reachable
            target.servable = True
            session.add(target)
        row = session.get(ModelAlias, (model.id, alias))
        previous = row.version if row else None
        if row is None:
            row = ModelAlias(model_id=model.id, alias=alias, version_id=target.id, version=version)
        else:
            row.version_id, row.version, row.updated_at = target.id, version, utcnow()
        session.add(row)
        event = AuditEvent(model_name=model.name, action=action, alias=alias, from_version=previous,
                           to_version=version, actor=actor, reason=reason, details=details or {})
        session.add(event)
        session.flush()
        return event


    # -- canary ---------------------------------------------------------------------------------------------

    def start_canary(self, name: str, version: int, *, share: float | None = None, reason: str = "",
                     actor: str = "unknown", details: dict[str, Any] | None = None) -> AuditEvent:
        """Send ``share`` of ``name``'s requests (default: the model's last share, else 0.1) to ``version``.

        One transaction: the ``canary`` alias moves to the version (a ``promote`` event on that alias, its
        details holding the share) and the model's share is set. A version already in production cannot be
        its own canary. A canary already running is replaced (the new one is judged from its own start).
        """
        with self._write() as session:
            model = self._lock_model(session, name)
            share = check_share(share if share is not None else (model.canary_share or DEFAULT_CANARY_SHARE))
            production = session.get(ModelAlias, (model.id, PRODUCTION))
            if production is not None and production.version == version:
                raise RegistryError(f"version {version} of model {name!r} is already production: a canary must be "
                                    "another version")
            model.canary_share = share
            session.add(model)
            return self._move_alias(session, model, CANARY, version, "promote", reason, actor,
                                    {**(details or {}), "share": share})

    def set_canary_share(self, name: str, share: float, *, reason: str = "", actor: str = "unknown") -> AuditEvent:
        """Change the traffic share of ``name``'s canary at run time; the gateway picks it up at its next poll."""
        share = check_share(share)
        with self._write() as session:
            model = self._lock_model(session, name)
            previous = model.canary_share
            model.canary_share = share
            session.add(model)
            canary = session.get(ModelAlias, (model.id, CANARY))
            event = AuditEvent(model_name=name, action="canary_share", alias=CANARY,
                               to_version=canary.version if canary else None, actor=actor, reason=reason,
                               details={"from_share": previous, "to_share": share})
            session.add(event)
            session.flush()
            return event

    def canary_share(self, name: str) -> float | None:
        """The share of requests ``name``'s canary gets (None: never set). The gateway polls this with the
        aliases, only for models that have a canary."""
        with self._unavailable_as_error(), self.read_engine.connect() as connection:
            return connection.execute(
                select(RegisteredModel.canary_share).where(RegisteredModel.name == name)).scalar_one_or_none()

    def canary_started_at(self, name: str, version: int) -> datetime | None:
        """When ``version`` last became ``name``'s canary: its newest ``promote`` event on the canary alias
        (None: it never was). A version restarted as the canary begins again: the canary flow judges the
        traffic since then, and the console shows it."""
        query = (select(AuditEvent.created_at)
                 .where(AuditEvent.model_name == name, AuditEvent.alias == CANARY,
                        AuditEvent.action == "promote", AuditEvent.to_version == version)
                 .order_by(AuditEvent.id.desc()).limit(1))  # type: ignore[union-attr]
        with self._unavailable_as_error(), self.read_engine.connect() as connection:
            stamp = connection.execute(query).scalar_one_or_none()
        return None if stamp is None else as_utc(stamp)

    def end_canary(self, name: str, *, promote: bool, reason: str = "", actor: str = "unknown",
                   details: dict[str, Any] | None = None, version: int | None = None) -> list[AuditEvent]:
        """Conclude ``name``'s canary in one transaction, so the audit log tells the whole story or none of it.

        First a ``canary_verdict`` event (the verdict and its evidence in ``details``). Then, with
        ``promote=True``, production moves to the canary's version (a ``promote`` event on ``production``) and
        the ``canary`` alias is removed (``delete_alias``); with ``promote=False`` the canary is rolled back (a
        ``rollback`` event on ``canary`` from its version to none, the alias removed) and production never
        moved. Every event carries ``reason`` and ``details`` (the verdict's report, say).

        ``version``: conclude only if the canary is still that version (compare and set). Two judges that
        looked at the same canary at once (a scheduled run and one started by hand) then conclude it once;
        the second gets :class:`NotFound` saying it was concluded already.
        """
        with self._write() as session:
            model = self._lock_model(session, name)
            row = session.get(ModelAlias, (model.id, CANARY))
            if row is None:
                raise NotFound(f"model {name!r} has no canary to conclude"
                               + (f" (version {version} was concluded already)" if version is not None else ""))
            if version is not None and row.version != version:
                raise NotFound(f"the canary of model {name!r} is version {row.version} now, not {version}")
            version = row.version
            verdict = AuditEvent(model_name=name, action="canary_verdict", alias=CANARY, from_version=version,
                                 to_version=version, actor=actor, reason=reason,
                                 details={**(details or {}), "verdict": "promote" if promote else "rollback"})
            session.add(verdict)
            events = [verdict]
            if promote:
                events.append(self._move_alias(session, model, PRODUCTION, version, "promote", reason, actor,
                                               {**(details or {}), "from_alias": CANARY}))
            session.delete(row)
            end = AuditEvent(model_name=name, action="delete_alias" if promote else "rollback", alias=CANARY,
                             from_version=version, to_version=None, actor=actor, reason=reason,
                             details=details or {})
            session.add(end)
            session.flush()
            return [*events, end]

    # -- audit ----------------------------------------------------------------------------------------------

    def history(self, name: str | None = None, *, alias: str | None = None, limit: int | None = None,
                version: int | None = None, before_id: int | None = None) -> list[AuditEvent]:
        """Audit events, oldest first: the last ``limit`` of them, of one ``version`` (moved from or to it)
        or older than the event ``before_id`` (a page further back) when asked."""
        query = select(AuditEvent)
        if name is not None:
            self.get_model(name)
            query = query.where(AuditEvent.model_name == name)
        if alias is not None:
            query = query.where(AuditEvent.alias == alias)
        if version is not None:
            query = query.where((AuditEvent.to_version == version) | (AuditEvent.from_version == version))
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)  # type: ignore[operator]
        if limit:  # the newest ``limit``, read newest first by the primary key, then put back in order
            query = query.order_by(AuditEvent.id.desc()).limit(limit)  # type: ignore[union-attr]
        else:
            query = query.order_by(AuditEvent.id)
        with self._read() as session:
            events = list(session.execute(query).scalars())
        return events[::-1] if limit else events

    def record_event(self, name: str, action: str, *, version: int | None = None, reason: str = "",
                     actor: str = "unknown", details: dict[str, Any] | None = None) -> AuditEvent:
        """Append an event that is not an alias move (e.g. the gateway refusing to load a version)."""
        check_model_name(name)
        with self._write() as session:
            event = AuditEvent(model_name=name, action=action, to_version=version, actor=actor, reason=reason,
                               details=details or {})
            session.add(event)
            session.flush()
            return event

    # -- webhook deliveries ---------------------------------------------------------------------------------

    def deliveries(self, model_name: str | None = None, status: str | None = None, limit: int = 50, *,
                   event_id: int | None = None) -> list[WebhookDelivery]:
        """Webhook deliveries, newest first: of one model's events, in one ``status`` (pending, delivered,
        failed), of one audit event, when asked."""
        query = select(WebhookDelivery)
        if model_name is not None:
            of_event = AuditEvent.id == WebhookDelivery.event_id
            query = query.join(AuditEvent, of_event)  # type: ignore[arg-type]
            query = query.where(AuditEvent.model_name == model_name)
        if status is not None:
            if status not in STATUSES:
                raise RegistryError(f"unknown delivery status {status!r}: use one of {', '.join(STATUSES)}")
            query = query.where(WebhookDelivery.status == status)
        if event_id is not None:
            query = query.where(WebhookDelivery.event_id == event_id)
        query = query.order_by(WebhookDelivery.id.desc()).limit(limit)  # type: ignore[union-attr]
        return self._delivery_rows(query)

    def _delivery_rows(self, query: Any) -> list[WebhookDelivery]:
        with self._read() as session:
            rows = list(session.execute(query).scalars())
        for row in rows:  # SQLite hands timestamps back without their zone; they were written in UTC
            for name in ("created_at", "updated_at"):
                value = getattr(row, name)
                if value.tzinfo is None:
                    setattr(row, name, value.replace(tzinfo=timezone.utc))
        return rows

    def redeliver(self, ids: Sequence[int] | None = None, *, model_name: str | None = None,
                  stale_after_s: float = STALE_PENDING_S, max_attempts: int = 1, limit: int = 50
                  ) -> list[WebhookDelivery]:
        """Send webhook deliveries again, here and now, and return their rows as they end.

        ``ids``: those deliveries, whatever their status. Otherwise the ``failed`` ones and the ``pending``
        ones not updated for ``stale_after_s`` seconds (left by a process that died), oldest first, at most
        ``limit``. Each gets up to ``max_attempts`` tries (with back-off), to the URL it was recorded with,
        signed with the current secret, under its own delivery id (a receiver that has handled it can tell).
        """
        query = select(WebhookDelivery, AuditEvent).join(
            AuditEvent, AuditEvent.id == WebhookDelivery.event_id)  # type: ignore[arg-type]
        if ids is not None:
            query = query.where(WebhookDelivery.id.in_(list(ids)))  # type: ignore[union-attr]
        else:
            stale = utcnow() - timedelta(seconds=stale_after_s)
            stale_rows = WebhookDelivery.updated_at <= stale  # type: ignore[operator]
            left = (WebhookDelivery.status == "pending") & stale_rows
            query = query.where((WebhookDelivery.status == "failed") | left)
        if model_name is not None:
            query = query.where(AuditEvent.model_name == model_name)
        query = query.order_by(WebhookDelivery.id).limit(limit)  # type: ignore[arg-type]
        with self._read() as session:
            found = list(session.execute(query).all())
        config = replace(self.webhooks, max_attempts=max_attempts)
        sent: list[int] = []
        for row, event in found:
            public = public_event(event)
            if public is None:  # an action no longer sent out: nothing to say
                continue
            Delivery(row.id, row.url, public, config, self._write, self._poster).run_to_end()  # type: ignore
            sent.append(row.id)  # type: ignore[arg-type]
        if not sent:
            return []
        return self._delivery_rows(select(WebhookDelivery).where(
            WebhookDelivery.id.in_(sent)).order_by(WebhookDelivery.id))  # type: ignore[union-attr]

    # -- training runs and trials --------------------------------------------------------------------------

    def start_run(self, model_name: str, *, spec: dict[str, Any] | None = None, flow_run_id: str | None = None,
                  training_set_sha256: str | None = None) -> TrainingRun:
        check_model_name(model_name)
        with self._write() as session:
            run = TrainingRun(model_name=model_name, spec=spec or {}, flow_run_id=flow_run_id,
                              training_set_sha256=training_set_sha256)
            session.add(run)
            session.flush()
            return run

    def record_trial(self, run_id: int, *, family: str, params: dict[str, Any], metrics: dict[str, float],
                     duration_s: float, status: str = "succeeded", error: str | None = None) -> Trial:
        with self._write() as session:
            trial = Trial(run_id=run_id, family=family, params=params, metrics=metrics, duration_s=duration_s,
                          status=status, error=error[:8000] if error else None)
            session.add(trial)
            session.flush()
            return trial

    def record_trials(self, run_id: int, trials: Sequence[dict[str, Any]]) -> list[Trial]:
        """Many trials in one transaction (a search of hundreds should not be hundreds of commits)."""
        with self._write() as session:
            rows = [Trial(run_id=run_id, **{k: v for k, v in t.items() if k in Trial.model_fields}) for t in trials]
            session.add_all(rows)
            session.flush()
            return rows

    def finish_run(self, run_id: int, *, status: str, best_trial_id: int | None = None,
                   registered_version: int | None = None, summary: dict[str, Any] | None = None,
                   error: str | None = None, training_set_sha256: str | None = None) -> TrainingRun:
        with self._write() as session:
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise NotFound(f"training run {run_id} not found")
            run.status, run.best_trial_id, run.registered_version = status, best_trial_id, registered_version
            run.summary, run.error, run.finished_at = summary or {}, error[:8000] if error else None, utcnow()
            if training_set_sha256:
                run.training_set_sha256 = training_set_sha256
            session.add(run)
            return run

    def get_run(self, run_id: int) -> TrainingRun:
        with self._read() as session:
            run = session.get(TrainingRun, run_id)
        if run is None:
            raise NotFound(f"training run {run_id} not found")
        return run

    def list_runs(self, model_name: str | None = None, limit: int = 50) -> list[TrainingRun]:
        query = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)  # type: ignore[union-attr]
        if model_name:
            query = query.where(TrainingRun.model_name == model_name)
        with self._read() as session:
            return list(session.execute(query).scalars())

    def trials(self, run_id: int) -> list[Trial]:
        with self._read() as session:
            return list(session.execute(select(Trial).where(Trial.run_id == run_id).order_by(Trial.id)).scalars())

    def get_trial(self, trial_id: int) -> Trial:
        with self._read() as session:
            trial = session.get(Trial, trial_id)
        if trial is None:
            raise NotFound(f"trial {trial_id} not found")
        return trial

    def trial_counts(self, run_id: int) -> tuple[int, int]:
        """How many trials the run has, and how many of them did not succeed."""
        failed = func.sum(case((Trial.status != "succeeded", 1), else_=0))
        with self._unavailable_as_error(), self.read_engine.connect() as connection:
            total, bad = connection.execute(select(func.count(), failed).where(Trial.run_id == run_id)).one()
        return int(total or 0), int(bad or 0)

    def leaderboard(self, run_id: int, *, sort: str = "cv", descending: bool = True, offset: int = 0,
                    limit: int = 100) -> list[tuple[int, Trial]]:
        """A page of a run's trials, each with its rank by CV score (1 is the best; trials that did not succeed
        rank last), sorted by ``sort`` (one of :data:`TRIAL_SORTS`; missing values last either way).

        Ranked, sorted and paged in SQL: a search of ten thousand trials is one page read, not ten thousand
        objects built (``bench/bench_console.py``)."""
        score = case((Trial.status == "succeeded", Trial.metrics["cv_mean"].as_float()), else_=None)  # type: ignore[index]
        keys = {"id": Trial.id, "family": Trial.family, "cv": score, "std": Trial.metrics["cv_std"].as_float(),  # type: ignore[index]
                "duration": Trial.duration_s, "status": Trial.status}
        if sort not in keys:
            raise RegistryError(f"cannot sort trials by {sort!r}: use one of {', '.join(TRIAL_SORTS)}")
        rank = func.row_number().over(order_by=(score.desc().nulls_last(), Trial.id)).label("rank")
        ranked = select(Trial.id.label("trial_id"), rank).where(Trial.run_id == run_id).subquery()  # type: ignore[union-attr]
        key = keys[sort]
        order = key.desc().nulls_last() if descending else key.asc().nulls_last()  # type: ignore[union-attr]
        query = (select(Trial, ranked.c.rank).join(ranked, ranked.c.trial_id == Trial.id)
                 .order_by(order, Trial.id).offset(offset).limit(limit))
        with self._read() as session:
            return [(int(rank), trial) for trial, rank in session.execute(query).all()]

    # -- gateway replicas ------------------------------------------------------------------------------------

    def record_replica(self, replica_id: str, *, host: str, pid: int, project: str | None = None,
                       served: dict[str, Any] | None = None, refused: dict[str, str] | None = None,
                       prune_after_s: float = REPLICA_RETENTION_S) -> GatewayReplica:
        """Insert or refresh one gateway replica's row (its heartbeat): one short write transaction.

        A replica's first record (its start) also deletes the rows not seen for ``prune_after_s`` (replicas
        stopped or dead since), so the table holds about one row per replica of the last day. A stopped
        replica stays stopped: a late heartbeat refreshes its row but does not clear ``stopped_at``.
        """
        now = utcnow()
        with self._write() as session:
            row = session.get(GatewayReplica, replica_id, with_for_update=True)
            if row is None:
                cutoff = now - timedelta(seconds=prune_after_s)
                stale = GatewayReplica.seen_at < cutoff
                session.execute(delete(GatewayReplica).where(stale))  # type: ignore[arg-type]
                row = GatewayReplica(replica_id=replica_id, host=host, pid=pid, started_at=now)
            row.host, row.pid, row.project, row.seen_at = host, pid, project, now
            row.served, row.refused = dict(served or {}), dict(refused or {})
            session.add(row)
            session.flush()
            return row

    def stop_replica(self, replica_id: str) -> GatewayReplica:
        """Mark a replica stopped (its clean shutdown); NotFound when it never recorded itself."""
        with self._write() as session:
            row = session.get(GatewayReplica, replica_id, with_for_update=True)
            if row is None:
                raise NotFound(f"gateway replica {replica_id!r} not found")
            row.seen_at = utcnow()
            row.stopped_at = row.stopped_at or row.seen_at
            session.add(row)
            session.flush()
            return row

    def gateway_replicas(self, *, model_name: str | None = None,
                         seen_within_s: float | None = None) -> list[GatewayReplica]:
        """Gateway replicas, last seen first: those holding a version of ``model_name`` and those seen in the
        last ``seen_within_s`` seconds, when asked. Stopped replicas are included (``stopped_at`` is set)."""
        query = select(GatewayReplica).order_by(GatewayReplica.seen_at.desc(),  # type: ignore[attr-defined]
                                                GatewayReplica.replica_id)
        if seen_within_s is not None:
            since = utcnow() - timedelta(seconds=seen_within_s)
            query = query.where(GatewayReplica.seen_at >= since)  # type: ignore[arg-type]
        with self._read() as session:
            rows = list(session.execute(query).scalars())
        if model_name is not None:
            rows = [row for row in rows if model_name in row.models]
        for row in rows:  # SQLite hands timestamps back without their zone; they were written in UTC
            for name in ("started_at", "seen_at", "stopped_at"):
                value = getattr(row, name)
                if value is not None and value.tzinfo is None:
                    setattr(row, name, value.replace(tzinfo=timezone.utc))
        return rows

    # -- monitoring -----------------------------------------------------------------------------------------

    def record_report(self, report: MonitoringReport) -> MonitoringReport:
        with self._write() as session:
            session.add(report)
            session.flush()
            return report

    def get_report(self, report_id: int) -> MonitoringReport:
        with self._read() as session:
            report = session.get(MonitoringReport, report_id)
        if report is None:
            raise NotFound(f"monitoring report {report_id} not found")
        return report

    def update_report(self, report_id: int, **fields: Any) -> MonitoringReport:
        with self._write() as session:
            report = session.get(MonitoringReport, report_id)
            if report is None:
                raise NotFound(f"monitoring report {report_id} not found")
            for key, value in fields.items():
                setattr(report, key, value)
            session.add(report)
            return report

    def reports(self, model_name: str, *, limit: int = 50, decision: str | None = None,
                since: datetime | None = None, version: int | None = None,
                before_id: int | None = None, kind: str | None = "monitor") -> list[MonitoringReport]:
        """Reports of one ``kind`` (``monitor`` by default, ``canary`` for canary verdicts, None for both), newest
        first (of one ``version``, or older than report ``before_id``, if asked)."""
        query = select(MonitoringReport).where(MonitoringReport.model_name == model_name)
        if kind is not None:
            query = query.where(MonitoringReport.kind == kind)
        if decision:
            query = query.where(MonitoringReport.decision == decision)
        if since:
            query = query.where(MonitoringReport.created_at >= since)
        if version is not None:
            query = query.where(MonitoringReport.version == version)
        if before_id is not None:
            query = query.where(MonitoringReport.id < before_id)  # type: ignore[operator]
        query = query.order_by(MonitoringReport.id.desc()).limit(limit)  # type: ignore[union-attr]
        with self._read() as session:
            return list(session.execute(query).scalars())

    def report_series(self, model_name: str, *, limit: int | None = None, kind: str = "monitor"
                      ) -> list[dict[str, Any]]:
        """Every report's headline numbers, oldest first, without the per-feature detail: what a chart of drift
        and performance over time needs. The ``drift`` column (scores and pictures of every feature) is the
        bulk of a report and is not read."""
        columns = (MonitoringReport.id, MonitoringReport.version, MonitoringReport.created_at,
                   MonitoringReport.window_start, MonitoringReport.window_end, MonitoringReport.n_rows,
                   MonitoringReport.n_labelled, MonitoringReport.status, MonitoringReport.drift_share,
                   MonitoringReport.performance, MonitoringReport.decision, MonitoringReport.triggered_run)
        query = select(*columns).where(MonitoringReport.model_name == model_name, MonitoringReport.kind == kind)
        query = query.order_by(MonitoringReport.id.desc())  # type: ignore[union-attr]
        if limit:
            query = query.limit(limit)
        with self._unavailable_as_error(), self.read_engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [dict(row) for row in reversed(rows)]

    def latest_report(self, model_name: str, *, kind: str = "monitor") -> MonitoringReport | None:
        found = self.reports(model_name, limit=1, kind=kind)
        return found[0] if found else None
