"""A registry filled through the ``Registry`` API as the flows fill it, at any size: what the console's tests and
its benchmark (``bench/bench_console.py``) read.

Each version has a training run with trials, a real scikit-learn artifact, lineage fields, metrics and tags
as the training flow writes them; reports carry per-feature scores and pictures as the monitor writes them.
The numbers are synthetic but shaped like the real thing; the real thing (the demo's registry, which the
flows filled) is what the browser tests open.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
