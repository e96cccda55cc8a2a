"""Feature definitions of this project: plain Feast, found the way `feast apply` finds them.

A sample to replace: one entity (`item`), one feature view over a parquet folder, one feature service.
Add your own entities, sources (a path relative to this folder, or any URI such as s3://...), feature views
(with the TTL that says when a value is stale), on-demand views and feature services; `esteira features
plan` shows what changes, `esteira materialize` applies them and loads the online store.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64,
              description="What a prediction is about (replace: an account, a machine, an order...).")

item_stats_source = FileSource(
    name="item_stats_source",
    path="data/item_stats",                 # a folder of parquet files; one row per item per day
    timestamp_field="event_timestamp",
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=3),                  # older than this at prediction time: missing, not misleading
    schema=[
        Field(name="item_id", dtype=Int64),
        Field(name="views_7d", dtype=Int64),
        Field(name="price", dtype=Float64),
        Field(name="category", dtype=String),
    ],
    source=item_stats_source,
    online=True,
)

feature_service = FeatureService(name="{service}", features=[item_stats])
