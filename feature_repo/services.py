"""What a feature service needs and gives: its features in order, its join keys, its request fields.

Training builds its input matrix in :func:`feature_schema`'s order and the gateway builds its request
signature from the same list, so the two cannot disagree. The answers come from Feast's registry (what was
applied), resolved once per service and kept for a minute per store object: registry lookups cost
milliseconds each and the gateway asks on every entity-key request.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

FeatureKind = Literal["numeric", "categorical"]

PLAN_TTL_SECONDS = 60.0
"""The Feast registry cache TTL esteira configures: a re-apply elsewhere shows within a minute."""


class FeatureServiceNotFound(ValueError):
    """Raised when a feature service name is not in the registry; names the known ones."""

    def __init__(self, name: str, known: Sequence[str]):
        self.name = name
        self.known = list(known)
        super().__init__(
            f"feature service {name!r} not found in the Feast registry; known services: "
            f"{', '.join(sorted(self.known)) or '(none: apply the project first, `esteira features apply`)'}"
        )


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of a service, as training and the gateway must both see it."""

    name: str
    view: str
    dtype: str  # Feast type name: Int64, Float64, String, Bool, ...
    kind: FeatureKind
    stored: bool  # from a materialized view (looked up by key), not computed on demand


@dataclass(frozen=True)
class ServicePlan:
    """A feature service resolved against the registry."""

    service: Any
    keys: tuple[str, ...]
    request: tuple[tuple[str, str], ...]  # (field, Feast dtype) of the request sources its views read
    schema: tuple[FeatureSpec, ...]
    key_types: tuple[tuple[str, str], ...] = ()
    loaded: float = 0.0

    @property
    def request_names(self) -> list[str]:
        return [name for name, _ in self.request]


_PLANS: weakref.WeakKeyDictionary[Any, dict[str, ServicePlan]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def forget_plans(store: Any | None = None) -> None:
    """Drop resolved services (after an apply: the next lookup reads the registry again)."""
    with _LOCK:
        if store is None:
            _PLANS.clear()
        else:
            _PLANS.pop(store, None)


def get_feature_service(store: FeatureStore, feature_service: str) -> FeatureService:
    """Look up a feature service, raising :class:`FeatureServiceNotFound` with the known names."""
    try:
        return store.get_feature_service(feature_service)
    except Exception as exc:
        known = [fs.name for fs in store.list_feature_services()]
        if feature_service in known:  # some other failure: do not hide it
            raise
        raise FeatureServiceNotFound(feature_service, known) from exc


def view_of(store: FeatureStore, name: str) -> Any:
    """A feature view or on-demand feature view by name."""
    try:
        return store.get_feature_view(name)
    except Exception:
        return store.get_on_demand_feature_view(name)


def kind_of(dtype: Any) -> FeatureKind:
    name = str(dtype)
    return "categorical" if ("String" in name or "Bytes" in name) else "numeric"


def service_plan(store: FeatureStore, feature_service: str) -> ServicePlan:
    """The service's keys, request fields and features (cached per store for :data:`PLAN_TTL_SECONDS`)."""
    now = time.monotonic()
    with _LOCK:
        plan = _PLANS.get(store, {}).get(feature_service)
    if plan is not None and now - plan.loaded < PLAN_TTL_SECONDS:
        return plan
    fs = get_feature_service(store, feature_service)
    keys: dict[str, str] = {}
    request: dict[str, str] = {}
    schema: list[FeatureSpec] = []
    for projection in fs.feature_view_projections:
        view = view_of(store, projection.name)
        on_demand = type(view).__name__ == "OnDemandFeatureView"
        join_key_map = getattr(projection, "join_key_map", None) or {}
        for col in getattr(view, "entity_columns", []) or []:
            if not col.name.startswith("__dummy"):  # named as the projection maps it (Feast's join-key map)
                keys.setdefault(join_key_map.get(col.name, col.name), str(col.dtype))
        for source in getattr(view, "source_request_sources", {}).values():
            for field in source.schema:
                request.setdefault(field.name, str(field.dtype))
        schema.extend(FeatureSpec(name=f.name, view=projection.name, dtype=str(f.dtype), kind=kind_of(f.dtype),
                                  stored=not on_demand)
                      for f in projection.features)
    plan = ServicePlan(fs, tuple(keys), tuple(request.items()), tuple(schema), tuple(keys.items()), now)
    with _LOCK:
        _PLANS.setdefault(store, {})[feature_service] = plan
    return plan


def feature_schema(store: FeatureStore, feature_service: str) -> list[FeatureSpec]:
    """Features of a service in a stable order (view by view, field by field), with type and kind."""
    return list(service_plan(store, feature_service).schema)


def feature_names(store: FeatureStore, feature_service: str) -> list[str]:
    """Feature column names of a service, in the order of :func:`feature_schema`."""
    return [s.name for s in feature_schema(store, feature_service)]


def feature_kinds(store: FeatureStore, feature_service: str) -> dict[str, FeatureKind]:
    """``{feature name: "numeric" | "categorical"}`` for building preprocessors and signatures."""
    return {s.name: s.kind for s in feature_schema(store, feature_service)}


def entity_keys(store: FeatureStore, feature_service: str) -> list[str]:
    """Join keys the service's views need, in view order (several for composite keys or several entities)."""
    return list(service_plan(store, feature_service).keys)


def request_fields(store: FeatureStore, feature_service: str) -> list[str]:
    """Request-data fields the service's on-demand views read."""
    return service_plan(store, feature_service).request_names
