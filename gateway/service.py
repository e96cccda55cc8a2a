"""Request handling without Ray: resolve the version, build its inputs, score, log, shadow, answer.

``ModelService`` is what every route calls. It takes its collaborators (model manager, feature lookup,
inference logger, metrics) as arguments, so tests drive it directly with tiny predictors and no HTTP,
and the Ray Serve deployment is only a thin shell around it.

The hot path for one row: one dict lookup for the loaded version, a per-column type check into numpy
arrays, the predictor call on the event loop (small requests; large ones go to a thread; small requests
that arrive together for one version share one call, see :mod:`gateway.batching`), a deque append for the
log. Shadow scoring runs in a worker thread after the answer is built.

Which version answers a request that names none: production's, or the canary's for the model's canary
share of callers (:meth:`ModelService.route`). The split is sticky: a request goes to the canary when
:func:`canary_bucket` of its routing key (the first entity's keys, else the request id, else a fresh random
id) is below the share, and the bucket is a hash of the model, the canary's version and the key, so the
same caller gets the same version for the canary's whole life, a larger share keeps every caller the
smaller one had, and each new canary draws its own slice of callers. Pinned routes (``/versions/{v}/``)
are never rerouted. Every answer is logged with its role (``production``, ``canary``, ``pinned``; the
challenger's outputs as ``shadow``), and every request whose version was chosen leaves a request record
(latency, status, rows) in the log, success or failure, for the canary's error-rate and latency guardrails.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.inference_log import ROLE_CANARY, ROLE_PINNED, ROLE_PRODUCTION, ROLE_SHADOW, canonical_label
from gateway.answered import AnsweredRequests, UnknownRequest
from gateway.batching import MicroBatcher
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, InvalidInput, ModelNotFound
from gateway.features import FeatureLookup, entity_request, features_for
from gateway.heartbeat import ReplicaHeartbeat, local_replica_id
from gateway.inference_log import FeedbackRecord, InferenceLogger, PredictionRecord, RequestRecord
from gateway.metrics import GatewayMetrics
from gateway.models import LoadedModel, ModelManager
from gateway.schemas import MAX_ROWS, FeedbackRequest, InferRequest, PredictRequest
from gateway.signature import (
    output_rows,
    rows_to_columns,
    tensors_to_columns,
    v2_datatype_for,
    v2_output_tensor,
)

log = logging.getLogger(__name__)

MAX_SOURCE_CHARS = 64
"""Longest caller-supplied feedback source kept in a label's ``sender``."""


def feedback_sender(scope: str, client: str | None, source: str | None = None) -> str:
    """Who sent a label, as stored with it: ``<token scope>@<client address>``, then `` <source>`` when the
    caller named one (``X-Feedback-Source``: printable ASCII, at most :data:`MAX_SOURCE_CHARS`)."""
    sender = f"{scope}@{client or 'unknown'}"
    if source:
        clean = "".join(ch for ch in source if " " <= ch <= "~")[:MAX_SOURCE_CHARS].strip()
        if clean:
            sender = f"{sender} {clean}"
    return sender


def new_request_id() -> str:
    return uuid.uuid4().hex


def canary_bucket(model: str, version: int, key: str) -> float:
    """A stable number in [0, 1) for ``key``: the request goes to the canary (``version``) when it is below
    the canary's share. Salted with the model and the canary's version: each canary draws its own callers,
    and moving the share up keeps every caller a smaller share had (the bucket does not move). 53 bits of
    blake2b, so the float is exact and never 1.0."""
    digest = hashlib.blake2b(f"{model}:{version}:{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def entity_routing_key(entities: Mapping[str, Any] | list[Mapping[str, Any]] | None) -> str | None:
    """The first entity's keys as one canonical string (names sorted, values as text, so ``42`` and ``"42"``
    are one caller), or None when the request has no entity."""
    first = entities if isinstance(entities, Mapping) else (entities[0] if entities else None)
    if not first:
        return None
    return json.dumps(sorted((str(k), str(v)) for k, v in first.items()), ensure_ascii=False, separators=(",", ":"))


def _project_root(config: GatewayConfig) -> str | None:
    if config.project:
        return str(Path(config.project).expanduser().resolve())
    from core.settings import get_settings

    project = get_settings().project
    return str(project) if project else None


class ModelService:
    """The gateway's request handling, independent of HTTP framework and of Ray."""

    def __init__(self, config: GatewayConfig, manager: ModelManager, *, metrics: GatewayMetrics | None = None,
                 inference_log: InferenceLogger | None = None, features: FeatureLookup | None = None,
                 answered: AnsweredRequests | None = None, clock: Callable[[], float] = time.time) -> None:
        from core.settings import FEEDBACK_HORIZON_S

        self.config = config
        self.manager = manager
        self.metrics = metrics or GatewayMetrics()
        self.inference_log = inference_log
        self.features = features
        self.clock = clock
        # without a log to look in (tests, log off): this replica's own answers only
        self.answered = answered or AnsweredRequests(config.feedback_horizon_s or FEEDBACK_HORIZON_S,
                                                     max_recent=config.feedback_index_size,
                                                     flush_interval_s=config.log_flush_interval_s, clock=clock)
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        # (model, version, route, role) -> its latency, request and row series: prometheus_client's labels()
        # looks each one up under a lock, three per request (12-15 us under cProfile); a series never moves once
        # made.
        self._series: dict[tuple[str, int, str, str], tuple[Any, Any, Any]] = {}
        self.batcher = MicroBatcher(config.batch_max_rows) if config.batch_max_rows > 1 else None
        # Set by the Ray Serve deployment, whose process this is; never in someone else's process (tests, tools).
        self.freeze_gc_after_start = False

    @property
    def project_root(self) -> str | None:
        """The project this replica reads Feast's configuration from (a shipped copy on a remote cluster)."""
        return _project_root(self.config)

    @classmethod
    def from_config(cls, config: GatewayConfig, *, replica_id: str | None = None) -> ModelService:
        """The real thing: registry from the config's URL, Feast lookup, inference log under the log root, and
        this replica's row in the registry under ``replica_id`` (default ``host:pid:<random>``)."""
        from core.settings import FEEDBACK_HORIZON_S, get_settings
        from registry import Registry

        config = config.resolved()
        metrics = GatewayMetrics()
        heartbeat = ReplicaHeartbeat(replica_id or local_replica_id(), get_settings().gateway_heartbeat_s,
                                     project=_project_root(config))

        def open_registry() -> Registry:
            return Registry.from_url(config.database_url, config.artifact_root, migrate=False)

        def on_swap(name: str, alias: str, model: LoadedModel | None) -> None:
            if model is None:
                metrics.loaded_version.remove(name, alias)
            else:
                metrics.loaded_version.labels(name, alias).set(model.version)

        manager = ModelManager(config, open_registry, on_swap=on_swap,
                               on_refused=lambda name, _v: metrics.load_refused.labels(name).inc(),
                               heartbeat=heartbeat)
        inference_log = None
        if config.log_inference:
            inference_log = InferenceLogger(
                config.inference_log_uri or "", buffer_size=config.log_buffer_size,
                flush_interval_s=config.log_flush_interval_s, max_unflushed_records=config.log_max_unflushed_records,
                profile_window_s=config.profile_window_s, profile_process=config.profile_in_subprocess,
                on_drop=lambda n: metrics.log_dropped.inc(n), on_error=metrics.log_errors.inc,
                on_quarantine=lambda n: metrics.feedback_quarantined.inc(n))
        answered = AnsweredRequests(
            config.feedback_horizon_s or FEEDBACK_HORIZON_S, max_recent=config.feedback_index_size,
            log_root=config.inference_log_uri if config.log_inference else None,
            flush_interval_s=config.log_flush_interval_s)
        features = None
        if config.feast_lookup:
            from gateway.features import FeastLookup

            features = FeastLookup(inline_max_rows=config.inline_lookup_max_rows, project=config.project,
                                   coalesce_max_rows=config.batch_max_rows)
        return cls(config, manager, metrics=metrics, inference_log=inference_log, features=features,
                   answered=answered)

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.inference_log is not None:
            # whylogs' import is heavy (seconds when bytecode is not cached) and holds module import
            # locks the request path may also need: finish it before the replica takes traffic.
            await asyncio.to_thread(self.inference_log.warm_up)
            self.inference_log.start()
        await self.manager.start()
        self.metrics.registry_up.set(1 if self.manager.health.ok else 0)
        answering = [*self.manager.served().values(),
                     *(canary[0] for name in self.manager.served() if (canary := self.manager.canary(name)))]
        services = sorted({m.feature_service for m in answering if m.feature_service})
        if self.features is not None and services:
            await asyncio.to_thread(self.features.warm, services)
        if self.freeze_gc_after_start:
            # Everything loaded so far (Ray, FastAPI, the models, whylogs, Feast) lives as long as the
            # replica. Left in the collector's oldest generation, each full collection walks ~300,000
            # objects (178 ms measured), a pause every request in flight waits for; frozen, it walks
            # only what came later. Collected first, so no garbage is frozen. Before any traffic.
            gc.collect()
            gc.freeze()

    async def stop(self) -> None:
        await self.manager.stop()
        if self._shadow_tasks:
            await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
        if self.inference_log is not None:
            await asyncio.to_thread(self.inference_log.stop)

    # -- health ---------------------------------------------------------------------------------------------

    def ready(self, *, detail: bool = True) -> tuple[bool, dict[str, Any]]:
        """Ready when every model it should serve has a loaded version: the configured ones, or, serving
        everything, once a whole registry poll has completed (a replica half-way through its first load
        pass must not take traffic for a model it has not loaded yet). A registry outage does not make a
        replica unready (it still answers with what it holds): it shows as ``status: degraded``.

        ``detail=False`` is the public probe's answer: ``ready`` and ``status``, nothing else. The detail
        (served versions, refusal reasons, the registry's error text, the project folder) names paths, hashes
        and exception text, so it is for the admin token only."""
        health = self.manager.health
        served = self.manager.served()
        self.metrics.registry_up.set(1 if health.ok else 0)
        expected = self.config.models or []
        missing = [name for name in expected if name not in served]
        ready = bool(served) and not missing if expected else health.last_ok_at is not None
        state = "ok" if ready and health.ok else ("degraded" if ready else "not_ready")
        if not detail:
            return ready, {"ready": ready, "status": state}
        status = self.manager.status()
        status.update(ready=ready, status=state, project=self.project_root)
        if missing:
            status["missing"] = missing
        return ready, status

    def model_ready(self, name: str, version: int | None = None) -> bool:
        model = self.manager.current(name)
        if model is None:
            return False
        return version is None or model.version == version or any(
            m.version == version for m in self.manager.served().values() if m.name == name)

    # -- resolving ------------------------------------------------------------------------------------------

    async def resolve(self, name: str, version: int | None) -> LoadedModel:
        """The version a pinned route names, or (``version=None``) production's; never the canary."""
        if version is None:
            return self.manager.require(name)
        current = self.manager.current(name)
        if current is not None and current.version == version:
            return current
        return await self.manager.pinned(name, version)

    async def route(self, name: str, version: int | None, key: str) -> tuple[LoadedModel, str]:
        """The version that answers a request and its role in the log.

        A pinned version (``version``) answers as ``pinned``, whichever version it is: its callers chose it,
        so its rows are no random sample of traffic and stay out of production's and the canary's. Otherwise
        the canary answers (``canary``) when the model has one and :func:`canary_bucket` of ``key`` is below
        its share, and production (``production``) every other request."""
        if version is not None:
            return await self.resolve(name, version), ROLE_PINNED
        model = self.manager.require(name)
        canary = self.manager.canary(name)
        if canary is not None and canary_bucket(name, canary[0].version, key) < canary[1]:
            return canary[0], ROLE_CANARY
        return model, ROLE_PRODUCTION

    # -- predict --------------------------------------------------------------------------------------------

    async def predict(self, name: str, body: PredictRequest, *, version: int | None = None,
                      request_id: str | None = None, route: str = "v1") -> dict[str, Any]:
        """Score a plain JSON request; the answer names the model and version that produced it."""
        started = time.perf_counter()
        rid = request_id or body.request_id or new_request_id()
        model: LoadedModel | None = None
        role = ROLE_PRODUCTION
        try:
            model, role = await self.route(name, version, entity_routing_key(body.entities) or rid)
            columns = await self._columns_v1(model, body)
            outputs = await self._score(model, columns)
            logged = self._after(model, role, rid, columns, outputs, shadow=version is None)
            rows = output_rows(outputs, model.signature.get("classes"))
            result = {"model": model.name, "version": model.version, "request_id": rid, "predictions": rows}
        except Exception as exc:
            self._failed(name, route, model, role, rid, started, exc)
            raise
        self._count(model, role, route, rid, started, len(rows), logged)
        return result

    async def infer(self, name: str, body: InferRequest, *, version: int | None = None,
                    request_id: str | None = None) -> dict[str, Any]:
        """Score an Open Inference Protocol v2 request."""
        started = time.perf_counter()
        route = "v2"
        rid = body.id or request_id or new_request_id()
        model: LoadedModel | None = None
        role = ROLE_PRODUCTION
        try:
            model, role = await self.route(name, version, rid)
            columns = tensors_to_columns(body.inputs, model.specs)
            self._check_rows(columns)
            outputs = await self._score(model, columns)
            wanted = [o.name for o in body.outputs] if body.outputs else list(outputs)
            for index, out_name in enumerate(wanted):
                if out_name not in outputs:
                    raise InvalidInput(f"unknown output {out_name!r} (the model gives {sorted(outputs)})",
                                       field=f"outputs[{index}].name")
            logged = self._after(model, role, rid, columns, outputs, shadow=version is None)
            classes = model.signature.get("classes")
            result = {"model_name": model.name, "model_version": str(model.version), "id": rid,
                      "outputs": [v2_output_tensor(out_name, outputs[out_name],
                                                   classes if out_name == "probabilities" else None)
                                  for out_name in wanted]}
        except Exception as exc:
            self._failed(name, route, model, role, rid, started, exc)
            raise
        self._count(model, role, route, rid, started, len(next(iter(columns.values()))), logged)
        return result

    async def _columns_v1(self, model: LoadedModel, body: PredictRequest) -> dict[str, np.ndarray]:
        if body.inputs is not None and body.entities is not None:
            raise InvalidInput("give either 'inputs' (features) or 'entities' (keys to look up), not both",
                               field="entities")
        if body.inputs is not None:
            if body.request_data is not None:
                raise InvalidInput("'request_data' goes with 'entities', not with inline 'inputs'",
                                   field="request_data")
            rows = [body.inputs] if isinstance(body.inputs, dict) else body.inputs
            if len(rows) > MAX_ROWS:
                raise InvalidInput(f"at most {MAX_ROWS} rows per request", field="inputs")
            return rows_to_columns(rows, model.specs)
        if body.entities is not None:
            return await self._lookup(model, body)
        raise InvalidInput("give 'inputs' (features) or 'entities' (keys for an online feature lookup)",
                           field="inputs")

    async def _lookup(self, model: LoadedModel, body: PredictRequest) -> dict[str, np.ndarray]:
        if self.features is None:
            raise InvalidInput("entity lookups are turned off on this gateway: send 'inputs'", field="entities")
        if not model.feature_service:
            raise InvalidInput(f"model {model.name!r} version {model.version} has no feature service: send "
                               "'inputs'", field="entities")
        entities = [body.entities] if isinstance(body.entities, dict) else list(body.entities or [])
        if not entities:
            raise InvalidInput("no entities to look up", field="entities")
        if len(entities) > MAX_ROWS:
            raise InvalidInput(f"at most {MAX_ROWS} entities per request", field="entities")
        keys, request_data = entity_request(model.signature, entities, body.request_data)
        rows, found = await self.features.lookup(model.feature_service, keys, request_data)
        selected = features_for(rows, found, [spec.name for spec in model.specs], keys, request_data)
        return rows_to_columns(selected, model.specs, field_prefix="features")

    @staticmethod
    def _check_rows(columns: Mapping[str, np.ndarray]) -> None:
        if columns and len(next(iter(columns.values()))) > MAX_ROWS:
            raise InvalidInput(f"at most {MAX_ROWS} rows per request", field="inputs")

    async def _score(self, model: LoadedModel, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the predictor: on the loop for small requests (a thread hop costs more than the model),
        in a worker thread for large ones so one big batch cannot stall every other request. Small requests
        that arrive together for the same version share one call (:mod:`gateway.batching`)."""
        rows = len(next(iter(columns.values()))) if columns else 0
        try:
            if rows <= self.config.inline_predict_max_rows:
                if self.batcher is not None and rows <= self.batcher.max_rows:
                    outputs = await self.batcher.predict((model.name, model.version), model.predictor, columns, rows)
                else:
                    outputs = model.predictor.predict(columns)
            else:
                outputs = await asyncio.to_thread(model.predictor.predict, columns)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInput(f"model {model.name}:{model.version} cannot score this input: {exc}",
                               field="inputs") from None
        return {key: np.asarray(value) for key, value in outputs.items()}

    # -- after the answer: log and shadow -------------------------------------------------------------------

    def _after(self, model: LoadedModel, role: str, rid: str, columns: dict[str, np.ndarray],
               outputs: dict[str, np.ndarray], *, shadow: bool) -> PredictionRecord | None:
        """Remember the answer for feedback and start the shadow; the prediction record to log (with the
        request's record, once the answer is built: :meth:`_count`), None without a log."""
        now = self.clock()
        self.answered.add(model.name, rid, now)  # feedback may name this request from now on
        record = None
        if self.inference_log is not None:
            record = PredictionRecord(rid, now, model.name, model.version, role, columns, outputs)
        if shadow and self.config.shadow_alias:
            challenger = self.manager.current(model.name, self.config.shadow_alias)
            if challenger is not None and challenger.version != model.version:
                task = asyncio.get_running_loop().create_task(self._shadow(challenger, rid, now, columns))
                self._shadow_tasks.add(task)
                task.add_done_callback(self._shadow_tasks.discard)
        return record

    async def _shadow(self, challenger: LoadedModel, rid: str, now: float, columns: dict[str, np.ndarray]) -> None:
        """Score the same rows with the challenger; its outputs are logged, never returned."""
        try:
            names = [spec.name for spec in challenger.specs]
            if any(name not in columns for name in names):
                raise InvalidInput(f"challenger {challenger.name}:{challenger.version} needs other features")
            inputs = {name: columns[name] for name in names}
            outputs = await asyncio.to_thread(challenger.predictor.predict, inputs)
            outputs = {key: np.asarray(value) for key, value in outputs.items()}
            self.metrics.rows.labels(challenger.name, str(challenger.version), ROLE_SHADOW).inc(
                len(next(iter(inputs.values()))))
            if self.inference_log is not None:
                self.inference_log.log_prediction(PredictionRecord(rid, now, challenger.name, challenger.version,
                                                                   ROLE_SHADOW, inputs, outputs))
        except Exception:  # noqa: BLE001 - a failing challenger must never touch production
            self.metrics.shadow_errors.labels(challenger.name).inc()
            log.debug("shadow prediction failed", exc_info=True)

    # -- metadata -------------------------------------------------------------------------------------------

    async def metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Open Inference Protocol v2 model metadata."""
        model = await self.resolve(name, version)
        versions = sorted({str(m.version) for m in [model, self.manager.current(name)] if m is not None})
        outputs = []
        classes = model.signature.get("classes") or []
        for item in model.signature.get("outputs", []) or []:
            if "name" in item:
                per_class = item["name"] == "probabilities" and classes
                outputs.append({"name": str(item["name"]), "datatype": v2_datatype_for(str(item.get("dtype", ""))),
                                "shape": [-1, len(classes)] if per_class else [-1]})
        return {"name": model.name, "versions": versions, "platform": f"esteira-{model.flavor}",
                "inputs": [{"name": s.name, "datatype": s.v2_datatype, "shape": [-1]} for s in model.specs],
                "outputs": outputs}

    def models(self) -> dict[str, Any]:
        """Each served model's production version and signature, and its shadow and canary (version, share)."""
        out = {}
        for name, model in sorted(self.manager.served().items()):
            shadow = self.manager.current(name, self.config.shadow_alias) if self.config.shadow_alias else None
            canary = self.manager.canary(name)
            signature = model.signature
            out[name] = {"version": model.version, "flavor": model.flavor, "task": signature.get("task"),
                         "feature_service": model.feature_service,
                         "inputs": [{"name": s.name, "dtype": s.dtype, "nullable": s.nullable} for s in model.specs],
                         "entity_keys": signature.get("entity_keys", []),
                         "request_data": [*signature.get("request_fields", []),
                                          *({"name": n} for n in signature.get("request_features", []))],
                         "outputs": signature.get("outputs", []),
                         **({"classes": signature["classes"]} if signature.get("classes") else {}),
                         "shadow_version": shadow.version if shadow else None,
                         "canary_version": canary[0].version if canary else None,
                         "canary_share": canary[1] if canary else None}
        return {"models": out}

    # -- feedback -------------------------------------------------------------------------------------------

    async def feedback(self, name: str, body: FeedbackRequest, *, scope: str = "open", client: str | None = None,
                       source: str | None = None) -> dict[str, Any]:
        """Queue ground-truth labels for earlier answers (joined by request id in the inference log).

        Every label is checked before any is queued: it must be a class of the model (or a number for a
        regression), and is stored as that class (``1``, ``"1"``, ``true`` all become the class ``1``), so one
        model's labels share one type in the log. Its request id must be one this gateway answered within
        the feedback horizon (:mod:`gateway.answered`): a single label for another id is a 404 naming it; in
        a batch such labels are left out and listed (``rejected``, ``rejected_request_ids``). Each stored
        label carries its ``sender`` (:func:`feedback_sender`): ``scope`` is the token that let it in.
        """
        try:
            model = self.manager.current(name)
            if model is None:
                raise ModelNotFound(f"model {name!r} is not served", field="name")
            items = body.all_items()
            labels = self._feedback_labels(model, items, batch=body.items is not None)
            unknown = await self._unanswered(name, [item.request_id for item in items])
            if unknown and body.items is None:
                raise UnknownRequest(self.answered.not_known_message(name, unknown[0]), field="request_id")
        except GatewayError as exc:
            if isinstance(exc, UnknownRequest):
                self.metrics.feedback_rejected.labels(name).inc()
            self._count_error(name, "feedback", exc)
            raise
        refused = set(unknown)
        sender = feedback_sender(scope, client, source)
        accepted = dropped = rejected = 0
        now = self.clock()
        for item, label in zip(items, labels, strict=True):
            if item.request_id in refused:
                rejected += 1
                continue
            ok = self.inference_log is not None and self.inference_log.log_feedback(
                FeedbackRecord(item.request_id, item.row, label, now, name, sender))
            accepted += int(bool(ok))
            dropped += int(not ok)
        if rejected:
            self.metrics.feedback_rejected.labels(name).inc(rejected)
        return {"model": name, "accepted": accepted, "dropped": dropped, "rejected": rejected,
                "rejected_request_ids": unknown}

    @staticmethod
    def _feedback_labels(model: LoadedModel, items: list[Any], *, batch: bool) -> list[Any]:
        """Each item's label as the model's class (a float for a regression); a 422 names the first that is not."""
        classes = model.signature.get("classes")
        task = model.signature.get("task")
        labels = []
        for index, item in enumerate(items):
            try:
                labels.append(canonical_label(item.label, classes, task))
            except ValueError as exc:
                where = f"items[{index}].label" if batch else "label"
                raise InvalidInput(f"model {model.name!r}: {exc}", field=where) from None
        return labels

    async def _unanswered(self, name: str, request_ids: list[str]) -> list[str]:
        """The ids (each once) no replica is known to have answered within the horizon: this replica's memory
        first, then the inference log (file reads, in a worker thread). Ids still unknown are looked for again
        for up to ``feedback_wait_s``: a label sent right after its answer often reaches another replica
        before the answering one has written its log (within its flush interval). The log's listing is read
        at most once per flush interval (:class:`gateway.answered.LoggedAnswers`), however often this looks."""
        unknown = self.answered.unknown_recent(name, request_ids)
        if not unknown or self.answered.logged is None:
            return unknown
        unknown = await asyncio.to_thread(self.answered.unknown_logged, name, unknown)
        wait = self.config.feedback_wait_s
        wait = min(self.config.log_flush_interval_s + 0.5, 5.0) if wait is None else wait
        deadline = time.monotonic() + wait
        while unknown and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, max(self.config.log_flush_interval_s / 2, 0.05)))
            unknown = self.answered.unknown_recent(name, unknown)
            if unknown:
                unknown = await asyncio.to_thread(self.answered.unknown_logged, name, unknown)
        return unknown

    # -- metrics --------------------------------------------------------------------------------------------

    def _count(self, model: LoadedModel, role: str, route: str, rid: str, started: float, rows: int,
               prediction: PredictionRecord | None) -> None:
        """An answered request: its metrics, and its prediction and request records in the log."""
        elapsed = time.perf_counter() - started
        key = (model.name, model.version, route, role)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= 1024:  # versions come and go over a replica's life: keep the cache bounded
                self._series.clear()
            m = self.metrics
            version = str(model.version)
            series = self._series[key] = (m.latency.labels(model.name, route),
                                          m.requests.labels(model.name, version, route, "200"),
                                          m.rows.labels(model.name, version, role))
        latency, requests, scored = series
        latency.observe(elapsed)
        requests.inc()
        scored.inc(rows)
        self._log_request(model, role, rid, started, 200, rows, elapsed, prediction)

    def _log_request(self, model: LoadedModel, role: str, rid: str, started: float, status: int, rows: int,
                     elapsed: float | None = None, prediction: PredictionRecord | None = None) -> None:
        """The request record of a request whose version was chosen (answered or failed), queued with its
        prediction record when it has one (one buffer slot: both are kept or both dropped); never raises."""
        if self.inference_log is None:
            return
        if elapsed is None:
            elapsed = time.perf_counter() - started
        try:
            when = prediction.timestamp if prediction is not None else self.clock()
            request = RequestRecord(rid, when, model.name, model.version, role, elapsed * 1000.0, status, rows)
            if prediction is not None:
                self.inference_log.log_prediction(prediction, request)
            else:
                self.inference_log.log_request(request)
        except Exception:  # noqa: BLE001 - logging never fails a prediction
            log.exception("inference log append failed")

    def _failed(self, name: str, route: str, model: LoadedModel | None, role: str, rid: str, started: float,
                exc: Exception) -> None:
        """Count a failed request and log it under the version it was routed to (none when routing itself
        failed): a canary's errors are the guardrail's evidence, whatever the request's status."""
        status = exc.status_code if isinstance(exc, GatewayError) else 500  # anything else, the app answers 500
        if isinstance(exc, GatewayError):
            self._count_error(name, route, exc)
        if model is not None:
            self._log_request(model, role, rid, started, status, 0)

    def _count_error(self, name: str, route: str, exc: GatewayError) -> None:
        model = name if self.manager.current(name) is not None else "_unknown"  # bound label cardinality
        self.metrics.errors.labels(model, route, str(exc.status_code), type(exc).__name__).inc()
