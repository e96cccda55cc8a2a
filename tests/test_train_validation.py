"""Data tests: the validation rules and the promotion rule on their own, with small frames (no Feast, no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flows.errors import TrainingInputError
from flows.evaluate import ProductionComparison, time_holdout
from flows.promotion import decide
from flows.spec import PromotionRule, ValidationThresholds
from flows.validation import validate_training_frame

SCHEMA = {"charges": "float64", "plan": "string"}
LIMITS = ValidationThresholds(min_rows=10)
REFERENCE = {
    "charges": {"count": 100, "null_count": 0, "min": 10.0, "max": 50.0, "kind": "fractional"},
    "plan": {"count": 100, "null_count": 0, "kind": "string", "distinct": 2.0, "frequent": ["basic", "premium"]},
}


def frame(n: int = 100, **columns: object) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = {"charges": rng.uniform(10, 50, n), "plan": rng.choice(["basic", "premium"], n).astype(object),
            "churned": np.arange(n) % 2}
    base.update(columns)
    return pd.DataFrame(base)


def failures(df: pd.DataFrame, reference: dict | None = REFERENCE, task: str = "binary"
             ) -> set[tuple[str, str | None]]:
    report = validate_training_frame(df, schema=SCHEMA, label="churned", task=task, limits=LIMITS,
                                     reference=reference)
    return {(c.name, c.column) for c in report.failures}


def test_clean_frame_passes() -> None:
    assert failures(frame()) == set()


def test_missing_and_retyped_columns_fail() -> None:
    assert ("column present", "plan") in failures(frame().drop(columns=["plan"]))
    assert ("column type", "charges") in failures(frame(charges=np.array(["cheap"] * 100, dtype=object)))


def test_null_fraction_and_increase_fail() -> None:
    charges = np.where(np.arange(100) < 50, np.nan, 20.0)
    assert ("null fraction", "charges") in failures(frame(charges=charges))
    some = np.where(np.arange(100) < 15, np.nan, 20.0)  # under max_null_fraction, but +0.15 over the reference
    assert ("null increase", "charges") in failures(frame(charges=some))


def test_value_skew_fails_over_the_limit_and_warns_under_it() -> None:
    assert ("value range", "charges") in failures(frame(charges=np.full(100, 500.0)))
    few = np.where(np.arange(100) < 5, 500.0, 20.0)
    report = validate_training_frame(frame(charges=few), schema=SCHEMA, label="churned", task="binary",
                                     limits=LIMITS, reference=REFERENCE)
    assert report.passed and any(c.column == "charges" and c.status == "warn" for c in report.checks)


def test_unseen_categories_fail() -> None:
    assert ("categories", "plan") in failures(frame(plan=np.array(["enterprise"] * 100, dtype=object)))


def test_label_must_be_binary_and_have_both_classes() -> None:
    assert ("label binary", "churned") in failures(frame(churned=np.arange(100) % 3), None)
    assert ("label binary", "churned") in failures(frame(churned=np.zeros(100, dtype=int)), None)
    rare = (np.arange(100) == 0).astype(int)  # one positive in a hundred: 0.01, over min_positive_rate=0.005
    assert failures(frame(churned=rare), None) == set()
    assert failures(frame(churned=np.where(np.arange(100) % 2 == 0, "yes", "no").astype(object)), None) == set()


def test_label_rules_follow_the_task() -> None:
    three = np.array(["sun", "rain", "fog"] * 33 + ["sun"], dtype=object)
    assert failures(frame(churned=three), None, "multiclass") == set()
    assert ("label classes", "churned") in failures(frame(churned=np.arange(100) % 2), None, "multiclass")
    rare = three.copy()
    rare[:] = "sun"
    rare[:40] = "rain"
    rare[:3] = "fog"  # 3 rows < min_class_rows=10
    assert ("label classes", "churned") in failures(frame(churned=rare), None, "multiclass")
    assert failures(frame(churned=np.linspace(0, 30, 100)), None, "regression") == set()
    assert ("label numeric", "churned") in failures(frame(churned=np.array(["x"] * 100, dtype=object)), None,
                                                     "regression")
    assert ("label varies", "churned") in failures(frame(churned=np.full(100, 3.0)), None, "regression")


def test_report_markdown_names_the_failure() -> None:
    report = validate_training_frame(frame(charges=np.full(100, 500.0)), schema=SCHEMA, label="churned",
                                     task="binary", limits=LIMITS, reference=REFERENCE)
    text = report.to_markdown()
    assert "FAILED" in text and "charges" in text and "outside reference" in text


def test_time_holdout_keeps_the_future_out_of_training() -> None:
    ts = pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC")
    split = time_holdout(pd.DataFrame({"event_timestamp": ts, "y": np.arange(100) % 2}), timestamp="event_timestamp",
                         fraction=0.2, label="y", task="binary")
    assert len(split.holdout) == 20 and split.train["event_timestamp"].max() < split.holdout["event_timestamp"].min()
    with pytest.raises(TrainingInputError, match="same timestamp"):
        time_holdout(pd.DataFrame({"event_timestamp": [ts[0]] * 10, "y": [0, 1] * 5}), timestamp="event_timestamp",
                     fraction=0.2, label="y", task="binary")


@pytest.mark.parametrize(
    ("candidate", "production", "promoted", "reason"),
    [
        (0.80, ProductionComparison(None, None, "no production version yet"), True, "first version"),
        (0.50, ProductionComparison(None, None), False, "below the spec's floor"),
        (0.81, ProductionComparison(3, 0.80), True, "beats production v3"),
        (0.8005, ProductionComparison(3, 0.80), False, "does not beat it"),
        (0.80, ProductionComparison(3, 0.80), False, "does not beat it"),
        (0.90, ProductionComparison(3, None, "needs features absent"), False, "cannot compare"),
    ],
)
def test_promotion_rule(candidate: float, production: ProductionComparison, promoted: bool, reason: str) -> None:
    decision = decide(PromotionRule(min_improvement=0.001, min_metric=0.6), "roc_auc", candidate, production)
    assert decision.promote is promoted and reason in decision.reason
    assert decision.alias == ("production" if promoted else "staging")
