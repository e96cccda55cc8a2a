"""Latest feature values from the online store: the serving half of the one fetcher.

Same feature service, same on-demand functions as :func:`feature_repo.offline.training_frame`. Feast answers
an unknown entity with nulls, not an error; :class:`OnlineRows` also says, per row, whether the store held
anything at all for its keys (Feast's per-field status), so the gateway can answer "unknown entity" (404)
instead of scoring a row of nothing.

How a read runs. ``FeatureStore.get_online_features`` redoes, on every call, work that depends only on the
feature service and the registry: it resolves the service into views, requested features, join keys and
value types (cached by Feast, but the cache key and copies of the resolved lists are rebuilt per call),
builds a response protobuf of every column, runs the on-demand view through that response (through the
``@typechecked`` view class, which checks every argument of every call) and converts the whole response back
to Python. For one entity of a service of two views and an on-demand view (the example project's, SQLite)
that is 0.42-0.47 ms per call in-process, of which the two ``online_read`` calls take about 0.07 ms.

So each feature service is compiled once into an :class:`OnlinePlan`: the views with the service's
projections and the features to read from each (resolved by the function ``get_online_features`` itself
resolves with), the service's ``OnlineStore`` object, the join keys' value types, the on-demand views'
python-mode transformations and the columns each may see. A read then only converts the keys to
``EntityKeyProto`` values, calls ``OnlineStore.online_read(config, table, entity_keys, requested_features)``
once per view (the store serializes the keys with the configured entity key serialization version, as it
does for Feast), converts the values back, and runs each on-demand function on the same input columns as
Feast, with the same protobuf round trip of its outputs: 0.13-0.14 ms for the same read. Conversions use
Feast's own ``python_values_to_proto_values`` and ``feast_value_type_to_python_type``, except for plain
scalars, where those are the identity and a shortcut gives the same value. The values, nulls, unknown keys
and found flags are the ones ``get_online_features`` gives (``tests/test_online_read.py`` compares them on
SQLite and Redis). Feast 0.67 applies no TTL on the online path (statuses are PRESENT or NOT_FOUND; an old
row is served as stored, feast-dev/feast 1802), and neither does the plan: an expired row reads the same.

A plan belongs to the :class:`feature_repo.services.ServicePlan` it was compiled from: when that is
resolved again (every :data:`feature_repo.services.PLAN_TTL_SECONDS`, or after
:func:`feature_repo.services.forget_plans`, as after an apply), the next read compiles again, so a registry
change reaches the compiled path as it reaches everything else. What the plan does not cover goes through
``get_online_features`` unchanged (:func:`feast_lookup`): pre-computed service vectors, entity-less views,
renamed join keys, versioned views, on-demand views in pandas or substrait mode, written to the online store
or with aggregations, and Feast's own metrics or MLflow logging when they are turned on.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from feature_repo.services import ServicePlan, service_plan

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineRows:
    """One dict per entity row (keys and every feature of the service, in order) and, per row, whether
    any stored (materialized) feature was found for its keys."""

    rows: list[dict[str, Any]]
    found: list[bool] = field(default_factory=list)


def plain(value: Any) -> Any:
    """NaN and numpy scalars to plain Python, so a missing value reads as None."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# -- the compiled plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ViewRead:
    """One feature view of the plan: what ``OnlineStore.online_read`` is asked for, and how to read it."""

    table: Any  # the FeatureView with the service's projection, as Feast resolved it
    features: tuple[str, ...]  # requested features (the service's, plus what an on-demand view reads)
    join_keys: frozenset[str]  # the view's join keys (an EntityKeyProto lists them in the request's order)
    types: tuple[Any, ...]  # ValueType per feature: OnlineResponse.to_dict's type-aware conversion
    counted: tuple[str, ...]  # features that are stored features of the service: a hit on one makes a row found


@dataclass(frozen=True)
class _OnDemandStep:
    """One python-mode on-demand view: its function, the columns it must not see, what the service takes."""

    transformation: Any  # the view's PythonTransformation (its udf, as Feast runs it)
    singleton: bool  # the udf takes one value per column (OnDemandFeatureView.singleton)
    aliases: tuple[tuple[str, str], ...]  # (view__feature, feature) of its sources: both names are passed
    outputs: tuple[tuple[str, Any], ...]  # (feature, ValueType from the view's schema) the service asks for
    hidden: frozenset[str]  # features of views it does not declare as sources (feast-dev/feast 6158)


@dataclass(frozen=True)
class OnlinePlan:
    """A feature service compiled for :func:`read_plan`; see the module docstring."""

    source: ServicePlan  # the resolution it was compiled from: a new one means compile again
    online_store: Any
    config: Any
    key_types: Mapping[str, Any]  # join key -> ValueType (Feast's entity type map)
    join_keys: frozenset[str]
    request: frozenset[str]  # request fields the on-demand views read
    views: tuple[_ViewRead, ...]
    on_demand: tuple[_OnDemandStep, ...]
    feature_types: Mapping[str, Any]  # feature -> ValueType for the stored features (to_dict's map)


@dataclass(frozen=True)
class _Unsupported:
    """A service the plan does not cover: read through ``get_online_features`` (the reason is logged when
    it changes)."""

    source: ServicePlan
    reason: str


_PLANS: weakref.WeakKeyDictionary[Any, dict[str, OnlinePlan | _Unsupported]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def online_plan(store: FeatureStore, feature_service: str) -> OnlinePlan | None:
    """The compiled plan of ``feature_service`` (compiled on first use and again whenever its
    :func:`feature_repo.services.service_plan` is resolved anew), or None when Feast's own read must serve it."""
    source = service_plan(store, feature_service)
    with _LOCK:
        compiled = _PLANS.get(store, {}).get(feature_service)
    if compiled is None or compiled.source is not source:
        before = compiled
        try:
            compiled = _compile(store, source)
        except Exception as exc:  # noqa: BLE001 - a shape the plan does not know: Feast's own read serves it
            log.warning("feature service %r: no compiled plan", feature_service, exc_info=True)
            compiled = _Unsupported(source, f"the plan could not be compiled ({type(exc).__name__})")
        if isinstance(compiled, _Unsupported) and not (isinstance(before, _Unsupported)
                                                        and before.reason == compiled.reason):
            log.info("feature service %r is read through Feast's get_online_features: %s", feature_service,
                     compiled.reason)
        with _LOCK:
            _PLANS.setdefault(store, {})[feature_service] = compiled
    return compiled if isinstance(compiled, OnlinePlan) else None


def _compile(store: FeatureStore, source: ServicePlan) -> OnlinePlan | _Unsupported:
    """Resolve the service once, with the function ``get_online_features`` resolves it with."""
    from feast import utils as feast_utils
    from feast.on_demand_feature_view import OnDemandFeatureView
    from feast.value_type import ValueType

    service = source.service
    unsupported = _unsupported_setup(store, service)
    if unsupported:
        return _Unsupported(source, unsupported)
    resolve = getattr(feast_utils, "_get_online_request_context", None)
    if resolve is None:  # a Feast release that moved it: read as Feast reads
        return _Unsupported(source, "this Feast release has no _get_online_request_context")
    (feature_refs, on_demand_views, entity_to_join_key, key_types, join_keys, grouped_refs, _result_names,
     needed_request, entityless) = resolve(store.registry, store.project, service, False)
    if entityless:
        return _Unsupported(source, "an entity-less feature view")
    stored = {spec.name for spec in source.schema if spec.stored}
    feature_types: dict[str, Any] = {}  # OnlineStore._build_feature_types: one map by name, the last view wins
    for table, requested in grouped_refs:
        projection = table.projection
        if isinstance(table, OnDemandFeatureView):
            return _Unsupported(source, f"on-demand view {table.name!r} is written to the online store")
        if projection.join_key_map:
            return _Unsupported(source, f"view {table.name!r} renames its join keys")
        if getattr(projection, "version_tag", None) is not None:
            return _Unsupported(source, f"view {table.name!r} is read at a pinned version")
        for feature in table.features:
            if feature.name in requested:
                feature_types[feature.name] = feature.dtype.to_value_type()
    views = tuple(_ViewRead(table=table, features=tuple(requested),
                            join_keys=frozenset(entity_to_join_key[entity] for entity in table.entities),
                            types=tuple(feature_types.get(name) for name in requested),
                            counted=tuple(name for name in requested if name in stored))
                  for table, requested in grouped_refs)
    steps: list[_OnDemandStep] = []
    odfv_names = {(v.projection.name_alias if v.projection else None) or v.name: v for v in on_demand_views}
    for view in on_demand_views:
        transformation = view.feature_transformation
        if (view.mode != "python" or view.write_to_online_store or view.aggregations
                or type(transformation).__name__ != "PythonTransformation"):
            return _Unsupported(source, f"on-demand view {view.name!r} is not a plain python-mode view")
        name = (view.projection.name_alias if view.projection else None) or view.name
        wanted = [feast_utils._parse_feature_ref(ref)[2] for ref in feature_refs
                  if feast_utils._parse_feature_ref(ref)[0] == name]
        schema = {f.name: _output_type(f.dtype) for f in view.schema}
        steps.append(_OnDemandStep(
            transformation=transformation, singleton=bool(view.singleton),
            aliases=tuple((f"{projection.name}__{feature.name}", feature.name)
                          for projection in view.source_feature_view_projections.values()
                          for feature in projection.features),
            outputs=tuple((f, schema.get(f, ValueType.UNKNOWN)) for f in wanted),
            hidden=_hidden_columns(view, feature_refs, odfv_names, on_demand_views)))
    online_store = getattr(store.provider, "online_store", None)  # what get_online_features reads through
    if online_store is None:
        return _Unsupported(source, "the provider exposes no online store")
    return OnlinePlan(source=source, online_store=online_store, config=store.config, key_types=dict(key_types),
                      join_keys=frozenset(join_keys), request=frozenset(needed_request), views=views,
                      on_demand=tuple(steps), feature_types=feature_types)


def _output_type(dtype: Any) -> Any:
    """The ValueType an on-demand output is converted with: the schema's Feast type, else UNKNOWN (inferred
    from the values), as ``_augment_response_with_on_demand_transforms`` does."""
    from feast.types import ComplexFeastType, PrimitiveFeastType
    from feast.value_type import ValueType

    return dtype.to_value_type() if isinstance(dtype, (ComplexFeastType, PrimitiveFeastType)) else ValueType.UNKNOWN


def _unsupported_setup(store: FeatureStore, service: Any) -> str | None:
    """Why Feast's own read must serve this service (something the plan would skip), or None."""
    if getattr(service, "precompute_online", False):
        return "the service reads pre-computed vectors (precompute_online)"
    try:
        from feast.metrics import _config as feast_metrics

        if getattr(feast_metrics, "online_features", False):
            return "Feast's online-feature metrics are on"
    except ImportError:
        pass
    mlflow = getattr(store.config, "mlflow", None)
    if mlflow is not None and getattr(mlflow, "enabled", False) and getattr(mlflow, "auto_log", False):
        return "Feast's MLflow logging of retrievals is on"
    return None


def _hidden_columns(view: Any, feature_refs: Sequence[str], odfv_names: Mapping[str, Any],
                    on_demand_views: Sequence[Any]) -> frozenset[str]:
    """The columns an on-demand function does not get: features of views it does not declare as sources,
    and the inputs other on-demand views pulled in (``_augment_response_with_on_demand_transforms``)."""
    from feast import utils as feast_utils

    declared = {projection.name for projection in view.source_feature_view_projections.values()}
    hidden: set[str] = set()
    for ref in feature_refs:
        ref_view, _, ref_feature = feast_utils._parse_feature_ref(ref)
        if ref_view in odfv_names:
            continue
        if ref_view not in declared:
            hidden.update((ref_feature, f"{ref_view}__{ref_feature}"))
    for other in on_demand_views:
        for projection in other.source_feature_view_projections.values():
            if projection.name in declared:
                continue
            for feature in projection.features:
                hidden.update((feature.name, f"{projection.name}__{feature.name}"))
    return frozenset(hidden)


# -- reading with a plan ---------------------------------------------------------------------------------


def read_plan(plan: OnlinePlan, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[Any]], list[bool]]:
    """Every column ``get_online_features(...).to_dict()`` would give for ``rows`` (join keys, stored and
    on-demand features; request fields too, which the caller drops), and the per-row found flags.

    ``rows`` all carry the same names: the join keys and the request fields, nothing else.
    """
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.value_type import ValueType

    n = len(rows)
    types = plan.feature_types
    keys: dict[str, list[Any]] = {}  # join key -> ValueProtos
    columns: dict[str, list[Any]] = {}  # what to_dict gives: join keys, then request fields, then features
    requested: dict[str, list[Any]] = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        protos = _to_protos(values, plan.key_types.get(name, ValueType.UNKNOWN))
        if name in plan.request:
            requested[name] = protos
        elif name in plan.join_keys:
            keys[name] = protos
    for name, protos in (*keys.items(), *requested.items()):
        columns[name] = [_to_python(v, types.get(name)) for v in protos]
    found = [False] * n
    for view in plan.views:
        # One read per distinct key, as Feast's _get_unique_entities; its keys in the request's order.
        view_keys = [name for name in keys if name in view.join_keys]
        key_columns = [keys[name] for name in view_keys]
        distinct: dict[tuple[Any, ...], int] = {}
        entity_keys: list[Any] = []
        slot = [0] * n
        for i in range(n):
            values = [column[i] for column in key_columns]
            marker = tuple(_scalar(v) for v in values)
            index = distinct.get(marker)
            if index is None:
                index = distinct[marker] = len(entity_keys)
                entity_keys.append(EntityKeyProto(join_keys=view_keys, entity_values=values))
            slot[i] = index
        read = plan.online_store.online_read(config=plan.config, table=view.table, entity_keys=entity_keys,
                                             requested_features=list(view.features))  # Redis appends to it
        hits = [_hit(stamp, data, view.counted) for stamp, data in read]
        for i in range(n):
            found[i] = found[i] or hits[slot[i]]
        for name, vtype in zip(view.features, view.types, strict=True):
            column = []
            for i in range(n):
                data = read[slot[i]][1]
                value = data.get(name) if data is not None else None
                column.append(None if value is None else _to_python(value, vtype))
            columns[name] = column
    if plan.on_demand:
        base = dict(columns)  # every on-demand view sees the response before any of them ran
        for step in plan.on_demand:
            outputs = _transform(step, {name: values for name, values in base.items() if name not in step.hidden})
            for name, vtype in step.outputs:
                if name in outputs:
                    values = outputs[name]
                    columns[name] = _round_trip(values if isinstance(values, list) else [values], vtype,
                                                types.get(name))
    return columns, found


def _transform(step: _OnDemandStep, inputs: dict[str, list[Any]]) -> dict[str, Any]:
    """``OnDemandFeatureView.transform_dict`` for a python-mode view: each source feature under both its
    short and its full name, the udf (one value per column when ``singleton``), the added names removed.
    Called on the view's transformation directly: the view class is ``@typechecked``, which checked every
    argument of every call (about a fifth of a one-entity read)."""
    prepared = dict(inputs)
    added = []
    for full, short in step.aliases:
        if full in inputs:
            prepared[short] = inputs[full]
            added.append(short)
        elif short in inputs:
            prepared[full] = inputs[short]
            added.append(full)
    transformation = step.transformation
    outputs = transformation.transform_singleton(prepared) if step.singleton else transformation.transform(prepared)
    for name in added:
        outputs.pop(name, None)
    return outputs


# Value conversion. Feast converts every request value to a ValueProto and every read value back
# (python_values_to_proto_values, feast_value_type_to_python_type); for the plain scalars that make up nearly
# every key and feature the round trip is the identity (a NaN double becomes null), so those take a shortcut
# and everything else goes through Feast's functions.
_SCALAR_FIELDS = frozenset({"int64_val", "int32_val", "double_val", "float_val", "string_val", "bool_val",
                            "bytes_val"})
_INT64 = 2**63


_EXACT: dict[type, tuple[str, str]] = {int: ("INT64", "int64_val"), float: ("DOUBLE", "double_val"),
                                       str: ("STRING", "string_val"), bool: ("BOOL", "bool_val")}


def _exact(values: Sequence[Any], vtype: Any) -> tuple[str, type] | None:
    """(ValueProto field, Python type) when Feast's conversion of ``values`` at ``vtype`` keeps each value as it
    is: every value None or of one and the same Python type among int, float, str, bool, which is the type
    ``vtype`` takes (or Feast infers, for UNKNOWN). Mixed types are left to Feast (it converts them all to the
    first value's type)."""
    kind: type | None = None
    for value in values:
        if value is None:
            continue
        if kind is None:
            kind = type(value)
        elif type(value) is not kind:
            return None
    entry = _EXACT.get(kind) if kind is not None else None
    if entry is None or (vtype.name != "UNKNOWN" and vtype.name != entry[0]):
        return None
    if kind is int and not all(value is None or -_INT64 <= value < _INT64 for value in values):
        return None
    return entry[1], kind


def _to_protos(values: list[Any], vtype: Any) -> list[Any]:
    """``python_values_to_proto_values(values, vtype)``."""
    exact = _exact(values, vtype)
    if exact is None:
        from feast.type_map import python_values_to_proto_values

        return python_values_to_proto_values(values, vtype)
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    field_name, kind = exact
    return [ValueProto() if value is None or (kind is float and value != value) else ValueProto(**{field_name: value})
            for value in values]


def _to_python(value: Any, feature_type: Any) -> Any:
    """``feast_value_type_to_python_type(value, feature_type)``."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _SCALAR_FIELDS and not (kind == "string_val" and feature_type is not None
                                       and feature_type.name in ("UUID", "TIME_UUID")):
        return getattr(value, kind)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value, feature_type)


def _round_trip(values: list[Any], vtype: Any, feature_type: Any) -> list[Any]:
    """An on-demand output as ``get_online_features`` answers it: converted to protos at its schema's type,
    then back as ``OnlineResponse.to_dict`` does."""
    exact = _exact(values, vtype)
    if exact is not None and (feature_type is None or feature_type == vtype):
        kind = exact[1]
        return [None if value is None or (kind is float and value != value) else value for value in values]
    from feast.type_map import python_values_to_proto_values

    return [_to_python(v, feature_type) for v in python_values_to_proto_values(values, vtype)]


def _scalar(value: Any) -> tuple[str | None, Any]:
    """A key value as (field, value): equal exactly when the ValueProtos are."""
    kind = value.WhichOneof("val")
    return kind, getattr(value, kind) if kind else None


def _hit(stamp: Any, data: Mapping[str, Any] | None, counted: Sequence[str]) -> bool:
    """Whether a read row makes its entity "found": a stored feature of the service came back with its
    event time. Feast's Redis store answers an unknown key with every field empty and a zero (1970)
    timestamp, SQLite with ``(None, None)``; a timestamp proto of 0 s and 0 ns is what Feast then reports."""
    if data is None or stamp is None or not any(name in data for name in counted):
        return False
    from google.protobuf.timestamp_pb2 import Timestamp

    proto = Timestamp()
    proto.FromDatetime(stamp)
    return proto.seconds > 0 or proto.nanos > 0


# -- the public entry points -----------------------------------------------------------------------------


def _entity_rows(plan: ServicePlan, feature_service: str, entity_rows: Sequence[Mapping[str, Any]],
                 request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Each row's join keys and request fields, merged; a row lacking one is a ``ValueError`` naming it."""
    keys, req = plan.keys, plan.request_names
    if request_data is None:
        per_row: list[Mapping[str, Any]] = [{} for _ in entity_rows]
    elif isinstance(request_data, Mapping):
        per_row = [request_data] * len(entity_rows)
    else:
        per_row = list(request_data)
        if len(per_row) != len(entity_rows):
            raise ValueError("request_data must be one mapping or one per entity row")
    rows: list[dict[str, Any]] = []
    for i, (row, extra) in enumerate(zip(entity_rows, per_row, strict=True)):
        merged = {**row, **extra}
        absent = [k for k in [*keys, *req] if merged.get(k) is None]
        if absent:
            raise ValueError(f"entity row {i} lacks {absent} needed by feature service {feature_service!r}")
        rows.append({k: merged[k] for k in [*keys, *req]})
    return rows


def online_lookup(
    store: FeatureStore,
    feature_service: str,
    entity_rows: Sequence[Mapping[str, Any]],
    request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> OnlineRows:
    """Latest features for each entity row, with per-row found flags.

    ``request_data`` feeds the on-demand views: one mapping for every row, or one per row; it may also
    already be inside ``entity_rows``. A row lacking a join key or request field is a ``ValueError``
    naming it. Read with the service's compiled plan (:func:`online_plan`), or through Feast's
    ``get_online_features`` (:func:`feast_lookup`) for what the plan does not cover: the same answers.
    """
    if not entity_rows:
        return OnlineRows([], [])
    compiled = online_plan(store, feature_service)
    if compiled is None:
        return feast_lookup(store, feature_service, entity_rows, request_data)
    plan = compiled.source
    rows = _entity_rows(plan, feature_service, entity_rows, request_data)
    columns, found = read_plan(compiled, rows)
    if not any(spec.stored for spec in plan.schema):
        found = [True] * len(rows)  # nothing is looked up by key: every row is "known"
    wanted = [*plan.keys, *(spec.name for spec in plan.schema)]
    out = [{c: plain(columns[c][i]) for c in wanted} for i in range(len(rows))]
    return OnlineRows(out, found)


def feast_lookup(
    store: FeatureStore,
    feature_service: str,
    entity_rows: Sequence[Mapping[str, Any]],
    request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> OnlineRows:
    """:func:`online_lookup` through Feast's own ``FeatureStore.get_online_features``: the path for services
    the compiled plan does not cover, and the reference the plan is tested against."""
    if not entity_rows:
        return OnlineRows([], [])
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    plan = service_plan(store, feature_service)
    rows = _entity_rows(plan, feature_service, entity_rows, request_data)
    response = store.get_online_features(features=plan.service, entity_rows=rows)
    result = response.to_dict()
    names = [f.name for f in plan.schema]
    stored = {f.name for f in plan.schema if f.stored}
    found = [False] * len(rows)
    if stored:
        # A row was found when the store returned it with its event time. Statuses alone do not tell: Feast's
        # Redis store answers an unknown key with PRESENT and empty values, but with a zero timestamp (1970).
        present = (FieldStatus.PRESENT, FieldStatus.NULL_VALUE, FieldStatus.OUTSIDE_MAX_AGE)
        for name, vector in zip(response.proto.metadata.feature_names.val, response.proto.results, strict=False):
            if name in stored:
                for i, (status, stamp) in enumerate(zip(vector.statuses, vector.event_timestamps, strict=False)):
                    found[i] = found[i] or (status in present and (stamp.seconds > 0 or stamp.nanos > 0))
    else:
        found = [True] * len(rows)  # nothing is looked up by key: every row is "known"
    out = [{c: plain(result[c][i]) for c in [*plan.keys, *names]} for i in range(len(rows))]
    return OnlineRows(out, found)


def online_features(
    store: FeatureStore,
    feature_service: str,
    entity_rows: Sequence[Mapping[str, Any]],
    request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Latest feature values for each entity row, one dict per row (keys, then every feature, in order).

    Unknown entities give None for stored features (Feast's behaviour); :func:`online_lookup` also says
    which rows those were.
    """
    return online_lookup(store, feature_service, entity_rows, request_data).rows
