"""Latest feature values from the online store: the serving half of the one fetcher.

Same feature service, same on-demand functions as :func:`feature_repo.offline.training_frame`. Feast answers
an unknown entity with nulls, not an error; :class:`OnlineRows` also says, per row, whether the store held
anything at all for its keys (Feast's per-field status), so the gateway can answer "unknown entity" (404)
instead of scoring a row of nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from feature_repo.services import service_plan

if TYPE_CHECKING:
    from feast import FeatureStore


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


def online_lookup(
    store: FeatureStore,
    feature_service: str,
    entity_rows: Sequence[Mapping[str, Any]],
    request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> OnlineRows:
    """Latest features for each entity row, with per-row found flags.

    ``request_data`` feeds the on-demand views: one mapping for every row, or one per row; it may also
    already be inside ``entity_rows``. A row lacking a join key or request field is a ``ValueError``
    naming it.
    """
    if not entity_rows:
        return OnlineRows([], [])
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    plan = service_plan(store, feature_service)
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
    out = [{c: plain(result[c][i]) for c in [*keys, *names]} for i in range(len(rows))]
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
