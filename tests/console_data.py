"""A registry filled through the ``Registry`` API as the flows fill it, at any size: what the console's tests and
its benchmark (``bench/bench_console.py``) read.

Each version has a training run with trials, a real scikit-learn artifact, lineage fields, metrics and tags
as the training flow writes them; reports carry per-feature scores and pictures as the monitor writes them.
The numbers are synthetic but shaped like the real thing; the real thing (the demo's registry, which the
flows filled) is what the browser tests open. A canary (:func:`start_canary_story`, :func:`canary_look`) is
judged by the delivery package's own rules (confidence sequence, guardrails, verdict) on synthetic scores
and requests, and its reports and audit events are written as the canary flow writes them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from registry import Registry
from registry.models import MonitoringReport

FAMILIES = ("logistic_regression", "random_forest", "hist_gradient_boosting")
NUMERIC = [f"num_{i:02d}" for i in range(14)]
CATEGORICAL = [f"cat_{i:02d}" for i in range(6)]


@dataclass(frozen=True)
class Filled:
    model: str
    versions: int
    trials: int
    reports: int
    big_run_id: int
    report_ids: list[int]


def _artifact() -> bytes:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from registry.flavors.base import get_flavor

    x = np.random.default_rng(0).normal(size=(60, 3))
    return get_flavor("sklearn").save(LogisticRegression().fit(x, x[:, 0] > 0))


def _signature() -> dict:
    inputs = [{"name": n, "dtype": "float64", "nullable": True} for n in NUMERIC]
    inputs += [{"name": n, "dtype": "string", "nullable": True} for n in CATEGORICAL]
    return {"inputs": inputs, "outputs": [{"name": "prediction", "dtype": "int64"}, {"name": "probability",
                                                                                       "dtype": "float64"}],
            "task": "classification", "classes": [0, 1], "label": "label", "feature_service": "svc_v1",
            "entity_keys": [{"name": "entity_id", "dtype": "int64"}], "request_fields": []}


def _picture(rng: random.Random, name: str, shift: float) -> dict:
    if name in CATEGORICAL:
        cats = [f"c{i}" for i in range(8)]
        ref = [rng.random() + 0.2 for _ in cats]
        win = [r * (1 + shift * rng.random()) for r in ref]
        return {"kind": "categories", "categories": cats, "reference": [r / sum(ref) for r in ref],
                "window": [w / sum(win) for w in win], "reference_n": 5000, "window_n": 800}
    edges = [i / 2 for i in range(-10, 11)]
    ref = [math.exp(-((e + 0.25) ** 2) / 2) for e in edges[:-1]]
    win = [math.exp(-((e + 0.25 - shift) ** 2) / 2) for e in edges[:-1]]
    return {"kind": "histogram", "edges": edges, "reference": [r / sum(ref) for r in ref],
            "window": [w / sum(win) for w in win], "reference_n": 5000, "window_n": 800}


def fill(registry: Registry, *, model: str = "console_model", versions: int = 20, trials: int = 100,
         reports: int = 30, big_run_share: float = 0.5, seed: int = 0) -> Filled:
    """``versions`` versions (each from its own training run), ``trials`` trials in all (``big_run_share`` of them
    in the latest run, the rest spread over the others), ``reports`` monitoring reports; v1 and the latest
    version promoted to production in turn, the one before the latest to staging."""
    rng = random.Random(seed)
    artifact = _artifact()
    signature = _signature()
    big = max(1, int(trials * big_run_share)) if versions else 0
    rest = trials - big
    per_run = [rest // max(versions - 1, 1) + (1 if i < rest % max(versions - 1, 1) else 0)
               for i in range(max(versions - 1, 0))] + [big]
    start = datetime(2026, 10, 1, tzinfo=UTC)
    big_run_id = 0
    for index in range(versions):
        run = registry.start_run(model, spec={"metric": "roc_auc", "feature_service": "svc_v1", "cv": {"folds": 3}},
                                 flow_run_id=f"{index:08x}-0000-4000-8000-000000000000",
                                 training_set_sha256=f"{index:064x}")
        rows = [{"family": FAMILIES[t % 3], "params": {"C": round(rng.uniform(0.01, 10), 3), "max_depth": t % 9},
                 "metrics": {"cv_mean": rng.uniform(0.7, 0.9), "cv_std": rng.uniform(0.001, 0.03)},
                 "duration_s": rng.uniform(0.1, 4.0), "status": "succeeded" if t % 17 else "failed",
                 "error": None if t % 17 else "ValueError: the solver did not converge"}
                for t in range(per_run[index])]
        recorded = registry.record_trials(run.id, rows)  # type: ignore[arg-type]
        best = max((r for r in recorded if r.status == "succeeded"), key=lambda r: r.metrics["cv_mean"],
                   default=None)
        holdout = rng.uniform(0.75, 0.9)
        mv = registry.register_artifact(
            model, artifact, flavor="sklearn", signature=signature,
            params={"family": best.family if best else FAMILIES[0], **(best.params if best else {})},
            metrics={"cv_roc_auc": best.metrics["cv_mean"] if best else 0.0, "holdout_roc_auc": holdout,
                     "holdout_accuracy": holdout - 0.05, "training_rows": 8000.0 + index, "holdout_rows": 2000.0,
                     "trials": float(len(rows))},
            tags={"family": best.family if best else FAMILIES[0], "task": "classification", "metric": "roc_auc",
                  "decision": "production"},
            feature_service="svc_v1", training_set_uri=f"file:///data/snapshots/{index:064x}.parquet",
            training_set_sha256=f"{index:064x}", code_version=f"git:{index:040x}",
            package_versions={"scikit-learn": "1.7.2", "esteira": f"0.1.{index % 3}"},
            flow_run_id=run.flow_run_id, training_run_id=run.id, actor="fill")
        registry.finish_run(run.id, status="succeeded", best_trial_id=best.id if best else None,  # type: ignore[arg-type]
                            registered_version=mv.version,
                            summary={"decision": "production", "reason": "beats production on the holdout",
                                     "holdout_metric": holdout, "production_metric": holdout - 0.01})
        big_run_id = run.id  # type: ignore[assignment]
    if versions:
        registry.promote(model, 1, reason="first model", actor="fill")
        if versions > 1:
            registry.promote(model, versions, reason="better on the holdout", actor="fill")
            registry.promote(model, versions - 1, alias="staging", reason="candidate", actor="fill")
    report_ids = []
    for index in range(reports):
        shift = 1.5 if index % 10 == 9 else 0.1
        features = {}
        for name in NUMERIC + CATEGORICAL:
            drifted = shift > 1 and rng.random() < 0.6
            algorithm = "chi-square" if name in CATEGORICAL else "ks"
            features[name] = {"algorithm": algorithm, "statistic": rng.uniform(0.3, 0.6) if drifted else
                              rng.uniform(0, 0.05), "pvalue": 0.0 if drifted else rng.uniform(0.2, 0.9),
                              "drifted": drifted, "picture": _picture(rng, name, shift)}
        drifted_names = sorted(n for n, f in features.items() if f["drifted"])
        share = len(drifted_names) / len(features)
        decision = "retrain" if share >= 0.3 else ("warn" if drifted_names else "none")
        at = start + timedelta(hours=index)
        report = registry.record_report(MonitoringReport(
            model_name=model, version=max(versions, 1), window_start=at - timedelta(hours=1), window_end=at,
            n_rows=800, n_labelled=200, status="ok",
            drift={"features": features, "unscored": [], "drifted": drifted_names, "source": "gateway-log"},
            drift_share=share,
            performance={"status": "ok", "metric": "roc_auc", "n_labelled": 200,
                         "value": 0.85 - (0.1 if shift > 1 else 0) + rng.uniform(-0.01, 0.01), "baseline": 0.85,
                         "baseline_key": "holdout_roc_auc"},
            decision=decision, reason=f"drift share {share:.2f}", created_at=at,
            triggered_run="00000000-0000-4000-8000-%012d" % index if decision == "retrain" else None))
        report_ids.append(report.id)  # type: ignore[arg-type]
    return Filled(model=model, versions=versions, trials=trials, reports=reports, big_run_id=big_run_id,
                  report_ids=report_ids)


# -- a canary ----------------------------------------------------------------------------------------------

CANARY_ACTOR = "canary-flow"


@dataclass(frozen=True)
class CanaryStory:
    model: str
    production: int
    canary: int
    share: float


def start_canary_story(registry: Registry, *, model: str = "canary_model", reports: int = 0,
                       share: float = 0.3) -> CanaryStory:
    """Two versions with production on v1 and v2 out as the canary: started on a tenth of requests, then
    raised to ``share`` (a ``canary_share`` event). ``reports`` monitoring reports as :func:`fill` writes."""
    fill(registry, model=model, versions=2, trials=4, reports=reports)  # production v2, staging v1
    registry.rollback(model, reason="v2 goes out as a canary first", actor="fill")
    registry.start_canary(model, 2, share=0.1, reason="retrained v2 on a tenth of requests", actor="retrain")
    registry.set_canary_share(model, share, reason="no error in the first hour", actor="ops")
    return CanaryStory(model=model, production=1, canary=2, share=share)


def _requests(rng: random.Random, start: datetime, canary_errors: float) -> object:
    """Ten minutes in which both sides served: production 14 requests a minute, the canary 6."""
    import pandas as pd

    rows = []
    start = start.replace(second=0, microsecond=0)  # whole minutes: every request in a minute both served
    for minute in range(10):
        for role, count, errors in (("production", 14, 0.0), ("canary", 6, canary_errors)):
            for i in range(count):
                rows.append({"timestamp": start + timedelta(minutes=minute, seconds=i), "role": role,
                             "latency_ms": rng.uniform(2.0, 9.0),
                             "status": 500 if rng.random() < errors else 200,
                             "rows": 1, "model_version": 2 if role == "canary" else 1})
    return pd.DataFrame(rows)


LOOKS = {  # labelled rows (canary, production), accuracy of each side, share of the canary's requests failing
    "continue": ((1, 12), (0.9, 0.8), 0.0),
    "promote": ((900, 2100), (0.93, 0.8), 0.0),
    "rollback": ((30, 70), (0.8, 0.8), 0.25),
}


def canary_look(registry: Registry, story: CanaryStory, verdict: Literal["continue", "promote", "rollback"],
                *, seed: int = 0) -> int:
    """One look of the canary flow at ``story``'s canary, on numbers that give ``verdict``: the report (kind
    ``canary``, its evidence in ``performance``) and, for a final verdict, ``Registry.end_canary`` with the
    verdict's details. Returns the report's id."""
    import numpy as np

    from flows.delivery.guardrails import check_guardrails
    from flows.delivery.policy import CanaryPolicy
    from flows.delivery.sequential import Arm, confidence_sequence
    from flows.delivery.verdict import decide

    rng = random.Random(seed)
    (n_canary, n_production), (p_canary, p_production), canary_errors = LOOKS[verdict]
    policy = CanaryPolicy()
    started = next(e.created_at for e in reversed(registry.history(story.model, alias="canary", limit=20))
                   if e.action == "promote" and e.to_version == story.canary)
    started = started if started.tzinfo else started.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    scores = {"canary": np.array([float(rng.random() < p_canary) for _ in range(n_canary)]),
              "production": np.array([float(rng.random() < p_production) for _ in range(n_production)])}
    bound = confidence_sequence(Arm.of(scores["canary"]), Arm.of(scores["production"]), alpha=policy.alpha,
                                planned_labels=policy.planned_labels)
    guardrails = check_guardrails(_requests(rng, started, canary_errors), policy)  # type: ignore[arg-type]
    decided = decide(bound, guardrails, policy, started_at=started, now=now, metric="accuracy")
    assert decided.action == verdict, decided
    served = {"canary": 3 * n_canary + 5, "production": 3 * n_production + 11}
    performance = {
        "metric": "accuracy", "production_version": story.production, "canary_version": story.canary,
        "share": registry.canary_share(story.model),
        "labelled": {"canary": n_canary, "production": n_production},
        "served_rows": served,
        "mean": {side: float(np.mean(v)) if len(v) else None for side, v in scores.items()},
        "bound": bound.to_json(), "guardrails": guardrails.to_json(), "evidence": decided.evidence,
        "policy": policy.model_dump(mode="json"), "note": "",
    }
    report = registry.record_report(MonitoringReport(
        model_name=story.model, kind="canary", version=story.canary, window_start=started, window_end=now,
        n_rows=sum(served.values()), n_labelled=n_canary + n_production, status="ok", performance=performance,
        decision=decided.action, reason=decided.reason,
        flow_run_id=f"{seed:08x}-1111-4000-8000-000000000000"))
    if decided.final:
        details = {"report_id": report.id, "metric": "accuracy", "bound": bound.to_json(),
                   "guardrails": guardrails.breached, "production_version": story.production}
        registry.end_canary(story.model, promote=verdict == "promote", actor=CANARY_ACTOR, details=details,
                            reason=f"canary verdict (report {report.id}): {decided.reason}",
                            version=story.canary)
    return report.id  # type: ignore[return-value]
