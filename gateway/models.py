"""Which model version answers: loading, hot-swapping and refusing versions, and registry health.

Why this shape (Ray Serve 2.60, measured under continuous load): redeploying or ``reconfigure`` stalls a replica while the
new model loads; a background loop that loads the new version beside the old one *off the event loop*
and then swaps one reference does not. So the registry is polled (one indexed query per model and
alias), a moved alias is loaded in a worker thread, and only when the new predictor is fully built is
the ``(model, alias) -> LoadedModel`` entry replaced. A request picks its ``LoadedModel`` once at the
start, so requests in flight finish on the version they started with.

A version that cannot be loaded (hash mismatch, types outside the trusted list, a broken file, a missing
flavor plugin) is refused: the old version keeps serving, the refusal goes to the registry's audit log
once, and the version is retried only after ``refused_retry_s``. A client asking for a refused version
is told its category only (``artifact hash mismatch``); the full reason, which names files and hashes,
stays in the log, the audit event and the admin status. When the registry cannot be reached the
gateway keeps serving what it holds and reports itself degraded until a poll succeeds again.

With a :class:`~gateway.heartbeat.ReplicaHeartbeat`, the replica also records what it serves and refuses in
the registry after its first sync, after each change and every heartbeat: a write started beside the poll
loop (one at a time), so a slow or failing write never delays a poll or a request.

A canary (the ``canary_alias``) is loaded and swapped the same way; with it the poll reads the model's
canary share (one more indexed query, only for a model that has a canary). A canary version that cannot be
loaded is refused and audited like any other, and the canary stops taking traffic at once (the version
that had the alias before is dropped too): production answers every request until the alias moves to a
version that loads. A removed canary alias stops canary routing at the next poll; a canary whose version
is the serving version is ignored. :meth:`ModelManager.canary` is what request routing reads.

Pinned-version routes (``/versions/{v}/``) serve a version only once it is servable, that is once it has
been promoted to some alias (it stays servable, so a rollback target stays reachable): a version that was
only registered is not served by number. At most ``pinned_cold_loads`` pinned versions load at once per
replica; a request for one more cold version is refused with 503 and ``Retry-After`` rather than queued,
so a burst of requests for many old versions cannot pile loads up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.config import GatewayConfig
from gateway.errors import ModelNotFound, Unavailable, VersionRefused
from gateway.heartbeat import ReplicaHeartbeat, ReplicaState
from gateway.signature import FLOAT_KINDS, INT_KINDS, InputSpec, input_specs
from registry import FlavorNotFound, IntegrityError, NotFound, RegistryUnavailable, UntrustedArtifact
from registry.api import DEFAULT_CANARY_SHARE
from registry.flavors.base import Predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version: everything a request needs, immutable so it can be swapped as one reference."""

    name: str
    version: int
    flavor: str
    predictor: Predictor
    specs: tuple[InputSpec, ...]
    signature: Mapping[str, Any]
    feature_service: str | None = None
    sha256: str = ""
    loaded_at: float = field(default_factory=time.time)

    @property
    def output_names(self) -> list[str]:
        return [str(item["name"]) for item in self.signature.get("outputs", []) or [] if "name" in item]

    @classmethod
    def from_version(cls, mv: Any, predictor: Predictor) -> LoadedModel:
        return cls(name=mv.model_name, version=mv.version, flavor=mv.flavor, predictor=predictor,
                   specs=input_specs(mv.signature or {}), signature=mv.signature or {},
                   feature_service=mv.feature_service, sha256=mv.artifact_sha256)


def _warm_up(model: LoadedModel) -> None:
    """Score one dummy row so the first real request does not pay for lazy initialisation."""
    if not model.specs:
        return
    row: dict[str, np.ndarray] = {}
    for spec in model.specs:
        if spec.dtype in FLOAT_KINDS:
            row[spec.name] = np.zeros(1, dtype=np.float64)
        elif spec.dtype in INT_KINDS:
            row[spec.name] = np.zeros(1, dtype=np.int64)
        elif spec.dtype == "bool":
            row[spec.name] = np.zeros(1, dtype=np.bool_)
        else:
            row[spec.name] = np.array([""], dtype=object)
    try:
        model.predictor.predict(row)
    except Exception:  # noqa: BLE001 - a model may reject zeros; warm-up is best effort
        pass


@dataclass
class RegistryHealth:
    ok: bool = False
    error: str | None = None
    last_ok_at: float | None = None
    degraded_since: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.error, "last_ok_at": self.last_ok_at,
                "degraded_since": self.degraded_since}


SwapListener = Callable[[str, str, "LoadedModel | None"], None]

REFUSAL_CATEGORIES: tuple[tuple[type[BaseException], str], ...] = (
    (IntegrityError, "artifact hash mismatch"),
    (UntrustedArtifact, "untrusted types"),
    (FlavorNotFound, "flavor plugin missing"),
    (NotFound, "artifact missing"),
)


def refusal_category(exc: BaseException) -> str:
    """What a client may be told about a refused load: a category, never paths, hashes or messages."""
    for kind, category in REFUSAL_CATEGORIES:
        if isinstance(exc, kind):
            return category
    return "artifact failed to load"


@dataclass(frozen=True)
class Refusal:
    at: float
    reason: str  # full, for the log, the audit event and the admin status
    category: str  # what clients are told


class ModelManager:
    """Holds the loaded versions and keeps them in step with the registry's aliases."""

    def __init__(self, config: GatewayConfig, registry_factory: Callable[[], Any], *,
                 on_swap: SwapListener | None = None, on_refused: Callable[[str, int], None] | None = None,
                 heartbeat: ReplicaHeartbeat | None = None) -> None:
        self.config = config
        self._registry_factory = registry_factory
        self._registry: Any | None = None
        self._serving: dict[tuple[str, str], LoadedModel] = {}
        # model name -> (canary version, its share): set by the poll thread as one tuple, read by requests
        self._canaries: dict[str, tuple[LoadedModel, float]] = {}
        self._cache: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._refused: dict[tuple[str, int], Refusal] = {}
        self._lock = threading.Lock()  # guards _cache and _refused across the poll and pinned-load threads
        self._registry_lock = threading.Lock()  # the poll and heartbeat threads share one registry object
        self._poll_lock = threading.Lock()  # one poll at a time (the loop and an admin reload may race)
        # event-loop only: one lock per version being loaded (dropped when no request waits on it) and the
        # number of pinned loads in flight
        self._pinned_locks: dict[tuple[str, int], tuple[asyncio.Lock, int]] = {}
        self._cold_loads = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._on_swap = on_swap
        self._on_refused = on_refused
        self.heartbeat = heartbeat
        self._beat: asyncio.Future[bool] | None = None
        self.health = RegistryHealth()
        self.actor = f"gateway@{socket.gethostname()}:{os.getpid()}"

    # -- what requests see ----------------------------------------------------------------------------------

    def current(self, name: str, alias: str | None = None) -> LoadedModel | None:
        """The version serving ``alias`` (default: the serving alias) of ``name``, or None."""
        return self._serving.get((name, alias or self.config.serving_alias))

    def served(self) -> dict[str, LoadedModel]:
        """Model name -> the version answering for the serving alias."""
        alias = self.config.serving_alias
        return {name: model for (name, a), model in list(self._serving.items()) if a == alias}

    def canary(self, name: str) -> tuple[LoadedModel, float] | None:
        """``name``'s canary and the share of requests it takes (0 < share <= 1), or None: no canary alias,
        canary routing off, the canary refused, or the canary is the version already serving."""
        entry = self._canaries.get(name)
        if entry is None:
            return None
        serving = self._serving.get((name, self.config.serving_alias))
        if serving is not None and serving.version == entry[0].version:
            return None
        return entry

    def require(self, name: str) -> LoadedModel:
        model = self.current(name)
        if model is None:
            known = sorted(self.served())
            raise ModelNotFound(f"model {name!r} is not served (serving: {known or 'none'})", field="name")
        return model

    async def pinned(self, name: str, version: int) -> LoadedModel:
        """A specific servable version, loaded on first use (off the event loop) and kept in a small LRU."""
        key = (name, version)
        with self._lock:
            model = self._cache.get(key)
            if model is not None:
                self._cache.move_to_end(key)
                return model
        lock, waiting = self._pinned_locks.get(key) or (asyncio.Lock(), 0)
        self._pinned_locks[key] = (lock, waiting + 1)
        try:
            async with lock:  # concurrent requests for the same cold version share one load
                with self._lock:
                    if key in self._cache:
                        return self._cache[key]
                return await self._cold_load(name, version)
        finally:
            lock, waiting = self._pinned_locks[key]
            if waiting == 1:
                del self._pinned_locks[key]
            else:
                self._pinned_locks[key] = (lock, waiting - 1)

    async def _cold_load(self, name: str, version: int) -> LoadedModel:
        """Load one pinned version in a thread, if fewer than ``pinned_cold_loads`` loads are in flight."""
        limit = self.config.pinned_cold_loads
        if self._cold_loads >= limit:
            raise Unavailable(f"version {version} of model {name!r} is not loaded and this replica is already "
                              f"loading {limit} other version(s); retry in a second", retry_after_s=1)
        self._cold_loads += 1
        try:
            return await asyncio.to_thread(self._load_pinned, name, version)
        finally:
            self._cold_loads -= 1

    def _load_pinned(self, name: str, version: int) -> LoadedModel:
        refusal = self._refusal(name, version)
        if refusal is not None:
            raise self._refused_error(name, version, refusal.category)
        try:
            registry = self._get_registry()
            mv = registry.get_version(name, version)
            if not mv.servable:
                raise VersionRefused(f"version {version} of model {name!r} is not servable: it has never been "
                                     "promoted to an alias (promote it, e.g. to 'staging', to serve it by number)",
                                     field="version")
            model = self._load(registry, mv, reason_alias=None)
        except NotFound as exc:
            raise ModelNotFound(str(exc), field="version") from None
        except RegistryUnavailable as exc:
            self._mark_degraded(exc)
            raise Unavailable(f"version {version} of model {name!r} is not loaded and the registry is "
                              "unreachable", retry_after_s=5) from None
        if model is None:
            refusal = self._refusal(name, version)
            raise self._refused_error(name, version, refusal.category if refusal else "artifact failed to load")
        self._trim_cache()  # pinned loads too: many old versions asked for in turn stay within the cache size
        return model

    @staticmethod
    def _refused_error(name: str, version: int, category: str) -> VersionRefused:
        return VersionRefused(f"version {version} of model {name!r} was refused: {category}", field="version")

    # -- polling --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """First sync (awaited, so a replica has its models before it takes traffic), then the poll loop."""
        self._stop.clear()
        await asyncio.to_thread(self.poll_once)
        self._maybe_beat()
        self._task = asyncio.create_task(self._run(), name="esteira-registry-poll")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
            self._task = None
        if self._beat is not None:
            await asyncio.gather(self._beat, return_exceptions=True)
            self._beat = None
        if self.heartbeat is not None and self.health.ok:  # registry down: stopping must not wait on it
            await asyncio.to_thread(self.heartbeat.stop, self._get_registry)
        registry, self._registry = self._registry, None
        if registry is not None:
            await asyncio.to_thread(registry.close)

    async def poll_now(self) -> None:
        await asyncio.to_thread(self.poll_once)

    async def _run(self) -> None:
        interval = float(self.config.poll_interval_s or 0.5)
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.to_thread(self.poll_once)
            except Exception:  # noqa: BLE001 - the loop must outlive any single failure
                log.exception("registry poll failed")
            self._maybe_beat()

    def _maybe_beat(self) -> None:
        """Start writing this replica's row in a thread when it is due and no write is in flight."""
        heartbeat = self.heartbeat
        if heartbeat is None or self._stop.is_set() or (self._beat is not None and not self._beat.done()):
            return
        try:
            state = self.replica_state()
            if heartbeat.due(state):
                write = asyncio.to_thread(heartbeat.record, self._get_registry, state)
                self._beat = asyncio.ensure_future(write)
        except Exception:  # noqa: BLE001 - the record must never stop the poll loop
            log.exception("could not start this replica's registry record")

    def replica_state(self) -> ReplicaState:
        """(served, refused) as the registry's ``gateway_replica`` row holds them: the serving, shadow and
        canary aliases (role ``serving``, ``shadow``, ``canary`` with its ``share``), other versions held
        loaded for pinned routes, and each refused version's full reason. A canary that takes no traffic
        (the serving version itself) is not listed under the canary alias."""
        serving = sorted(list(self._serving.items()), key=lambda item: item[0])  # the poll thread may swap
        served: dict[str, Any] = {}
        for (name, alias), m in serving:
            entry: dict[str, Any] = {"version": m.version, "flavor": m.flavor, "role": "shadow"}
            if alias == self.config.serving_alias:
                entry["role"] = "serving"
            elif alias == self.config.canary_alias:
                canary = self.canary(name)
                if canary is None or canary[0] is not m:
                    continue
                entry.update(role="canary", share=canary[1])
            served[f"{name}@{alias}"] = entry
        by_alias = {(m.name, m.version) for _, m in serving}
        with self._lock:
            pinned = [m for key, m in self._cache.items() if key not in by_alias]
            refused = {f"{name}:{version}": r.reason[:1000] for (name, version), r in self._refused.items()}
        for m in sorted(pinned, key=lambda m: (m.name, m.version)):
            served[f"{m.name}:{m.version}"] = {"version": m.version, "flavor": m.flavor, "role": "pinned"}
        return served, refused

    def poll_once(self) -> None:
        """Bring every served alias in step with the registry. Blocking: call it in a thread."""
        with self._poll_lock:
            try:
                registry = self._get_registry()
                names = self.config.models if self.config.models is not None else [
                    m.name for m in registry.list_models()]
                aliases = [self.config.serving_alias, *(a for a in (self.config.shadow_alias,
                                                                    self.config.canary_alias) if a)]
                for name in names:
                    held = registry.aliases(name)
                    for alias in aliases:
                        self._sync(registry, name, alias, held.get(alias))
                    self._sync_canary_share(registry, name, held)
            except Exception as exc:  # noqa: BLE001 - any registry failure degrades, never crashes serving
                self._mark_degraded(exc)
                return
            self._mark_ok()

    def _sync(self, registry: Any, name: str, alias: str, version: int | None) -> None:
        key = (name, alias)
        current = self._serving.get(key)
        if version is None:
            if current is not None and alias != self.config.serving_alias:
                del self._serving[key]  # a removed challenger stops shadowing, a removed canary stops routing
                self._notify(name, alias, None)
            # a removed serving alias keeps the last version answering: losing traffic is worse
            return
        if current is not None and current.version == version:
            return
        if self._refusal(name, version) is not None:
            self._drop_unloadable_canary(name, alias, version)
            return
        with self._lock:
            model = self._cache.get((name, version))
        if model is None:
            mv = registry.get_version(name, version)
            model = self._load(registry, mv, reason_alias=alias)
            if model is None:
                self._drop_unloadable_canary(name, alias, version)
                return
        self._serving[key] = model  # the swap: one reference, atomic for readers
        log.info("serving %s@%s = version %s (was %s)", name, alias, version, current and current.version)
        self._notify(name, alias, model)
        self._trim_cache()

    def _drop_unloadable_canary(self, name: str, alias: str, version: int) -> None:
        """The canary alias points at a version that cannot be loaded: the canary that had it before stops
        taking traffic too, since the registry no longer names it (production answers everything)."""
        if alias != self.config.canary_alias or (name, alias) not in self._serving:
            return
        del self._serving[(name, alias)]
        log.warning("canary of %s (version %s) refused: production answers every request", name, version)
        self._notify(name, alias, None)

    def _sync_canary_share(self, registry: Any, name: str, held: Mapping[str, int]) -> None:
        """Keep ``name``'s (canary, share) in step: the share is read only when the model has a canary (one
        indexed query); a share never set (an alias moved without ``start_canary``) is the registry's
        default first share."""
        alias = self.config.canary_alias
        canary = self._serving.get((name, alias)) if alias else None
        if canary is None or held.get(alias) != canary.version:  # type: ignore[arg-type]
            if self._canaries.pop(name, None) is not None:
                log.info("canary routing of %s stopped", name)
            return
        share = registry.canary_share(name)
        share = float(DEFAULT_CANARY_SHARE if share is None else share)
        previous = self._canaries.get(name)
        if previous is None or previous[0] is not canary or previous[1] != share:
            log.info("canary of %s = version %s with a share of %.3g", name, canary.version, share)
            self._canaries[name] = (canary, share)  # one tuple: a request sees a version and its own share

    def _load(self, registry: Any, mv: Any, *, reason_alias: str | None) -> LoadedModel | None:
        """Load and verify one version; on any failure other than the registry being down, refuse it."""
        try:
            predictor = registry.load_predictor(mv)
            model = LoadedModel.from_version(mv, predictor)
            _warm_up(model)
        except RegistryUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - hash mismatch, untrusted types, broken file, missing plugin
            self._refuse(registry, mv, exc, reason_alias)
            return None
        with self._lock:
            self._cache[(mv.model_name, mv.version)] = model
            self._cache.move_to_end((mv.model_name, mv.version))
        return model

    def _refuse(self, registry: Any, mv: Any, exc: Exception, alias: str | None) -> None:
        key = (mv.model_name, mv.version)
        reason = f"{type(exc).__name__}: {exc}"
        category = refusal_category(exc)
        with self._lock:
            first = key not in self._refused
            self._refused[key] = Refusal(time.monotonic(), reason, category)
        log.error("refusing %s version %s (%s): %s", mv.model_name, mv.version, category, reason)
        if self._on_refused is not None:
            self._on_refused(mv.model_name, mv.version)
        if not first:
            return
        try:
            registry.record_event(mv.model_name, "load_refused", version=mv.version, reason=reason[:3900],
                                  actor=self.actor, details={"alias": alias, "error": type(exc).__name__,
                                                             "category": category,
                                                             "artifact_sha256": mv.artifact_sha256})
        except Exception:  # noqa: BLE001 - the refusal stands even if the audit write fails
            log.exception("could not record load_refused for %s:%s", *key)

    def _refusal(self, name: str, version: int) -> Refusal | None:
        """The standing refusal of a version, or None (also once ``refused_retry_s`` has passed)."""
        with self._lock:
            entry = self._refused.get((name, version))
            if entry is None:
                return None
            if time.monotonic() - entry.at > self.config.refused_retry_s:
                del self._refused[(name, version)]
                return None
            return entry

    def _trim_cache(self) -> None:
        """Keep the serving versions plus the most recent others (an instant rollback target, pins)."""
        serving = {(m.name, m.version) for m in list(self._serving.values())}  # the poll thread may swap one
        with self._lock:
            spare = [key for key in self._cache if key not in serving]
            for key in spare[: max(0, len(spare) - self.config.pinned_cache_size)]:
                del self._cache[key]

    def _notify(self, name: str, alias: str, model: LoadedModel | None) -> None:
        if self._on_swap is not None:
            try:
                self._on_swap(name, alias, model)
            except Exception:  # noqa: BLE001 - metrics must not break a swap
                log.exception("swap listener failed")

    # -- registry health ------------------------------------------------------------------------------------

    def _get_registry(self) -> Any:
        with self._registry_lock:
            if self._registry is None:
                self._registry = self._registry_factory()
            return self._registry

    def _mark_ok(self) -> None:
        if not self.health.ok and self.health.degraded_since is not None:
            log.warning("registry reachable again")
        self.health = RegistryHealth(ok=True, last_ok_at=time.time())

    def _mark_degraded(self, exc: BaseException) -> None:
        if self.health.ok or self.health.degraded_since is None:
            log.warning("registry unreachable, serving what is loaded: %s", exc)
        self.health = RegistryHealth(ok=False, error=f"{type(exc).__name__}: {str(exc)[:500]}",
                                     last_ok_at=self.health.last_ok_at,
                                     degraded_since=self.health.degraded_since or time.time())

    def status(self) -> dict[str, Any]:
        """Readiness detail: the registry's health, what is served and each refused version's full reason."""
        with self._lock:
            refused = {f"{name}:{version}": refusal.reason for (name, version), refusal in self._refused.items()}
        return {
            "registry": self.health.as_dict(),
            "models": {f"{name}@{alias}": {"version": m.version, "flavor": m.flavor, "loaded_at": m.loaded_at}
                       for (name, alias), m in sorted(self._serving.items())},
            "refused": refused,
        }
