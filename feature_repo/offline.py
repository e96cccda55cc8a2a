"""Point-in-time correct training sets from the offline store: the training half of the one fetcher.

:func:`training_frame` and :func:`feature_repo.online.online_features` answer for the same feature service,
with on-demand features computed by the same registered function, so training and serving cannot skew.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from feature_repo.services import feature_schema, service_plan, view_of

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

TIMESTAMP = "event_timestamp"
"""The entity frame's timestamp column as Feast names it."""


def training_frame(store: FeatureStore, feature_service: str, entity_df: pd.DataFrame, *,
                   timestamp: str = TIMESTAMP) -> pd.DataFrame:
    """Point-in-time correct training frame for ``entity_df``: one output row per input row.

    ``entity_df`` holds the service's join keys, the ``timestamp`` column (the moment each label refers
    to), the request fields of the service's on-demand views and any other columns (the label, request
    features): they pass through. For each row and view, the latest feature row at or before the timestamp
    and within the view's TTL is joined, never a later one; when there is none the features are null.

    Rows come back in the input order and columns as the input's then the service's features, with
    numeric features as float64 and categorical ones as object (None when missing), whatever the data:
    the schema of a training snapshot does not depend on whether it happens to hold nulls.

    Why not a single ``get_historical_features`` call with the service: Feast 0.67's file (Dask)
    offline store silently drops an entity row when any one view has no row in its TTL window for
    it (``_filter_ttl`` filters the per-key cross join), and collapses rows that share a key and
    timestamp (feast-dev/feast 6787). So each view is joined on its own, over the distinct
    (keys, timestamp) pairs of its own keys, and the on-demand views are then computed with Feast's own
    ``transform_arrow`` (the offline path Feast itself uses) on the joined input columns.
    """
    import pandas as pd
    import pyarrow as pa

    plan = service_plan(store, feature_service)
    fs, keys, req = plan.service, list(plan.keys), plan.request_names
    missing = [c for c in [*keys, timestamp, *req] if c not in entity_df.columns]
    if missing:
        raise ValueError(f"the entity rows lack columns {missing} needed by feature service {feature_service!r}")
    schema = feature_schema(store, feature_service)
    names = [f.name for f in schema]
    clash = [c for c in entity_df.columns if c in names or c.startswith("__esteira")]
    if clash:
        raise ValueError(f"entity rows have columns {clash} that are also features of {feature_service!r}; "
                         "rename them (a feature is read from the store, not taken from the rows)")

    row_id, pair_id = "__esteira_row", "__esteira_pair"
    edf = entity_df.copy()
    if timestamp != TIMESTAMP:
        if TIMESTAMP in edf.columns:
            raise ValueError(f"the entity rows have both {timestamp!r} and {TIMESTAMP!r}: keep one timestamp")
        edf = edf.rename(columns={timestamp: TIMESTAMP})
    edf[TIMESTAMP] = pd.to_datetime(edf[TIMESTAMP], utc=True)
    edf[row_id] = edf.groupby([*keys, TIMESTAMP, *req], sort=False, dropna=False).ngroup()
    base = edf.drop_duplicates(row_id)[[row_id, *keys, TIMESTAMP, *req]].reset_index(drop=True)

    odfvs = []
    with warnings.catch_warnings():
        # "On demand feature view is an experimental feature": known, said once in the README.
        warnings.filterwarnings("ignore", message="On demand feature view", category=RuntimeWarning)
        for projection in fs.feature_view_projections:
            view = view_of(store, projection.name)
            if type(view).__name__ == "OnDemandFeatureView":
                odfvs.append(view)
                continue
            # Distinct (this view's keys, timestamp) pairs, numbered so Feast's answer joins back by number.
            view_keys = [c.name for c in view.entity_columns if not c.name.startswith("__dummy")]
            base[pair_id] = base.groupby([*view_keys, TIMESTAMP], sort=False, dropna=False).ngroup()
            pairs = base.drop_duplicates(pair_id)[[pair_id, *view_keys, TIMESTAMP]].reset_index(drop=True)
            refs = [f"{projection.name_to_use()}:{f.name}" for f in projection.features]
            part = store.get_historical_features(entity_df=pairs, features=refs).to_df()
            cols = [f.name for f in projection.features]
            base = base.merge(part.drop_duplicates(pair_id)[[pair_id, *cols]], on=pair_id, how="left")
        for view in odfvs:
            # Only the view's inputs: a "python" mode view turns its whole table into lists.
            inputs = [*keys, *(f.name for p in view.source_feature_view_projections.values() for f in p.features),
                      *(f.name for s in view.source_request_sources.values() for f in s.schema)]
            table = pa.Table.from_pandas(base[list(dict.fromkeys(inputs))], preserve_index=False)
            transformed = view.transform_arrow(table, False)
            for f in view.features:
                base[f.name] = transformed.column(f.name).to_pandas()

    for f in schema:
        if f.kind == "numeric":
            base[f.name] = pd.to_numeric(base[f.name], errors="coerce").astype("float64")
        else:
            base[f.name] = base[f.name].astype(object).where(base[f.name].notna(), None)
    out = edf.merge(base[[row_id, *names]], on=row_id, how="left", sort=False)
    if timestamp != TIMESTAMP:
        out = out.rename(columns={TIMESTAMP: timestamp})
    return out[[*entity_df.columns, *names]].reset_index(drop=True)

