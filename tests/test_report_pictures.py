"""Reference-vs-window pictures: the small per-feature histograms and category shares that every
monitoring report stores in its ``drift`` JSON, for a console to draw without reading any profile.

Real whylogs profiles of small pandas frames; the expected shares are computed from the frames
themselves (numpy histograms on the picture's own edges, pandas value counts).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core import profiles
from flows.estimators import build_pipeline
from flows.monitor import run_monitor
from flows.monitoring.drift import feature_drift
from flows.monitoring.policy import MonitoringPolicy

KLL_TOLERANCE = 0.02
"""Per-bin share error allowed: whylogs' KLL sketch (k=256) ranks within about 1% of the rows."""


def pictures(reference: pd.DataFrame, window: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, Any]]:
    reference_profile, window_profile = profiles.profile_frame(reference), profiles.profile_frame(window)
    return profiles.feature_pictures(reference_profile, window_profile, columns)


def test_a_shifted_numeric_column_moves_mass_to_later_bins() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"amount": rng.normal(0.0, 1.0, 3000)})
    window = pd.DataFrame({"amount": rng.normal(1.5, 1.0, 3000)})

    picture = pictures(reference, window, ["amount"])["amount"]

    edges = np.array(picture["edges"])
    assert picture["kind"] == "histogram" and len(edges) == profiles.PICTURE_BINS + 1
    assert np.all(np.diff(edges) > 0)
    low = min(reference["amount"].min(), window["amount"].min())
    high = max(reference["amount"].max(), window["amount"].max())
    assert edges[0] == pytest.approx(low, abs=1e-3) and edges[-1] == pytest.approx(high, abs=1e-3)
    for side, frame in (("reference", reference), ("window", window)):
        shares = np.array(picture[side])
        assert len(shares) == profiles.PICTURE_BINS and shares.sum() == pytest.approx(1.0, abs=1e-3)
        counts, _ = np.histogram(frame["amount"].clip(edges[0], edges[-1]), bins=edges)
        assert np.abs(shares - counts / len(frame)).max() < KLL_TOLERANCE
    centers = (edges[:-1] + edges[1:]) / 2
    moved = centers @ np.array(picture["window"]) - centers @ np.array(picture["reference"])
    assert moved == pytest.approx(1.5, abs=0.15)
    assert (picture["reference_n"], picture["window_n"], picture["reference_null"]) == (3000, 3000, 0.0)


def test_category_shares_match_the_frames_value_counts() -> None:
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"segment": rng.choice(["a", "b", "c"], 2000, p=[0.6, 0.3, 0.1]),
                              "flag": rng.random(2000) < 0.2})
    window = pd.DataFrame({"segment": rng.choice(["a", "b", "c"], 1000, p=[0.2, 0.3, 0.5]),
                           "flag": rng.random(1000) < 0.7})
    window.loc[:99, "segment"] = None  # 10% nulls: reported apart, shares are of the present values

    found = pictures(reference, window, ["segment", "flag"])

    segment = found["segment"]
    assert segment["kind"] == "categories" and set(segment["categories"]) == {"a", "b", "c"}
    for side, frame in (("reference", reference), ("window", window)):
        expected = frame["segment"].value_counts(normalize=True)
        assert segment[side] == pytest.approx([expected[c] for c in segment["categories"]], abs=1e-3)
    assert segment["window_null"] == pytest.approx(0.1) and segment["reference_null"] == 0.0
    flag = found["flag"]  # booleans are categories, not a 0..1 histogram
    assert flag["kind"] == "categories" and sorted(flag["categories"]) == ["False", "True"]
    assert flag["window"][flag["categories"].index("True")] == pytest.approx(window["flag"].mean(), abs=1e-3)


def test_many_categories_keep_the_largest_and_an_other_bucket() -> None:
    rng = np.random.default_rng(5)
    names = [f"item-{i:02d}" for i in range(30)]
    weights = np.linspace(30, 1, 30) / np.linspace(30, 1, 30).sum()
    reference = pd.DataFrame({"item": rng.choice(names, 4000, p=weights)})
    window = pd.DataFrame({"item": rng.choice(names, 4000, p=weights[::-1])})

    picture = pictures(reference, window, ["item"])["item"]

    assert len(picture["categories"]) == profiles.PICTURE_CATEGORIES + 1
    assert picture["categories"][-1] == profiles.OTHER
    for side, frame in (("reference", reference), ("window", window)):
        expected = frame["item"].value_counts(normalize=True)
        named = picture["categories"][:-1]
        assert picture[side][:-1] == pytest.approx([expected.get(c, 0.0) for c in named], abs=1e-3)
        assert picture[side][-1] == pytest.approx(1.0 - expected.reindex(named).fillna(0).sum(), abs=1e-3)


def test_constant_and_integer_columns() -> None:
    rng = np.random.default_rng(6)
    reference = pd.DataFrame({"rate": 7.5, "visits": rng.integers(0, 4, 1000)})
    window = pd.DataFrame({"rate": 7.5, "visits": rng.integers(2, 6, 1000)})

    found = pictures(reference, window, ["rate", "visits"])

    rate = found["rate"]
    assert len(rate["edges"]) == 2 and rate["edges"][0] < 7.5 < rate["edges"][1]
    assert rate["reference"] == rate["window"] == [1.0]
    visits = found["visits"]  # one bin per value from 0 to 5
    assert visits["edges"] == [-0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    expected = window["visits"].value_counts(normalize=True).reindex(range(6)).fillna(0.0)
    assert visits["window"] == pytest.approx(list(expected), abs=1e-3)


def test_a_side_missing_the_column_or_all_null() -> None:
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"amount": rng.normal(0, 1, 500), "dark": rng.normal(0, 1, 500),
                              "never": np.nan})
    window = pd.DataFrame({"dark": np.full(300, np.nan), "never": np.nan})

    found = pictures(reference, window, ["amount", "dark", "never"])

    missing = found["amount"]
    assert missing["window"] is None and (missing["window_n"], missing["window_null"]) == (None, None)
    assert sum(missing["reference"]) == pytest.approx(1.0, abs=1e-3) and missing["reference_n"] == 500
    dark = found["dark"]
    assert dark["window"] is None and (dark["window_n"], dark["window_null"]) == (300, 1.0)
    assert "never" not in found  # no value on either side: nothing to draw


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # whylogs' variance of a column of inf
def test_a_picture_that_cannot_be_drawn_costs_only_that_feature(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(8)
    reference = pd.DataFrame({"amount": rng.normal(0, 1, 500), "ratio": np.inf})
    window = pd.DataFrame({"amount": rng.normal(1, 1, 500), "ratio": np.inf})

    with caplog.at_level(logging.WARNING, logger="core.profiles"):
        drift = feature_drift(profiles.profile_frame(reference), profiles.profile_frame(window),
                              ["amount", "ratio"], MonitoringPolicy())

    assert set(drift.features) == {"amount", "ratio"}  # whylogs scores both
    stored = drift.to_json()["features"]
    assert "picture" in stored["amount"] and "picture" not in stored["ratio"]
    assert "no picture for column 'ratio'" in caplog.text


def test_pictures_stay_small() -> None:
    rng = np.random.default_rng(9)
    long_names = [f"{'x' * 150}-{i}" for i in range(40)]
    columns = {f"n{i}": rng.lognormal(i / 5, 1, 2000) for i in range(16)}
    columns.update({f"c{i}": rng.choice(long_names, 2000) for i in range(4)})
    frame = pd.DataFrame(columns)

    found = pictures(frame, frame.sample(frac=1.0, random_state=1), list(frame.columns))

    sizes = {name: len(json.dumps(picture)) for name, picture in found.items()}
    assert len(sizes) == 20 and max(sizes.values()) < 2048, sizes
    assert all(len(label) <= 60 for c in range(4) for label in found[f"c{c}"]["categories"])


# -- stored with the report by a monitor run -----------------------------------------------------------------

MODEL = "pictures-mon"
NUMERIC = ["amount", "visits"]
CATEGORICAL = ["segment"]
FEATURES = NUMERIC + CATEGORICAL


def make_frame(n: int, seed: int, *, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "amount": rng.normal(50 + 20 * shift, 10, n),
        "visits": rng.poisson(2 + 3 * shift, n).astype("float64"),
        "segment": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1] if not shift else [0.1, 0.3, 0.6]),
    })
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-(frame["amount"] - 50) / 10))).astype("int64")
    return frame


@pytest.fixture
def production(registry: Any) -> Any:
    train = make_frame(600, 1)
    model = build_pipeline("logistic_regression", {"max_iter": 300}, NUMERIC, CATEGORICAL, "binary")
    model.fit(train[FEATURES], train["label"])
    dtypes = {"amount": "float64", "visits": "float64", "segment": "string"}
    mv = registry.register_version(
        MODEL,
        model,
        signature={"inputs": [{"name": f, "dtype": dtypes[f]} for f in FEATURES],
                   "outputs": [{"name": "label", "dtype": "int64"}]},
        tags={"metric": "roc_auc"},
        reference_profile=profiles.profile_frame(train[FEATURES + ["label"]]),
    )
    registry.promote(MODEL, mv.version, reason="test setup")
    return mv


def test_the_monitor_stores_a_picture_with_every_feature_of_its_report(registry: Any,
                                                                         production: Any) -> None:
    window = make_frame(400, 2, shift=1.0)
    window["visits"] = np.nan  # an input that went dark: unscored, still drawn from the reference side

    outcome = run_monitor(MODEL, registry=registry, frame=window, trigger="off")

    (report,) = registry.reports(MODEL)
    assert report.id == outcome.report_id and report.drift["unscored"] == ["visits"]
    amount = report.drift["features"]["amount"]["picture"]
    assert amount["kind"] == "histogram" and amount["window_n"] == 400
    centers = np.convolve(amount["edges"], [0.5, 0.5], "valid")
    assert centers @ np.array(amount["window"]) - centers @ np.array(amount["reference"]) > 15
    segment = report.drift["features"]["segment"]["picture"]
    assert dict(zip(segment["categories"], segment["window"], strict=True)) == pytest.approx(
        window["segment"].value_counts(normalize=True).to_dict(), abs=1e-3)
    visits = report.drift["unscored_pictures"]["visits"]
    assert visits["window"] is None and visits["window_null"] == 1.0 and visits["reference"] is not None
    assert len(json.dumps(report.drift)) < 8000
