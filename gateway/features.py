"""Entity keys in, model inputs out: the gateway's side of the one feature fetcher.

The gateway does not compute features itself. For an entity-key request it asks the same library that
built the training set (``feature_repo``) for the same feature service (the one recorded on the model
version), so on-demand features are computed by the same registered function as in training and no skew
can creep in. It opens the project's store read-only: what a flow applied is what it serves, and no
project code is imported.

What is checked before the store is asked, against the version's signature: every join key present and of
its type, every request field and request feature present and of its type (an ``Int64`` field refuses
``2475.7``), nothing unknown. After: a row for which the store holds nothing at all is an unknown entity,
a 404 naming its keys; a row with some features missing is scored with them imputed, as in training.

How the read runs: through the feature service's compiled plan (:func:`feature_repo.online.online_plan`:
resolved once, then per request only ``OnlineStore.online_read`` per view, the value conversions and the
on-demand function), the same answers as Feast's ``get_online_features``. One entity of a service of two
views and an on-demand view (the example project's, SQLite) reads in 0.13-0.14 ms in-process, against
0.42-0.47 ms through ``get_online_features`` (``tests/test_online_read.py`` holds the two to the same values).

Where the read runs: Feast's online read is blocking. Against a network store (Redis) it runs in a worker
thread, so a slow store stalls one request and not the replica. Against the embedded SQLite file a small
read runs on the event loop, like a small prediction: the thread hop measured 0.6-0.8 ms here, more than
the read. Large reads always use a thread.

Concurrent requests share reads: lookups for the same feature service that are ready in the same turn of
the event loop (one ``asyncio.sleep(0)``, no timer, as :mod:`gateway.batching` does for predictions) are
read together, up to ``coalesce_max_rows`` entities, and each request gets its own rows back. A batch the
store refuses (a key it cannot read) is read again request by request, so each request gets its own answer;
a store that is down fails every request of the batch alike.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import InvalidInput, ModelNotFound, Unavailable
from gateway.signature import InputSpec, check_value, input_dtype, typed_specs

log = logging.getLogger(__name__)


class FeatureLookup(Protocol):
    """What the service needs from a feature store (a fake in unit tests, Feast for real)."""

    def warm(self, feature_services: Sequence[str]) -> None: ...

    async def lookup(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]],
                     request_data: Sequence[Mapping[str, Any]] | None) -> tuple[list[dict[str, Any]], list[bool]]:
        """Rows of features per entity row, and per row whether the store held anything for its keys."""
        ...


@dataclass
class _Asked:
    """One request's part of a shared read, and where its answer goes."""

    rows: Sequence[Mapping[str, Any]]
    request_data: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None
    answer: asyncio.Future[tuple[list[dict[str, Any]], list[bool]]]


@dataclass
class _SharedRead:
    asked: list[_Asked] = field(default_factory=list)
    rows: int = 0


def _per_row(request_data: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None, rows: int
             ) -> list[Mapping[str, Any]]:
    if request_data is None:
        return [{}] * rows
    if isinstance(request_data, Mapping):
        return [request_data] * rows
    return list(request_data)


class FeastLookup:
    """Online features through ``feature_repo`` (one ``FeatureStore`` per process, opened on first use).

    ``project``: the project folder whose ``feature_store.yaml`` describes the stores (default: the settings').
    ``inline_max_rows``: reads of at most this many entities from a local (SQLite) online store run on the
    event loop; 0 sends every read to a thread.
    ``coalesce_max_rows``: concurrent lookups of one service are read together up to this many entities
    (the gateway passes its ``batch_max_rows``); 0 or 1 reads every lookup alone.
    """

    def __init__(self, inline_max_rows: int = 8, project: str | None = None, coalesce_max_rows: int = 64) -> None:
        self._store: Any | None = None
        self._lock = threading.Lock()
        self._inline_max_rows = inline_max_rows
        self._project = project
        self._local: bool | None = None
        self._coalesce_max_rows = coalesce_max_rows
        self._shared: dict[str, _SharedRead] = {}  # the open shared read per service (event loop only)
        self._settling: set[asyncio.Task[None]] = set()
        self.shared_reads = 0  # reads made for two requests or more (for tests and debugging)

    def _open(self) -> Any:
        with self._lock:
            if self._store is None:
                from feature_repo.store import open_store

                self._store = open_store(self._project)  # read-only: serving never applies definitions
                self._local = getattr(self._store.config.online_store, "type", "") == "sqlite"
            return self._store

    def warm(self, feature_services: Sequence[str]) -> None:
        """Open the store and read each service once, before traffic: the first read imports Feast's
        online path and loads the registry (about a second), which must not land on a client's request.
        Best effort: a failure here is logged and the first request retries (and reports) it."""
        from feature_repo.online import online_lookup
        from feature_repo.services import service_plan

        try:
            store = self._open()
            for service in feature_services:
                plan = service_plan(store, service)
                # placeholder keys of each key's type: a miss is fine, the point is to run the whole read path
                row = {name: "" if "String" in dtype else 0 for name, dtype in (*plan.key_types, *plan.request)}
                online_lookup(store, service, [row])
        except Exception:  # noqa: BLE001 - warming must never stop a replica from starting
            log.warning("feature store warm-up failed; the first entity-key request will retry", exc_info=True)

    def _lookup(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]],
                request_data: Sequence[Mapping[str, Any]] | None) -> tuple[list[dict[str, Any]], list[bool]]:
        from feature_repo.online import online_lookup
        from feature_repo.services import FeatureServiceNotFound

        # The store's own errors name paths, hosts and library internals: logged here, never sent to a client.
        try:
            store = self._open()
        except Exception:  # noqa: BLE001 - any failure to open the store is "unavailable"
            log.warning("feature store cannot be opened", exc_info=True)
            raise Unavailable("the feature store cannot be opened (the gateway's log has the cause)") from None
        try:
            result = online_lookup(store, feature_service, entity_rows, request_data)
        except FeatureServiceNotFound:
            log.warning("feature service %r is not in the feature store", feature_service, exc_info=True)
            raise Unavailable(f"feature service {feature_service!r} of this model is not in the feature "
                              "store") from None
        except (ValueError, TypeError, KeyError):
            log.warning("feature store refused an entity lookup", exc_info=True)
            raise InvalidInput("the feature store refused these entity keys (the gateway's log has the cause)",
                               field="entities") from None
        except Exception:  # noqa: BLE001 - online store down, connection errors
            log.warning("online feature lookup failed", exc_info=True)
            raise Unavailable("online feature lookup failed (the gateway's log has the cause)") from None
        return result.rows, result.found

    async def lookup(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]],
                     request_data: Sequence[Mapping[str, Any]] | None) -> tuple[list[dict[str, Any]], list[bool]]:
        rows = len(entity_rows)
        if self._coalesce_max_rows < 2 or rows >= self._coalesce_max_rows:
            return await self._read(feature_service, entity_rows, request_data)
        loop = asyncio.get_running_loop()
        shared = self._shared.get(feature_service)
        if shared is not None and shared.rows + rows <= self._coalesce_max_rows:
            asked = _Asked(entity_rows, request_data, loop.create_future())
            shared.asked.append(asked)
            shared.rows += rows
            return await asked.answer
        shared = _SharedRead([_Asked(entity_rows, request_data, loop.create_future())], rows)
        self._shared[feature_service] = shared
        try:
            await asyncio.sleep(0)  # lookups that are ready in this turn of the loop join this one
        finally:
            if self._shared.get(feature_service) is shared:
                del self._shared[feature_service]
            if len(shared.asked) > 1:  # a task of its own: the others get their rows even if this one is cancelled
                task = loop.create_task(self._settle(feature_service, shared))
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)
        if len(shared.asked) == 1:
            return await self._read(feature_service, entity_rows, request_data)
        return await shared.asked[0].answer

    async def _read(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]],
                    request_data: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None
                    ) -> tuple[list[dict[str, Any]], list[bool]]:
        if self._local and len(entity_rows) <= self._inline_max_rows:
            return self._lookup(feature_service, entity_rows, request_data)
        return await asyncio.to_thread(self._lookup, feature_service, entity_rows, request_data)

    async def _settle(self, feature_service: str, shared: _SharedRead) -> None:
        """One read for every request of ``shared``, each given its own rows. A batch the store refuses
        (InvalidInput: keys it cannot read) is read again request by request, so the request at fault gets
        the refusal and the others their rows; any other failure (store down) is every request's."""
        self.shared_reads += 1
        rows = [row for asked in shared.asked for row in asked.rows]
        request_data = [data for asked in shared.asked for data in _per_row(asked.request_data, len(asked.rows))]
        try:
            features, found = await self._read(feature_service, rows, request_data)
        except InvalidInput:
            for asked in shared.asked:
                try:
                    _answer(asked, await self._read(feature_service, asked.rows, asked.request_data))
                except Exception as exc:  # noqa: BLE001 - handed to the request it belongs to
                    _answer(asked, exc)
            return
        except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
            for asked in shared.asked:
                _answer(asked, exc)
            return
        start = 0
        for asked in shared.asked:
            end = start + len(asked.rows)
            _answer(asked, (features[start:end], found[start:end]))
            start = end


def _answer(asked: _Asked, result: tuple[list[dict[str, Any]], list[bool]] | BaseException) -> None:
    if asked.answer.done():  # its request was cancelled meanwhile
        return
    if isinstance(result, BaseException):
        asked.answer.set_exception(result)
    else:
        asked.answer.set_result(result)


def _typed_row(row: Any, specs: Sequence[InputSpec], where: str, what: str) -> dict[str, Any]:
    """One object of the request checked against ``specs``: all present, none unknown, each of its type."""
    if not isinstance(row, Mapping):
        raise InvalidInput(f"{where} must be an object of {what}", field=where)
    names = {spec.name for spec in specs}
    unknown = sorted(k for k in row if k not in names)
    if unknown:
        raise InvalidInput(f"unexpected {what} {unknown[0]!r} (this model takes {sorted(names) or 'none'})",
                           field=f"{where}.{unknown[0]}")
    out = {}
    for spec in specs:
        if spec.name not in row:
            raise InvalidInput(f"missing {what} {spec.name!r}", field=f"{where}.{spec.name}")
        out[spec.name] = check_value(spec, row[spec.name], f"{where}.{spec.name}")
    return out


def entity_request(signature: Mapping[str, Any], entities: Sequence[Any], request_data: Any
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The request's entity rows and request data, checked against the version's signature.

    ``request_data`` is one object for every entity or a list with one per entity; it carries the request
    fields the feature service's on-demand views read and the model's request features.
    """
    key_specs = typed_specs(signature.get("entity_keys", []) or [], nullable=False)
    request_specs = typed_specs([*(signature.get("request_fields", []) or []),
                                 *({"name": n, "dtype": input_dtype(signature, n)}
                                   for n in signature.get("request_features", []) or [])], nullable=False)
    single = len(entities) == 1
    rows = [_typed_row(e, key_specs, "entities" if single else f"entities[{i}]", "entity key")
            for i, e in enumerate(entities)] if key_specs else [dict(e) for e in entities]
    if request_data is None:
        request_data = {}
    if isinstance(request_data, list):
        if len(request_data) != len(entities):
            raise InvalidInput("request_data must be one object, or one per entity", field="request_data")
        data = [_typed_row(r, request_specs, f"request_data[{i}]", "request field")
                for i, r in enumerate(request_data)]
    else:
        one = _typed_row(request_data, request_specs, "request_data", "request field")
        data = [one] * len(entities)
    return rows, data


def features_for(rows: Sequence[Mapping[str, Any]], found: Sequence[bool], feature_names: Sequence[str],
                 entity_rows: Sequence[Mapping[str, Any]], request_data: Sequence[Mapping[str, Any]]
                 ) -> list[dict[str, Any]]:
    """The model's inputs per row: looked-up features, then request features from the request data.

    A row for which the store held nothing at all is an unknown entity: 404, naming its keys.
    """
    out = []
    for index, (row, known, entity, extra) in enumerate(zip(rows, found, entity_rows, request_data, strict=True)):
        if not known:
            keys = ", ".join(f"{k}={v!r}" for k, v in entity.items())
            raise ModelNotFound(f"unknown entity: the feature store holds no features for {keys}",
                                field="entities" if len(rows) == 1 else f"entities[{index}]")
        selected = {}
        for name in feature_names:
            if name in extra:
                selected[name] = extra[name]
            elif name in row:
                selected[name] = row[name]
            else:
                raise Unavailable(f"the feature service does not provide model input {name!r}")
        out.append(selected)
    return out
