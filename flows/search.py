"""Candidate search: every (family, params) of the spec, k-fold cross-validated, in parallel on Ray.

Why Ray core tasks and not Ray Tune: the trials are fixed up front by the spec (deterministic from
the seed, so they can be recorded and reproduced), each is a short scikit-learn fit with no
intermediate results to report or schedule on, and a plain task costs a few milliseconds where a
Tune trial actor, its storage and its syncing cost far more per trial. What we need from Ray is
what tasks give: resources per trial (``num_cpus``), the training data put in the object store
once and shared by every trial on a node, failure isolation, and the same code on a laptop or a
cluster (``RAY_ADDRESS``).

A trial never raises: a bad parameter value, a crash or a timeout becomes a ``failed`` result with
its error, recorded like any other, and the search goes on.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flows.estimators import build_pipeline, with_seed
from flows.tasks import splitter as task_splitter


@dataclass(frozen=True)
class TrialConfig:
    index: int
    family: str
    params: dict[str, Any]


@dataclass(frozen=True)
class CVSettings:
    """Everything a trial needs besides its params and the data; small, so it travels by value."""

    task: str
    metric: str
    folds: int
    strategy: str
    seed: int
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]


@dataclass
class TrialResult:
    index: int
    family: str
    params: dict[str, Any]
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None

    @property
    def score(self) -> float:
        """The CV mean of the spec's metric; -inf for failed trials so they sort last."""
        value = self.metrics.get("cv_mean")
        return float(value) if self.status == "succeeded" and value is not None else -math.inf

    def to_record(self) -> dict[str, Any]:
        """The fields ``Registry.record_trials`` takes."""
        out = asdict(self)
        out.pop("index")
        return out


ProgressCallback = Callable[[int, int, TrialResult], None]


def trial_configs(spec_trials: Sequence[tuple[str, dict[str, Any]]], seed: int, task: str) -> list[TrialConfig]:
    """Number the spec's trials and pin their seed (``random_state``) into the recorded params."""
    return [TrialConfig(i, family, with_seed(family, params, seed, task))
            for i, (family, params) in enumerate(spec_trials)]


def splitter(settings: CVSettings) -> Any:
    return task_splitter(settings.task, settings.strategy, settings.folds, settings.seed)  # type: ignore[arg-type]


def run_trial(config: TrialConfig, X: pd.DataFrame, y: np.ndarray, settings: CVSettings) -> TrialResult:
    """Cross-validate one configuration; one thread (the trial owns one CPU). Never raises."""
    from sklearn.model_selection import cross_validate
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    try:
        pipeline = build_pipeline(config.family, config.params, settings.numeric, settings.categorical,
                                  settings.task)
        with threadpool_limits(limits=1):
            scores = cross_validate(pipeline, X, y, cv=splitter(settings), scoring=settings.metric,
                                    n_jobs=1, error_score="raise")
        test = np.asarray(scores["test_score"], dtype=float)
        metrics = {"cv_mean": float(test.mean()), "cv_std": float(test.std()),
                   "fit_time_s": float(np.sum(scores["fit_time"])), "folds": float(len(test))}
        for i, value in enumerate(test):
            metrics[f"fold_{i}"] = float(value)
        return TrialResult(config.index, config.family, config.params, "succeeded", metrics,
                           time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a trial's failure is data, not a crash of the search
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        return TrialResult(config.index, config.family, config.params, "failed", {},
                           time.perf_counter() - start, error)


def run_sequential(configs: Sequence[TrialConfig], X: pd.DataFrame, y: np.ndarray, settings: CVSettings,
                   on_result: ProgressCallback | None = None) -> list[TrialResult]:
    """The same trials one after another in this process (tests without Ray, the benchmark baseline)."""
    results: list[TrialResult] = []
    for config in configs:
        results.append(run_trial(config, X, y, settings))
        if on_result:
            on_result(len(results), len(configs), results[-1])
    return results


def _cluster_slots(cpus_per_trial: float) -> int:
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, int(cpus // cpus_per_trial))


def run_on_ray(configs: Sequence[TrialConfig], X: pd.DataFrame, y: np.ndarray, settings: CVSettings, *,
               cpus_per_trial: float = 1.0, timeout_s: float | None = None,
               on_result: ProgressCallback | None = None) -> list[TrialResult]:
    """Run the trials as Ray tasks, at most one per free slot of the cluster at a time.

    The data goes into the object store once (``ray.put``) and every task reads it from there.
    Keeping only as many tasks in flight as the cluster has slots makes the per-trial timeout
    measure running time rather than queueing time; a timed-out or crashed task is cancelled and
    recorded as failed. Results come back in ``configs`` order.
    """
    import ray

    from core.ray_runtime import ensure_ray

    ensure_ray()
    remote_trial = ray.remote(run_trial).options(num_cpus=cpus_per_trial, max_retries=0)
    x_ref, y_ref = ray.put(X), ray.put(y)
    slots = _cluster_slots(cpus_per_trial)
    pending = list(configs)
    in_flight: dict[Any, tuple[TrialConfig, float]] = {}
    results: dict[int, TrialResult] = {}

    def finish(result: TrialResult) -> None:
        results[result.index] = result
        if on_result:
            on_result(len(results), len(configs), result)

    while pending or in_flight:
        while pending and len(in_flight) < slots:
            config = pending.pop(0)
            in_flight[remote_trial.remote(config, x_ref, y_ref, settings)] = (config, time.monotonic())
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            config, started = in_flight.pop(ref)
            try:
                finish(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - worker died, object lost, ...
                finish(TrialResult(config.index, config.family, config.params, "failed", {},
                                   time.monotonic() - started, f"{type(exc).__name__}: {exc}"))
        if timeout_s is not None:
            now = time.monotonic()
            for ref, (config, started) in list(in_flight.items()):
                if now - started > timeout_s:
                    ray.cancel(ref, force=True)
                    in_flight.pop(ref)
                    finish(TrialResult(config.index, config.family, config.params, "failed", {}, now - started,
                                       f"TimeoutError: trial exceeded {timeout_s}s and was cancelled"))
    return [results[c.index] for c in configs]


def leaderboard(results: Sequence[TrialResult]) -> list[TrialResult]:
    """Succeeded trials best first (ties: lower CV std, then spec order), failed ones after."""
    return sorted(results, key=lambda r: (-r.score, r.metrics.get("cv_std", math.inf), r.index))


def leaderboard_rows(results: Sequence[TrialResult], metric: str, limit: int = 50) -> list[dict[str, Any]]:
    """Rows for the Prefect table artifact: rank, family, params, score, status, error line."""
    rows = []
    for rank, r in enumerate(leaderboard(results)[:limit], start=1):
        rows.append({
            "rank": rank, "family": r.family, "status": r.status,
            f"cv_{metric}": round(r.metrics["cv_mean"], 5) if "cv_mean" in r.metrics else None,
            "cv_std": round(r.metrics["cv_std"], 5) if "cv_std" in r.metrics else None,
            "seconds": round(r.duration_s, 2),
            "params": ", ".join(f"{k}={v}" for k, v in sorted(r.params.items())),
            "error": (r.error or "").splitlines()[0][:160] if r.error else "",
        })
    return rows
