"""Feast definitions of the churn example: a subscription business scoring customers at interaction time.

Plain Feast, as ``feast apply`` reads it: module-level objects, sources by path relative to the project
(Feast joins a relative ``FileSource`` path to the folder of ``feature_store.yaml``). esteira finds them
the same way (every ``.py`` file that ``.feastignore`` does not exclude).

* entity ``customer`` (join key ``customer_id``);
* ``customer_profile``: CRM snapshots, one row per customer per export (TTL 365 days);
* ``customer_activity_daily``: usage aggregated per customer per day (TTL 14 days);
* ``churn_request_features``: on-demand features from activity and the request field
  ``days_until_renewal`` (known by the billing system at scoring time);
* feature service ``churn_v1``: everything the churn model reads.

The label source (``data/churn_labels``) is named in ``specs/churn.yaml``, not here: labels are not
features.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A subscriber, keyed by the billing system's customer id.",
)

customer_profile_source = FileSource(
    name="customer_profile_source",
    path="data/customer_profile",
    timestamp_field="event_timestamp",
    description="Profile snapshots from the CRM, one row per customer per export.",
)
customer_activity_source = FileSource(
    name="customer_activity_source",
    path="data/customer_activity",
    timestamp_field="event_timestamp",
    description="Daily usage aggregates computed at midnight UTC over trailing windows.",
)
churn_request = RequestSource(
    name="churn_request",
    schema=[Field(name="days_until_renewal", dtype=Int64)],
    description="Known by the caller at scoring time: days left before the contract renews.",
)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    # Profiles change rarely; a snapshot stays valid for a year.
    ttl=timedelta(days=365),
    # The join key is listed so the view's entity columns are explicit rather than inferred at apply.
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="plan_type", dtype=String),
        Field(name="contract_type", dtype=String),
        Field(name="payment_method", dtype=String),
        Field(name="region", dtype=String),
        Field(name="tenure_months", dtype=Int64),
        Field(name="monthly_charges", dtype=Float64),
    ],
    source=customer_profile_source,
    online=True,
    tags={"grain": "snapshot"},
)

customer_activity_daily = FeatureView(
    name="customer_activity_daily",
    entities=[customer],
    # Daily aggregates older than two weeks are stale: better missing than misleading. Feast applies TTLs
    # to offline joins only; the online store serves the last value materialized, however old
    # (feast-dev/feast 1802), so keep materialization running.
    ttl=timedelta(days=14),
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="logins_7d", dtype=Int64),
        Field(name="usage_minutes_7d", dtype=Float64),
        Field(name="support_tickets_30d", dtype=Int64),
        Field(name="payment_failures_90d", dtype=Int64),
        Field(name="days_since_last_login", dtype=Int64),
    ],
    source=customer_activity_source,
    online=True,
    tags={"grain": "daily"},
)


@on_demand_feature_view(
    sources=[customer_activity_daily, churn_request],
    schema=[
        Field(name="minutes_per_login", dtype=Float64),
        Field(name="renewal_within_7d", dtype=Int64),
        Field(name="log_days_until_renewal", dtype=Float64),
    ],
    mode="python",
    description="Request-time features; Feast runs this same function offline (training) and online (serving).",
)
def churn_request_features(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Feast "python" mode: columns in and out as lists, numpy inside.

    Online a request carries one row; in "pandas" mode building one-row DataFrames cost ~2 ms of a
    2.4 ms lookup, here ~0.05 ms with the same numbers. Missing activity (an unknown customer online)
    gives NaN, never an exception. Self-contained: Feast stores this function's source in its registry
    and runs it again with only ``np`` and ``pd`` in scope, so it uses no other module globals.
    """

    def column(name):
        return np.array([np.nan if v is None else v for v in inputs[name]], dtype="float64")

    logins = column("logins_7d")
    minutes = column("usage_minutes_7d")
    renewal = column("days_until_renewal")
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "minutes_per_login": (minutes / (logins + 1.0)).tolist(),
            "renewal_within_7d": (renewal <= 7).astype("int64").tolist(),
            "log_days_until_renewal": np.log1p(np.clip(renewal, 0, None)).tolist(),
        }


churn_v1 = FeatureService(
    name="churn_v1",
    features=[customer_profile, customer_activity_daily, churn_request_features],
    description="Features of the churn model, version 1: training and the gateway both ask for this.",
)
