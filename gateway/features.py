"""Entity keys in, model inputs out: the gateway's side of the one feature fetcher.

The gateway does not compute features itself. For an entity-key request it asks the same module that
built the training set (``feature_repo.store``) for the same feature service (the one recorded on the
model version), so on-demand features are computed by the same registered function as in training and
no skew can creep in.

Where the read runs: Feast's online read is blocking. Against a network store (Redis) it runs in a worker
thread, so a slow store stalls one request and not the replica. Against the embedded SQLite file a small
read (about 0.4 ms for one entity, the on-demand view included) runs on the event loop, like a small
prediction: the thread hop measured 0.6-0.8 ms here, more than the read. Large reads always use a thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gateway.errors import InvalidInput, ModelNotFound, Unavailable

log = logging.getLogger(__name__)


class FeatureLookup(Protocol):
    """What the service needs from a feature store (a fake in unit tests, Feast for real)."""

    def warm(self, feature_services: Sequence[str]) -> None: ...

    async def lookup(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]],
                     request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
                     ) -> list[dict[str, Any]]: ...


class FeastLookup:
    """Online features through ``feature_repo.store`` (one ``FeatureStore`` per process, opened on first use).

    ``inline_max_rows``: reads of at most this many entities from a local (SQLite) online store run on the
    event loop; 0 sends every read to a thread.
    """

    def __init__(self, inline_max_rows: int = 8) -> None:
        self._store: Any | None = None
        self._lock = threading.Lock()
        self._inline_max_rows = inline_max_rows
        self._local: bool | None = None

    def _open(self) -> Any:
        with self._lock:
            if self._store is None:
                from feature_repo.store import open_store

                self._store = open_store(apply=False)  # serving only reads what a flow applied
                self._local = getattr(self._store.config.online_store, "type", "") == "sqlite"
            return self._store

    def warm(self, feature_services: Sequence[str]) -> None:
        """Open the store and read each service once, before traffic: the first read imports Feast's
        online path and loads the registry (about a second), which must not land on a client's request.
        Best effort: a failure here is logged and the first request retries (and reports) it."""
        from feature_repo.store import entity_keys, online_features, request_fields

        try:
            store = self._open()
            for service in feature_services:
                # key 0 and request fields 0: a miss is fine, the point is to run the whole read path
                row = {name: 0 for name in [*entity_keys(store, service), *request_fields(store, service)]}
                online_features(store, service, [row])
        except Exception:  # noqa: BLE001 - warming must never stop a replica from starting
            log.warning("feature store warm-up failed; the first entity-key request will retry", exc_info=True)

    def _lookup(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]],
                request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
        from feature_repo.store import FeatureServiceNotFound, online_features

        try:
            store = self._open()
        except Exception as exc:  # noqa: BLE001 - any failure to open the store is "unavailable"
            raise Unavailable(f"feature store unavailable: {exc}") from None
        try:
            return online_features(store, feature_service, entity_rows, request_data)
        except FeatureServiceNotFound as exc:
            raise Unavailable(f"feature service {feature_service!r} of this model is not in the feature "
                              f"store: {exc}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInput(f"entity lookup refused: {exc}", field="entities") from None
        except Exception as exc:  # noqa: BLE001 - online store down, connection errors
            raise Unavailable(f"online feature lookup failed: {type(exc).__name__}: {exc}") from None

    async def lookup(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]],
                     request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
                     ) -> list[dict[str, Any]]:
        if self._local and len(entity_rows) <= self._inline_max_rows:
            return self._lookup(feature_service, entity_rows, request_data)
        return await asyncio.to_thread(self._lookup, feature_service, entity_rows, request_data)


def features_for(rows: Sequence[Mapping[str, Any]], feature_names: Sequence[str],
                 entity_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Keep only the model's inputs from looked-up rows; an entity with no stored features is a 404."""
    out = []
    for index, (row, entity) in enumerate(zip(rows, entity_rows, strict=True)):
        selected = {name: row.get(name) for name in feature_names}
        stored = [value for name, value in selected.items() if name in row]
        if stored and all(value is None for value in stored):
            raise ModelNotFound(f"no features stored for entity {dict(entity)}", field=f"entities[{index}]")
        missing = [name for name in feature_names if name not in row]
        if missing:
            raise Unavailable(f"the feature service does not provide model input {missing[0]!r}")
        out.append(selected)
    return out
