"""The canary's statistics and rules, pure: the confidence sequence under repeated looks, per-row scores,
the label-free guardrails, the verdict's order and the policy. No gateway, no registry: the flow that reads
the log and acts on these is tested in ``tests/test_canary_flow.py``.

Simulations are vectorised and seeded; each Monte Carlo assertion allows three standard errors above alpha.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from flows.delivery.guardrails import check_guardrails
from flows.delivery.policy import CanaryPolicy, parse_duration
from flows.delivery.scores import default_metric, row_scores
from flows.delivery.sequential import Arm, Bound, confidence_sequence, difference_bounds
from flows.delivery.verdict import CONTINUE, PROMOTE, ROLLBACK, decide, label_decision

ALPHA = 0.05
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _looks(seed: int, runs: int, looks: int, every: int, share: float, p_production: float, p_canary: float
           ) -> dict[str, np.ndarray]:
    """Per run and look, each arm's labelled rows so far, and the mean and ddof=1 variance of its 0/1
    scores."""
    rng = np.random.default_rng(seed)
    n_c = np.cumsum(rng.binomial(every, share, size=(runs, looks)), axis=1)
    n_p = every * np.arange(1, looks + 1)[None, :] - n_c
    added = np.diff(n_c, axis=1, prepend=0)
    hits_c = np.cumsum(rng.binomial(added, p_canary), axis=1)
    hits_p = np.cumsum(rng.binomial(every - added, p_production), axis=1)
    arms: dict[str, np.ndarray] = {"n_c": n_c, "n_p": n_p}
    for side, n, hits in (("c", n_c, hits_c), ("p", n_p, hits_p)):
        safe = np.maximum(n, 2)
        arms[f"mean_{side}"] = hits / np.maximum(n, 1)
        arms[f"var_{side}"] = np.where(n > 1, hits * (n - hits) / (safe * (safe - 1)), 0.0)
    return arms


def _bounds(arms: dict[str, np.ndarray], planned: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    estimate, radius = difference_bounds(arms["n_c"], arms["mean_c"], arms["var_c"], arms["n_p"],
                                         arms["mean_p"], arms["var_p"], alpha=ALPHA, planned_labels=planned)
    return estimate - radius, estimate + radius


def _ceiling(runs: int) -> float:
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


# -- the confidence sequence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("share", "p_production", "effect"), [(0.5, 0.8, 0.03), (0.1, 0.7, -0.05)])
def test_the_sequence_covers_the_true_difference_at_every_look_at_once(share: float, p_production: float,
                                                                      effect: float) -> None:
    runs = 600
    arms = _looks(1, runs, looks=100, every=100, share=share, p_production=p_production,
                  p_canary=p_production + effect)
    lower, upper = _bounds(arms)
    judged = (arms["n_c"] >= 100) & (arms["n_p"] >= 100)
    missed = (judged & ((lower > effect) | (upper < effect))).any(axis=1)
    assert missed.mean() <= _ceiling(runs)

    # the same looks read with a fixed-sample 95% interval miss far more often: the simulation can tell
    estimate = arms["mean_c"] - arms["mean_p"]
    se = np.sqrt(arms["var_c"] / np.maximum(arms["n_c"], 1) + arms["var_p"] / np.maximum(arms["n_p"], 1))
    naive_missed = (judged & (np.abs(estimate - effect) > 1.96 * se)).any(axis=1)
    assert naive_missed.mean() > 2 * _ceiling(runs)


def test_equal_models_are_promoted_less_often_than_alpha_however_often_the_flow_looks() -> None:
    runs = 2000
    arms = _looks(2, runs, looks=150, every=100, share=0.2, p_production=0.8, p_canary=0.8)
    lower, upper = _bounds(arms)
    codes = label_decision(lower, upper, arms["n_c"], arms["n_p"], margin=0.0, min_labels=100)
    first = np.where((codes != 0).any(axis=1), codes[np.arange(runs), (codes != 0).argmax(axis=1)], 0)
    assert np.mean(first == 1) <= _ceiling(runs)
    assert np.mean(first == -1) <= _ceiling(runs)


def test_a_canary_worse_than_the_margin_allows_is_rarely_promoted_and_one_within_it_is() -> None:
    runs = 1000
    worse = _looks(3, runs, looks=100, every=100, share=0.5, p_production=0.8, p_canary=0.77)
    lower, upper = _bounds(worse)
    promoted = (label_decision(lower, upper, worse["n_c"], worse["n_p"], margin=0.02, min_labels=100) == 1)
    assert promoted.any(axis=1).mean() <= _ceiling(runs)

    cheaper = _looks(4, runs, looks=100, every=100, share=0.5, p_production=0.8, p_canary=0.8)
    lower, upper = _bounds(cheaper)
    codes = label_decision(lower, upper, cheaper["n_c"], cheaper["n_p"], margin=0.04, min_labels=100)
    assert (codes == 1).any(axis=1).mean() > 0.9  # no better, but shown within 0.04 of production


def _judge_until_verdict(seed: int, p_production: float, p_canary: float, policy: CanaryPolicy,
                         every: int = 200, cap: int = 6000) -> tuple[str, int]:
    """Labelled rows arrive ``every`` at a time; the real verdict judges after each batch."""
    rng = np.random.default_rng(seed)
    canary: list[float] = []
    production: list[float] = []
    quiet = check_guardrails(pd.DataFrame(), policy)
    for looked in range(every, cap + 1, every):
        to_canary = rng.random(every) < policy.share
        correct = rng.random(every) < np.where(to_canary, p_canary, p_production)
        canary += correct[to_canary].astype(float).tolist()
        production += correct[~to_canary].astype(float).tolist()
        bound = confidence_sequence(Arm.of(canary), Arm.of(production), alpha=policy.alpha,
                                    planned_labels=policy.planned_labels)
        verdict = decide(bound, quiet, policy, started_at=START, now=START + timedelta(hours=1))
        if verdict.action != CONTINUE:
            return verdict.action, looked
    return CONTINUE, cap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_clearly_better_canary_is_promoted_and_a_clearly_worse_one_rolled_back_within_bounded_labels(
        seed: int) -> None:
    policy = CanaryPolicy(share=0.5, planned_labels=1000)
    action, labels = _judge_until_verdict(seed, 0.70, 0.85, policy)
    assert action == PROMOTE and labels <= 1000
    action, labels = _judge_until_verdict(seed, 0.85, 0.70, policy)
    assert action == ROLLBACK and labels <= 1000


def test_a_side_with_fewer_than_two_rows_gives_an_unbounded_bound_and_no_nan() -> None:
    for canary, production in (([], []), ([1.0], [0.0, 1.0, 1.0]), ([1.0, 0.0], [1.0])):
        bound = confidence_sequence(Arm.of(canary), Arm.of(production), alpha=ALPHA, planned_labels=2000)
        assert bound.lower == -math.inf and bound.upper == math.inf and not bound.bounded
        assert not any(isinstance(v, float) and math.isnan(v) for v in vars(bound).values())
        assert bound.to_json()["lower"] is None and bound.to_json()["upper"] is None
    assert confidence_sequence(Arm.of([]), Arm.of([1.0]), alpha=ALPHA, planned_labels=10).estimate is None


def test_identical_rows_on_each_side_do_not_look_certain() -> None:
    bound = confidence_sequence(Arm.of([1.0, 1.0]), Arm.of([0.0, 0.0]), alpha=ALPHA, planned_labels=2000)
    assert bound.estimate == 1.0 and bound.lower < 0 < bound.upper
    policy = CanaryPolicy(min_labels=2)
    verdict = decide(bound, check_guardrails(pd.DataFrame(), policy), policy, started_at=START, now=START)
    assert verdict.action == CONTINUE

    same = confidence_sequence(Arm.of([1.0] * 300), Arm.of([1.0] * 300), alpha=ALPHA, planned_labels=2000)
    # nothing varies: no division by zero, and no verdict at margin 0
    assert (same.estimate, same.radius) == (0.0, 0.0)
    assert decide(same, check_guardrails(pd.DataFrame()), CanaryPolicy(), started_at=START,
                  now=START).action == CONTINUE


def test_the_bound_is_a_welch_interval_widened_by_the_mixture_least_near_the_planned_labels() -> None:
    rng = np.random.default_rng(5)
    canary, production = Arm.of(rng.normal(1.0, 2.0, 1000)), Arm.of(rng.normal(0.0, 1.0, 1000))
    welch = math.sqrt(canary.var / canary.n + production.var / production.n)
    ratios = {planned: confidence_sequence(canary, production, alpha=ALPHA, planned_labels=planned).radius
              / welch for planned in (200, 2000, 20_000)}
    assert ratios[2000] == pytest.approx(3.035, rel=0.01)  # at n = planned_labels: 3.04 against 1.96
    assert ratios[2000] < ratios[200] and ratios[2000] < ratios[20_000]
    with pytest.raises(ValueError, match="finite"):
        Arm.of([1.0, float("nan")])


# -- guardrails ----------------------------------------------------------------------------------------------


def _requests(role: str, count: int, *, minute: int = 0, latency_ms: float = 10.0, status: int = 200,
              errors: int = 0) -> pd.DataFrame:
    stamps = [START + timedelta(minutes=minute, seconds=59 * i / max(count, 1)) for i in range(count)]
    statuses = [500 if i < errors else status for i in range(count)]
    return pd.DataFrame({"request_id": [f"{role}-{minute}-{i}" for i in range(count)], "timestamp": stamps,
                         "model": "m", "model_version": 2 if role == "canary" else 1, "role": role,
                         "latency_ms": latency_ms, "status": statuses, "rows": 1})


def test_a_canary_three_times_slower_breaches_the_latency_guardrail_with_zero_labels() -> None:
    policy = CanaryPolicy()
    requests = pd.concat([_requests("production", 200, latency_ms=20.0),
                          _requests("canary", 60, latency_ms=60.0)])
    guard = check_guardrails(requests, policy)
    assert guard.enough and len(guard.breached) == 1 and "p99 latency" in guard.breached[0]
    assert guard.to_json()["sides"]["canary"]["p99_ms"] == pytest.approx(60.0)

    bound = confidence_sequence(Arm.of([]), Arm.of([]), alpha=ALPHA, planned_labels=2000)
    verdict = decide(bound, guard, policy, started_at=START, now=START + timedelta(minutes=5))
    assert verdict.action == ROLLBACK and "guardrail" in verdict.reason and "60.0 ms" in verdict.reason


def test_only_minutes_both_sides_served_are_compared() -> None:
    policy = CanaryPolicy()
    requests = pd.concat([
        _requests("production", 200, minute=0), _requests("canary", 60, minute=0),
        _requests("canary", 80, minute=1, latency_ms=5000.0, status=503, errors=80),  # production absent
        _requests("production", 100, minute=2, latency_ms=1.0),                     # canary absent
        _requests("shadow", 50, minute=0, latency_ms=9000.0),                       # neither side
    ])
    guard = check_guardrails(requests, policy)
    assert guard.minutes == 1 and guard.ignored_requests == 230
    assert guard.sides["canary"].requests == 60 and guard.sides["canary"].errors == 0
    assert guard.breached == [] and guard.enough


def test_an_error_rate_above_productions_by_more_than_allowed_breaches() -> None:
    policy = CanaryPolicy(max_error_rate_increase=0.02)
    requests = pd.concat([_requests("production", 400, errors=4), _requests("canary", 100, errors=5)])
    guard = check_guardrails(requests, policy)
    assert guard.sides["canary"].error_rate == pytest.approx(0.05)
    assert guard.sides["production"].error_rate == pytest.approx(0.01)
    assert len(guard.breached) == 1 and guard.breached[0].startswith("error rate 5.0% on the canary")

    within = pd.concat([_requests("production", 400, errors=4), _requests("canary", 100, errors=3)])
    assert check_guardrails(within, policy).breached == []


def test_refusals_by_the_version_count_as_errors_and_client_mistakes_do_not() -> None:
    policy = CanaryPolicy()
    production = _requests("production", 100)
    for status, breached in ((422, True), (409, True), (503, True), (404, False), (401, False), (429, False)):
        canary = _requests("canary", 100, status=status)
        assert bool(check_guardrails(pd.concat([production, canary]), policy).breached) is breached, status


def test_too_few_requests_on_a_side_breach_nothing_and_are_not_enough() -> None:
    policy = CanaryPolicy(min_requests=50)
    requests = pd.concat([_requests("production", 200), _requests("canary", 20, latency_ms=900.0, errors=20)])
    guard = check_guardrails(requests, policy)
    assert not guard.enough and guard.breached == []
    empty = check_guardrails(pd.DataFrame(), policy)
    assert not empty.enough and empty.breached == [] and empty.sides["canary"].requests == 0


# -- the verdict ---------------------------------------------------------------------------------------------


def _bound(estimate: float, radius: float, n_canary: int = 812, n_production: int = 7204) -> Bound:
    return Bound(estimate=estimate, lower=estimate - radius, upper=estimate + radius, radius=radius,
                 alpha=ALPHA, n_canary=n_canary, n_production=n_production, planned_labels=2000)


def test_the_verdict_reads_as_a_sentence_with_the_numbers() -> None:
    policy = CanaryPolicy()
    quiet = check_guardrails(pd.DataFrame(), policy)
    verdict = decide(_bound(0.031, 0.027), quiet, policy, started_at=START, now=START + timedelta(hours=3),
                     metric="accuracy")
    assert verdict.action == PROMOTE
    assert verdict.reason == ("canary better: accuracy difference +0.031 (95% confidence sequence +0.004 to "
                              "+0.058) on 812 canary and 7,204 production labelled rows")
    assert verdict.evidence["bound"]["lower"] == pytest.approx(0.004)

    worse = decide(_bound(-0.05, 0.02), quiet, policy, started_at=START, now=START, metric="accuracy")
    assert worse.action == ROLLBACK and worse.reason.startswith("canary worse: accuracy difference -0.050")


def test_a_guardrail_breach_rolls_back_even_when_the_labels_say_better() -> None:
    policy = CanaryPolicy()
    slow = check_guardrails(pd.concat([_requests("production", 100),
                                       _requests("canary", 100, latency_ms=100.0)]), policy)
    assert decide(_bound(0.1, 0.01), slow, policy, started_at=START, now=START).action == ROLLBACK


def test_labels_decide_only_once_each_side_has_min_labels() -> None:
    policy = CanaryPolicy(min_labels=100)
    quiet = check_guardrails(pd.DataFrame(), policy)
    early = decide(_bound(0.2, 0.05, n_canary=99, n_production=900), quiet, policy, started_at=START,
                   now=START)
    assert early.action == CONTINUE and early.reason.startswith("waiting for labels: 99 canary")
    unsure = decide(_bound(0.01, 0.05), quiet, policy, started_at=START, now=START)
    assert unsure.action == CONTINUE
    assert unsure.reason.startswith("not enough evidence yet: score difference +0.010")
    assert unsure.reason.endswith("the whole sequence above or below 0")


def test_the_margin_promotes_a_canary_shown_no_worse_than_it() -> None:
    quiet = check_guardrails(pd.DataFrame())
    tied = _bound(-0.002, 0.007)
    assert decide(tied, quiet, CanaryPolicy(), started_at=START, now=START).action == CONTINUE
    verdict = decide(tied, quiet, CanaryPolicy(margin=0.01), started_at=START, now=START)
    assert verdict.action == PROMOTE and "no worse than production within the margin 0.01" in verdict.reason
    assert decide(_bound(-0.03, 0.01), quiet, CanaryPolicy(margin=0.01), started_at=START,
                  now=START).action == ROLLBACK


def test_past_max_duration_without_a_verdict_on_timeout_decides() -> None:
    quiet = check_guardrails(pd.DataFrame())
    undecided = _bound(0.0, 0.05)
    policy = CanaryPolicy(max_duration="2d")
    assert decide(undecided, quiet, policy, started_at=START,
                  now=START + timedelta(hours=47)).action == CONTINUE
    late = decide(undecided, quiet, policy, started_at=START, now=START + timedelta(days=2, minutes=1))
    assert late.action == ROLLBACK and "max_duration 2d" in late.reason and late.evidence["timed_out"]
    keep = CanaryPolicy(max_duration="2d", on_timeout="continue")
    assert decide(undecided, quiet, keep, started_at=START, now=START + timedelta(days=9)).action == CONTINUE
    # a label verdict reached late is still that verdict
    assert decide(_bound(0.1, 0.05), quiet, policy, started_at=START,
                  now=START + timedelta(days=3)).action == PROMOTE


# -- per-row scores ------------------------------------------------------------------------------------------


def _frame(labels: list[Any], **outputs: list[Any]) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(len(labels))], "label": labels,
                         **{f"output.{name}": values for name, values in outputs.items()}})


def test_binary_rows_score_accuracy_brier_and_log_loss_and_skip_unlabelled_rows() -> None:
    frame = _frame([1, 0, None, 1], label=[1, 1, 0, 0], probability=[0.9, 0.6, 0.5, 0.2])
    accuracy = row_scores(frame, task="binary", classes=[0, 1], metric="accuracy")
    np.testing.assert_array_equal(accuracy, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(row_scores(frame, task="binary", classes=[0, 1], metric="brier"),
                               [-0.01, -0.36, -0.64])
    np.testing.assert_allclose(row_scores(frame, task="binary", classes=[0, 1], metric="neg_log_loss"),
                               np.log([0.9, 0.4, 0.2]))
    assert default_metric("binary") == "accuracy"


def test_labels_match_classes_by_value_and_a_foreign_label_is_refused() -> None:
    frame = _frame(["1", True, 0.0], label=[1, 1, 1], probability=[0.8, 0.8, 0.8])
    np.testing.assert_array_equal(row_scores(frame, task="binary", classes=[0, 1]), [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="not one of the classes"):
        row_scores(_frame([2], label=[1], probability=[0.5]), task="binary", classes=[0, 1])


def test_multiclass_rows_score_against_the_probability_of_each_class() -> None:
    classes = ["a", "b", "c"]
    frame = _frame(["a", "c", "b"], label=["a", "b", "b"],
                   probabilities=[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.5, 0.3]])
    np.testing.assert_array_equal(row_scores(frame, task="multiclass", classes=classes), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(row_scores(frame, task="multiclass", classes=classes, metric="log_loss"),
                               np.log([0.7, 0.3, 0.5]))
    np.testing.assert_allclose(row_scores(frame, task="multiclass", classes=classes, metric="brier"),
                               [-(0.09 + 0.04 + 0.01), -(0.01 + 0.36 + 0.49), -(0.04 + 0.25 + 0.09)])
    with pytest.raises(ValueError, match="2 columns"):
        row_scores(_frame(["a"], label=["a"], probabilities=[[0.5, 0.5]]), task="multiclass", classes=classes,
                   metric="brier")


def test_regression_rows_score_minus_the_absolute_or_squared_error() -> None:
    frame = _frame([3.0, None, -1.0], prediction=[2.5, 0.0, 1.0])
    np.testing.assert_allclose(row_scores(frame, task="regression", classes=None), [-0.5, -2.0])
    np.testing.assert_allclose(row_scores(frame, task="regression", classes=None, metric="squared_error"),
                               [-0.25, -4.0])
    assert default_metric("regression") == "absolute_error"


def test_a_metric_that_is_not_a_per_row_mean_or_not_of_the_task_is_refused() -> None:
    frame = _frame([1.0], prediction=[1.0])
    with pytest.raises(ValueError, match="not a mean of per-row scores"):
        row_scores(frame, task="regression", metric="r2")
    with pytest.raises(ValueError, match="does not apply to a regression model"):
        row_scores(frame, task="regression", metric="accuracy")
    with pytest.raises(ValueError, match="no served 'probability'"):
        row_scores(_frame([1], label=[1]), task="binary", classes=[0, 1], metric="brier")
    assert row_scores(_frame([None], label=[1]), task="binary", classes=[0, 1]).size == 0


# -- the policy ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("share", 0), ("share", 1.5), ("alpha", 1.0), ("margin", -0.1), ("metric", "roc_auc"),
    ("min_labels", 1), ("max_duration", "two days"), ("on_timeout", "promote"), ("max_latency_ratio", 0.5),
    ("schedule", "0m"), ("shares", 0.2),
])
def test_an_invalid_policy_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        CanaryPolicy.model_validate({field: value})
    assert field in str(caught.value)


def test_policy_durations_and_metric_names_read_as_written() -> None:
    policy = CanaryPolicy(max_duration="1d12h", schedule="10m", metric="neg_mean_absolute_error")
    assert policy.timeout == timedelta(hours=36) and policy.interval == timedelta(minutes=10)
    assert policy.metric == "absolute_error"
    assert parse_duration("90s") == timedelta(seconds=90) and parse_duration(3600) == timedelta(hours=1)
    assert CanaryPolicy.model_validate(policy.model_dump(mode="json")) == policy
