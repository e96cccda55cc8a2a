"""Reproduce a registered version from its lineage alone, and show that it comes out the same.

Everything comes from the registry: the training set snapshot (read back only if its bytes still
hash to the recorded sha256), the spec the training run ran (holdout, CV, metric, seed), and the
version's params (family and every estimator parameter, ``random_state`` included). Nothing is
fetched from the feature store again, so later data cannot leak in. The check compares the data
hash, the params, the CV and holdout metrics, and the predictions of the retrained model with
those of the registered artifact on the holdout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from prefect import flow

from flows import evaluate
from flows.errors import ReproductionMismatch
from flows.evaluate import columns_of
from flows.search import CVSettings, TrialConfig, run_trial
from flows.snapshot import read_snapshot
from flows.spec import ModelSpec
from flows.tasks import label_values
from registry import ModelRef, Registry
from registry.flavors.sklearn import SklearnPredictor


@dataclass(frozen=True)
class ReproduceResult:
    ref: str
    data_sha256: str
    data_verified: bool
    family: str
    params: dict[str, Any]
    recorded: dict[str, float]
    reproduced: dict[str, float]
    max_prediction_diff: float
    matches: bool
    mismatches: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        lines = [f"# Reproduction of {self.ref}: {'MATCHES' if self.matches else 'DIFFERS'}", "",
                 f"Training set sha256 `{self.data_sha256}` (verified: {self.data_verified}); family {self.family}.",
                 "", "| metric | recorded | reproduced |", "|---|---|---|"]
        for key, value in self.reproduced.items():
            lines.append(f"| {key} | {self.recorded.get(key)} | {value} |")
        lines += ["", f"Largest difference in holdout predictions: {self.max_prediction_diff:.3g}"]
        lines += [f"- {m}" for m in self.mismatches]
        return "\n".join(lines)


def reproduce(ref: str, *, registry: Registry | None = None, tolerance: float = 1e-9,
              strict: bool = False) -> ReproduceResult:
    """Retrain ``ref`` (``name:3``, ``name@production``) from its recorded lineage and compare."""
    registry = registry or Registry.from_url()
    mv = registry.get(ModelRef.parse(ref))
    if not (mv.training_set_uri and mv.training_set_sha256 and mv.training_run_id):
        raise ReproductionMismatch(f"{mv.ref} lacks lineage (snapshot URI, hash or training run): cannot reproduce")
    run = registry.get_run(mv.training_run_id)
    spec = ModelSpec.model_validate(run.spec)
    frame = read_snapshot(mv.training_set_uri, mv.training_set_sha256)  # raises IntegrityError on a changed file

    params = dict(mv.params)
    family = params.pop("family")
    schema = {c["name"]: c["dtype"] for c in mv.signature["inputs"]}
    features = list(schema)
    numeric = [c for c, d in schema.items() if d != "string"]
    categorical = [c for c, d in schema.items() if d == "string"]
    split = evaluate.time_holdout(frame, timestamp=spec.labels.timestamp_column, fraction=spec.holdout.fraction,
                                  label=spec.label, task=spec.task)
    X, y = split.train[features], label_values(spec.task, split.train[spec.label].to_numpy())

    cv = run_trial(TrialConfig(0, family, params), X, y,
                   CVSettings(spec.task, spec.metric, spec.cv.folds, spec.cv.strategy, spec.seed, tuple(numeric),
                              tuple(categorical)))
    model = evaluate.fit_final(family, params, X, y, numeric, categorical, spec.task)
    holdout = evaluate.evaluate_candidate(model, mv.signature, split.holdout, spec.label, spec.metric)
    reproduced = {f"cv_{spec.metric}": cv.metrics.get("cv_mean", math.nan),
                  **{f"holdout_{k}": v for k, v in holdout.items()}}
    recorded = {k: mv.metrics[k] for k in reproduced if k in mv.metrics}

    original = registry.load_predictor(mv).predict(columns_of(split.holdout, features))
    again = SklearnPredictor(model, mv.signature).predict(columns_of(split.holdout, features))
    max_diff = max((_largest_difference(original[name], again[name]) for name in again), default=0.0)

    mismatches = [f"{k}: recorded {recorded[k]!r}, reproduced {v!r}" for k, v in reproduced.items()
                  if k in recorded and not math.isclose(recorded[k], v, rel_tol=0.0, abs_tol=tolerance)]
    if max_diff > tolerance:
        mismatches.append(f"holdout predictions differ by up to {max_diff:.3g}")
    if run.training_set_sha256 and run.training_set_sha256 != mv.training_set_sha256:
        mismatches.append("training run and version record different training-set hashes")
    result = ReproduceResult(ref=mv.ref, data_sha256=mv.training_set_sha256, data_verified=True, family=family,
                             params=params, recorded=recorded, reproduced=reproduced, max_prediction_diff=max_diff,
                             matches=not mismatches, mismatches=mismatches)
    if strict and not result.matches:
        raise ReproductionMismatch(f"{mv.ref} did not reproduce: {'; '.join(mismatches)}")
    return result


def _largest_difference(a: Any, b: Any) -> float:
    """Numbers: the largest absolute difference; classes: 0 when equal everywhere, else 1."""
    a, b = np.asarray(a), np.asarray(b)
    if a.size == 0:
        return 0.0
    if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
        return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return 0.0 if np.array_equal(a, b) else 1.0


@flow(name="reproduce", log_prints=True)
def reproduce_flow(ref: str) -> dict[str, Any]:
    """Retrain a registered version from its lineage; fails if the data, params or metrics differ."""
    from prefect.artifacts import create_markdown_artifact

    registry = Registry.from_url()  # the settings' registry: a URL with a password is never a parameter
    try:
        result = reproduce(ref, registry=registry)
    finally:
        registry.close()
    create_markdown_artifact(key="reproduction", markdown=result.to_markdown(),
                             description=f"Reproduction of {result.ref}")
    if not result.matches:
        raise ReproductionMismatch(f"{result.ref} did not reproduce: {'; '.join(result.mismatches)}")
    return result.to_dict()
