"""The churn example project itself: its data generator (drift mode included) and its on-demand function.

These test the example's own code, the way a team tests theirs; esteira's library is tested on a copy of
this project in ``test_features.py`` and the flow tests.
"""

from __future__ import annotations

import inspect
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.projects import EXAMPLES, project_module

NOW = datetime.now(UTC)
ROOT = EXAMPLES / "churn"
gen = project_module(ROOT, "generator")


def _transform():
    """The on-demand view's function, as the definitions module defines it (the decorator wraps it)."""
    definitions = project_module(ROOT / "features", "churn")
    return definitions.churn_request_features.udf


def test_generator_is_deterministic_and_sized() -> None:
    a = gen.generate_frames(n_customers=500, seed=11, now=NOW)
    b = gen.generate_frames(n_customers=500, seed=11, now=NOW)
    for key in ("profile", "activity", "labels"):
        pd.testing.assert_frame_equal(a[key], b[key])
    assert len(a["activity"]) == 500 * 30
    assert len(a["labels"]) == 500 * 4
    c = gen.generate_frames(n_customers=500, seed=12, now=NOW)
    assert not a["activity"]["logins_7d"].equals(c["activity"]["logins_7d"])
    # Relative to now, entirely in the past, label timestamps inside the batch window.
    assert a["activity"][gen.TIMESTAMP].max() < pd.Timestamp(gen.anchor_for(NOW))
    assert a["labels"][gen.TIMESTAMP].max() < pd.Timestamp(NOW)
    assert set(a["labels"][gen.LABEL].unique()) == {0, 1}


def test_generator_writes_parquet_and_labels(tmp_path: Path) -> None:
    info = gen.generate_batch(tmp_path, n_customers=200, seed=3, now=NOW)
    again = gen.generate_batch(tmp_path, n_customers=200, seed=3, now=NOW)  # idempotent overwrite
    assert info.activity_rows == again.activity_rows == 200 * 30
    assert (tmp_path / gen.ACTIVITY_DIR / "history.parquet").exists()
    labels = gen.load_labels(tmp_path)
    assert list(labels.columns) == [gen.ENTITY_KEY, gen.TIMESTAMP, "days_until_renewal", gen.LABEL]
    assert str(labels[gen.TIMESTAMP].dtype).startswith("datetime64") and labels[gen.TIMESTAMP].dt.tz is not None
    with pytest.raises(FileNotFoundError):
        gen.load_labels(tmp_path / "nowhere")


def _joined(frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.Series]:
    """Features at each label's day, straight from the generator (no Feast), one-hot encoded."""
    ts, key = gen.TIMESTAMP, gen.ENTITY_KEY
    labels = frames["labels"].assign(day=frames["labels"][ts].dt.floor("D"))
    activity = frames["activity"].rename(columns={ts: "day"})
    m = labels.merge(activity, on=[key, "day"]).merge(frames["profile"].drop(columns=ts), on=key)
    x = pd.get_dummies(m[["contract_type", "plan_type"]]).astype(float)
    for col in ("tenure_months", "monthly_charges", "logins_7d", "support_tickets_30d", "payment_failures_90d",
                "days_since_last_login", "days_until_renewal"):
        x[col] = m[col]
    return x, m[gen.LABEL]


def test_drift_shifts_distributions_and_label_relation() -> None:
    from scipy.stats import ks_2samp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def logreg():  # scaled: converges in milliseconds instead of seconds
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    ref = gen.generate_frames(n_customers=1500, seed=5, now=NOW)
    control = gen.generate_frames(batch="recent", drift=False, n_customers=1500, seed=5, now=NOW)
    drift = gen.generate_frames(batch="recent", drift=True, n_customers=1500, seed=5, now=NOW)

    # Distributions: a price increase, less usage, more monthly contracts; the control does not move.
    assert ks_2samp(ref["profile"]["monthly_charges"], drift["profile"]["monthly_charges"]).pvalue < 1e-6
    assert ks_2samp(ref["activity"]["logins_7d"], drift["activity"]["logins_7d"]).pvalue < 1e-6
    assert ks_2samp(ref["activity"]["logins_7d"], control["activity"]["logins_7d"]).pvalue > 1e-3
    monthly = lambda f: (f["profile"]["contract_type"] == "monthly").mean()  # noqa: E731
    assert monthly(drift) > monthly(ref) + 0.1

    # Relation: support tickets predicted churn, now they do not; a reference model decays on the
    # drifted batch while a model refit on it does better: the concept changed, not only inputs.
    xr, yr = _joined(ref)
    xc, yc = _joined(control)
    xd, yd = _joined(drift)
    xc, xd = xc.reindex(columns=xr.columns, fill_value=0.0), xd.reindex(columns=xr.columns, fill_value=0.0)
    assert np.corrcoef(xr["support_tickets_30d"], yr)[0, 1] > 0.08
    assert np.corrcoef(xd["support_tickets_30d"], yd)[0, 1] < 0.0
    model = logreg().fit(xr, yr)
    auc_control = roc_auc_score(yc, model.predict_proba(xc)[:, 1])
    auc_drift = roc_auc_score(yd, model.predict_proba(xd)[:, 1])
    assert auc_drift < auc_control - 0.08, (auc_control, auc_drift)
    half = len(xd) // 2
    refit = logreg().fit(xd[:half], yd[:half])
    assert roc_auc_score(yd[half:], refit.predict_proba(xd[half:])[:, 1]) > auc_drift + 0.03


def test_generator_is_fast() -> None:
    t0 = time.perf_counter()
    frames = gen.generate_frames(n_customers=3_334, history_days=30, seed=1, now=NOW)
    assert len(frames["activity"]) >= 100_000
    assert time.perf_counter() - t0 < 3.0


def test_on_demand_function_is_self_contained_and_matches_the_generator() -> None:
    transform = _transform()
    soon = gen.RENEWAL_SOON_DAYS
    inputs = {"logins_7d": [0, 3, None, -1], "usage_minutes_7d": [10.0, 40.0, None, 5.0],
              "days_until_renewal": [soon, soon + 1, 0, -3]}
    out = transform(inputs)
    assert out["renewal_within_7d"] == [1, 0, 1, 1]
    assert out["minutes_per_login"][1] == pytest.approx(10.0)
    assert np.isnan(out["minutes_per_login"][2])
    assert out["minutes_per_login"][3] == np.inf  # no exception on a zero divisor
    # The same numbers as the obvious pandas formulation (what the view ran before "python" mode).
    df = pd.DataFrame(inputs)
    logins, minutes = df["logins_7d"].astype("float64"), df["usage_minutes_7d"].astype("float64")
    renewal = df["days_until_renewal"].astype("float64")
    np.testing.assert_allclose(out["minutes_per_login"], minutes / (logins + 1.0))
    np.testing.assert_allclose(out["log_days_until_renewal"], np.log1p(renewal.clip(lower=0)))
    # Feast re-executes the source with only pd and np in scope: prove that works.
    source = inspect.getsource(transform)
    source = source[source.index("def "):]  # without the decorator, as Feast's rehydration strips it
    namespace: dict = {"pd": pd, "np": np}
    exec(source, namespace)  # noqa: S102
    np.testing.assert_equal(namespace[transform.__name__](inputs), out)  # NaN equals NaN here


def test_on_demand_function_refuses_a_non_number() -> None:
    with pytest.raises(ValueError):
        _transform()({"logins_7d": [1], "usage_minutes_7d": [1.0], "days_until_renewal": ["soon"]})
