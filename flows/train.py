"""The train flow: features -> snapshot -> validation -> search on Ray -> evaluation -> registry.

:func:`train` is the whole procedure as a plain function (tests and the CLI call it); each stage is
a function of its own module. :func:`train_flow` is the Prefect wrapper: it runs the same stages
as tasks (retries where a fault can be transient: reading features, writing the snapshot, reading
production) and publishes the validation report, trial leaderboard and evaluation as artifacts.

Failure semantics, because a failing training must leave serving untouched:

* bad input (unknown feature service, label absent, empty or out-of-range entity query, a search
  space the estimator rejects) raises :class:`TrainingInputError` before anything is written;
* failed data validation raises :class:`DataValidationError` carrying the report; the training run
  is recorded as failed, no version is registered, no alias moves;
* a failed trial is recorded with its error and the search goes on; only if all fail does the run
  fail (:class:`SearchFailed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from prefect import flow

from core.project import Project, current_project, optional_project
from core.settings import get_settings
from flows import evaluate, promotion
from flows.calibration import fit_calibration
from flows.errors import DataValidationError, SearchFailed, TrainingInputError
from flows.features import FeastFetcher, FeatureFetcher, ServiceInfo, input_schema, read_labels, select_rows
from flows.lineage import package_versions
from flows.reporting import LogReporter, Reporter
from flows.search import CVSettings, TrialResult, leaderboard, leaderboard_rows, run_on_ray, run_sequential
from flows.search import trial_configs as number_trials
from flows.snapshot import Snapshot, write_snapshot
from flows.spec import ModelSpec, resolve_spec
from flows.tasks import label_values, output_signature, plain_class
from flows.validation import ValidationReport, coerce_features, infer_kinds, validate_training_frame
from registry import Registry
from registry.errors import NotFound

log = logging.getLogger("esteira.flows.train")
T = TypeVar("T")
Step = Callable[..., Any]
"""``step(fn, *args, name=..., retries=...)``: runs ``fn`` directly, or as a Prefect task in a flow."""


def direct_step(fn: Callable[..., T], *args: Any, name: str = "", retries: int = 0, **kwargs: Any) -> T:
    return fn(*args, **kwargs)


@dataclass
class TrainingSet:
    """The fetched training set and what the pipeline needs to know about its columns."""

    frame: pd.DataFrame
    schema: dict[str, str]  # model inputs: the service's features, then request features
    numeric: list[str]
    categorical: list[str]
    service: ServiceInfo
    window: tuple[datetime | None, datetime | None] = (None, None)


@dataclass
class TrainResult:
    model_name: str
    version: int
    alias: str
    promoted: bool
    reason: str
    training_run_id: int
    snapshot_uri: str
    snapshot_sha256: str
    rows: int
    best_family: str
    best_params: dict[str, Any]
    metrics: dict[str, float]
    production_version: int | None
    n_trials: int
    n_failed: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def signature_for(spec: ModelSpec, data: TrainingSet, classes: list[Any] | None,
                  profile: bytes | None = None) -> dict[str, Any]:
    """What a request to this version must carry and what it answers; the gateway serves from this alone."""
    return {
        "inputs": [{"name": name, "dtype": dtype, "nullable": True} for name, dtype in data.schema.items()],
        "outputs": output_signature(spec.task, classes),
        "task": spec.task,
        **({"classes": classes} if classes is not None else {}),
        "label": spec.label,
        "feature_service": spec.feature_service,
        "entity_keys": [{"name": k, "dtype": d} for k, d in data.service.keys.items()],
        "request_fields": [{"name": k, "dtype": d} for k, d in data.service.request.items()],
        "request_features": list(spec.request_features),
        "example": request_example(spec, data, profile),
    }


def request_example(spec: ModelSpec, data: TrainingSet, profile: bytes | None) -> dict[str, Any]:
    """A request a person can send as it is, shown in the gateway's OpenAPI page: typical input values from
    the training set's whylogs profile (the version's reference: the median of numbers, the most frequent
    category), and the keys and request data of the latest training row."""
    from core import profiles

    summary = profiles.profile_summary(profile) if profile is not None else {}
    inputs: dict[str, Any] = {}
    for name, dtype in data.schema.items():
        column = summary.get(name, {})
        if dtype == "string":
            inputs[name] = str(column["frequent"][0]) if column.get("frequent") else None
        else:
            typical = column.get("median", column.get("mean"))
            inputs[name] = None if typical is None else (int(round(typical)) if dtype == "int64" else round(typical, 4))
    last = data.frame.iloc[-1]
    dtypes = {**data.service.keys, **data.service.request, **data.schema}

    def typed(name: str) -> Any:
        value = plain_class(last[name])
        return int(value) if dtypes.get(name) == "int64" and isinstance(value, float) and value.is_integer() else value

    entities = {k: typed(k) for k in data.service.keys}
    request = {k: typed(k) for k in [*data.service.request, *spec.request_features]}
    return {"inputs": inputs, "entities": entities, **({"request_data": request} if request else {})}


# -- stages ---------------------------------------------------------------------------------------------


def fetch_training_set(spec: ModelSpec, fetcher: FeatureFetcher, project: Project | None,
                       entities: pd.DataFrame | None = None, *, now: datetime | None = None) -> TrainingSet:
    """The labelled rows in the spec's window, joined point-in-time with the feature service's features.

    Every bad-input check happens here, before anything is written.
    """
    features = fetcher.schema(spec.feature_service)
    if not features:
        raise TrainingInputError(f"feature service {spec.feature_service!r} has no features")
    info = fetcher.service(spec.feature_service)
    if entities is None:
        if project is None:
            raise TrainingInputError(f"no project to read the label source {spec.labels.source!r} from: run in a "
                                     "project folder, pass --project or set ESTEIRA_PROJECT")
        entities = read_labels(spec.labels, project)
    selected = select_rows(entities, spec, info, now=now)
    schema = input_schema(spec, features, info, selected)
    ts = spec.labels.timestamp_column
    try:
        frame = fetcher.historical(spec.feature_service, selected, ts)
    except (ValueError, KeyError) as exc:
        raise TrainingInputError(f"point-in-time join for {spec.feature_service!r} failed: {exc}") from exc
    if frame.empty:
        raise TrainingInputError(f"the point-in-time join for {spec.feature_service!r} returned no rows")
    frame = coerce_features(frame, schema)
    frame[ts] = pd.to_datetime(frame[ts], utc=True)
    frame = frame.sort_values([ts, *info.keys], kind="stable").reset_index(drop=True)
    numeric = [c for c, d in schema.items() if d != "string"]
    categorical = [c for c, d in schema.items() if d == "string"]
    present_num, present_cat = infer_kinds(frame, [c for c in schema if c in frame.columns])
    log.info("training set: %d rows, %d numeric + %d categorical inputs", len(frame), len(present_num),
             len(present_cat))
    return TrainingSet(frame, schema, numeric, categorical, info, spec.labels.window(now))


def production_reference(registry: Registry, spec: ModelSpec) -> tuple[str | None, bytes | None]:
    """(``name vN``, reference profile bytes) of the version behind the promotion alias, if any."""
    try:
        mv = registry.get_by_alias(spec.name, spec.promotion.alias)
    except NotFound:
        return None, None
    return f"{spec.name} v{mv.version} ({spec.promotion.alias})", registry.read_reference_profile(mv)


def profile_and_validate(spec: ModelSpec, data: TrainingSet, reference_name: str | None,
                         reference_blob: bytes | None) -> tuple[bytes, ValidationReport]:
    """whylogs profile of the training set (the new version's reference) and the validation report."""
    from core import profiles

    columns = [c for c in data.schema if c in data.frame.columns] + [spec.label]
    profile = profiles.profile_frame(data.frame[[c for c in columns if c in data.frame.columns]])
    reference = drift = None
    if reference_blob is not None:
        reference = profiles.profile_summary(reference_blob)
        try:
            drift = profiles.drift_scores(reference_blob, profile, columns=list(data.schema))
        except Exception as exc:  # noqa: BLE001 - drift is information here; never block on computing it
            log.warning("drift scores unavailable: %s", exc)
    report = validate_training_frame(data.frame, schema=data.schema, label=spec.label, task=spec.task,
                                     limits=spec.validation, reference=reference, reference_name=reference_name,
                                     drift=drift)
    return profile, report


def search(spec: ModelSpec, data: TrainingSet, train_part: pd.DataFrame, *, parallel: bool,
           on_result: Callable[[int, int, TrialResult], None] | None = None) -> list[TrialResult]:
    """Every configuration of the spec, cross-validated on the training part (not the holdout)."""
    configs = number_trials(spec.trial_configs(), spec.seed, spec.task)
    settings = CVSettings(task=spec.task, metric=spec.metric, folds=spec.cv.folds, strategy=spec.cv.strategy,
                          seed=spec.seed, numeric=tuple(data.numeric), categorical=tuple(data.categorical))
    X = train_part[list(data.schema)]
    y = label_values(spec.task, train_part[spec.label].to_numpy())
    if parallel:
        return run_on_ray(configs, X, y, settings, cpus_per_trial=spec.search.cpus_per_trial,
                          timeout_s=spec.search.trial_timeout_s, on_result=on_result)
    return run_sequential(configs, X, y, settings, on_result=on_result)


# -- the procedure --------------------------------------------------------------------------------------


def train(spec: ModelSpec | str | Path, *, project: Project | str | None = None, registry: Registry | None = None,
          fetcher: FeatureFetcher | None = None, entities: pd.DataFrame | None = None,
          reporter: Reporter | None = None, parallel: bool = True, flow_run_id: str | None = None,
          actor: str = "train", step: Step = direct_step, now: datetime | None = None) -> TrainResult:
    """Train, evaluate against production, register and promote a model as its spec says.

    ``spec`` is a spec object, a path, or the name of a spec in the project's ``specs/``. ``entities``
    overrides the spec's label source (a DataFrame of keys, timestamps, request fields and labels);
    ``parallel=False`` runs the trials in this process instead of on Ray. Progress (stages, trials done,
    best so far) goes to ``reporter``.
    """
    resolved_project = optional_project(project)
    spec = resolve_spec(spec, resolved_project)
    registry = registry or Registry.from_url()
    fetcher = fetcher or FeastFetcher(resolved_project, apply=True)
    reporter = reporter or LogReporter()
    started = time.perf_counter()

    reporter.stage("features", f"{spec.name}: point-in-time training set from {spec.feature_service}")
    data: TrainingSet = step(fetch_training_set, spec, fetcher, resolved_project, entities, now=now,
                             name="fetch-features", retries=2)
    ts = spec.labels.timestamp_column
    split = evaluate.time_holdout(data.frame, timestamp=ts, fraction=spec.holdout.fraction, label=spec.label,
                                  task=spec.task)
    snapshot: Snapshot = step(write_snapshot, registry, spec.name, data.frame, name="snapshot", retries=2)
    window = {"start": data.window[0].isoformat() if data.window[0] else None,
              "end": (data.window[1] or now or datetime.now(UTC)).isoformat()}
    run = registry.start_run(spec.name, spec=spec.to_dict(), flow_run_id=flow_run_id,
                             training_set_sha256=snapshot.sha256)
    try:
        reporter.stage("validate", f"{spec.name}: {len(data.frame):,} rows, validating against production")
        ref_name, ref_blob = step(production_reference, registry, spec, name="read-production", retries=2)
        profile, report = step(profile_and_validate, spec, data, ref_name, ref_blob, name="validate")
        reporter.markdown("validation-report", report.to_markdown(), f"Data validation of {spec.name}")
        if not report.passed:
            raise DataValidationError(f"training data for {spec.name!r} failed validation: {report.summary()}",
                                      report)

        best_so_far: list[TrialResult] = []

        def progress(done: int, total: int, result: TrialResult) -> None:
            if result.status == "succeeded" and (not best_so_far or result.score > best_so_far[0].score):
                best_so_far[:] = [result]
            best = (f"best cv {spec.metric} {best_so_far[0].score:.4f} ({best_so_far[0].family})"
                    if best_so_far else "no trial succeeded yet")
            reporter.progress("search-progress", done, total, f"{spec.name}: {done}/{total} trials, {best}")
            log.info("trial %d/%d %s %s: %s", done, total, result.family, result.status,
                     f"{result.score:.4f}" if result.status == "succeeded" else (result.error or "").split("\n")[0])

        reporter.stage("search", f"{spec.name}: {len(spec.trial_configs())} trials, {spec.cv.folds}-fold CV "
                                 f"{'on Ray' if parallel else 'in this process'}")
        results: list[TrialResult] = step(search, spec, data, split.train, parallel=parallel, on_result=progress,
                                          name="search")
        trial_rows = registry.record_trials(run.id, [r.to_record() for r in results])  # type: ignore[arg-type]
        trial_ids = {r.index: row.id for r, row in zip(results, trial_rows, strict=True)}
        reporter.table("trial-leaderboard", leaderboard_rows(results, spec.metric),
                       f"{spec.name}: {len(results)} trials, {spec.cv.folds}-fold CV {spec.metric}")
        ranked = leaderboard(results)
        best = ranked[0]
        failed = sum(r.status != "succeeded" for r in results)
        if best.status != "succeeded":
            raise SearchFailed(f"all {len(results)} trials failed; first error: {(best.error or '').splitlines()[0]}")

        reporter.stage("evaluate", f"{spec.name}: refit {best.family}, compare with production on the holdout")
        X_train = split.train[list(data.schema)]
        y_train = label_values(spec.task, split.train[spec.label].to_numpy())
        model = step(evaluate.fit_final, best.family, best.params, X_train, y_train, data.numeric, data.categorical,
                     spec.task, name="refit")
        classes = [plain_class(c) for c in model.classes_] if hasattr(model, "classes_") else None
        signature = signature_for(spec, data, classes, profile)
        holdout_metrics, holdout_outputs = evaluate.score_candidate(model, signature, split.holdout, spec.label,
                                                                    spec.metric)
        calibration = fit_calibration(spec.task, label_values(spec.task, split.holdout[spec.label].to_numpy()),
                                      holdout_outputs, classes, seed=spec.seed)
        production = step(evaluate.evaluate_production, registry, spec.name, spec.promotion.alias, split.holdout,
                          spec.label, spec.metric, signature, name="evaluate-production", retries=2)
        decision = promotion.decide(spec.promotion, spec.metric, holdout_metrics[spec.metric], production)

        metrics = {f"cv_{spec.metric}": best.metrics["cv_mean"], f"cv_{spec.metric}_std": best.metrics["cv_std"],
                   **{f"holdout_{k}": v for k, v in holdout_metrics.items()},
                   "training_rows": float(len(split.train)), "holdout_rows": float(len(split.holdout)),
                   "trials": float(len(results)), "failed_trials": float(failed)}
        if production.metric is not None:
            metrics[f"production_holdout_{spec.metric}"] = production.metric
        mv = registry.register_version(
            spec.name, model, flavor="sklearn", signature=signature,
            params={"family": best.family, **best.params},
            metrics=metrics,
            tags={"family": best.family, "task": spec.task, "metric": spec.metric,
                  "holdout_cutoff": str(split.cutoff),
                  "decision": decision.alias, **({"production_version": str(production.version)}
                                                 if production.version else {})},
            feature_service=spec.feature_service, training_set_uri=snapshot.uri,
            training_set_sha256=snapshot.sha256, package_versions=package_versions(),
            code_version=resolved_project.code_version() if resolved_project else None,
            flow_run_id=flow_run_id, training_run_id=run.id, reference_profile=profile, calibration=calibration,
            description=spec.description, actor=actor,
        )
        reporter.stage("register", f"{spec.name} v{mv.version}: {decision.alias} ({decision.reason})")
        promotion.apply(registry, spec.name, mv.version, decision, actor=actor,
                        details={"metric": spec.metric, "candidate": holdout_metrics[spec.metric],
                                 "production": production.metric, "production_version": production.version,
                                 "training_run_id": run.id}, canary_share=spec.canary.share)
        console = get_settings().resolved_console_url
        reporter.markdown("evaluation", evaluate.comparison_markdown(
            spec.name, spec.metric, holdout_metrics, production, decision, len(split.holdout), split.cutoff)
            + f"\n\n[{spec.name} v{mv.version} in the console]({console}/models/{spec.name}/versions/{mv.version})"
            f" · [training run {run.id} and its trials]({console}/runs/{run.id})",
            f"{spec.name} v{mv.version} vs production")
        registry.finish_run(run.id, status="succeeded", best_trial_id=trial_ids[best.index],  # type: ignore[arg-type]
                            registered_version=mv.version,
                            summary={"decision": decision.alias, "reason": decision.reason, "window": window,
                                     "seconds": round(time.perf_counter() - started, 2),
                                     "holdout_metric": holdout_metrics[spec.metric],
                                     "production_metric": production.metric})
    except Exception as exc:
        registry.finish_run(run.id, status="failed", error=f"{type(exc).__name__}: {exc}",  # type: ignore[arg-type]
                            summary={"validation": report.to_dict()} if "report" in locals() else None)
        raise
    return TrainResult(
        model_name=spec.name, version=mv.version, alias=decision.alias, promoted=decision.promote,
        reason=decision.reason, training_run_id=run.id,  # type: ignore[arg-type]
        snapshot_uri=snapshot.uri, snapshot_sha256=snapshot.sha256, rows=len(data.frame), best_family=best.family,
        best_params=best.params, metrics=metrics, production_version=production.version, n_trials=len(results),
        n_failed=failed, warnings=[f"{c.column}: {c.detail}" for c in report.warnings if c.column],
    )


# -- Prefect --------------------------------------------------------------------------------------------


def prefect_step(fn: Callable[..., T], *args: Any, name: str = "", retries: int = 0, **kwargs: Any) -> T:
    """Run ``fn`` as a Prefect task of the current flow run (no result caching: inputs are frames)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    wrapped = task(fn, name=name or fn.__name__, retries=retries, retry_delay_seconds=2, cache_policy=NO_CACHE)
    return wrapped(*args, **kwargs)


@flow(name="train", log_prints=True)
def train_flow(spec: str | None = None, project: str | None = None, parallel: bool = True) -> dict[str, Any]:
    """Train the model a spec describes: a spec name of the project's ``specs/`` or a YAML path; no spec
    trains every spec of the project, one after the other (what the nightly deployment does).

    ``project``: the project folder (default: ``ESTEIRA_PROJECT`` of the worker, or its working folder).
    Artifacts: ``validation-report``, ``search-progress``, ``trial-leaderboard``, ``evaluation``.
    The registry is the settings' (``ESTEIRA_DATABASE_URL`` of the run's environment), never a parameter:
    Prefect stores parameters and shows them in the UI, and a database URL can carry a password.
    """
    from prefect.runtime import flow_run

    from flows.reporting import PrefectReporter

    resolved = current_project(project)
    names = [spec] if spec else resolved.spec_names()
    if not names:
        raise TrainingInputError(f"project {resolved.root} has no model specs in {resolved.specs_dir}")
    registry = Registry.from_url()
    run_id = str(flow_run.id) if flow_run.id else None
    results = {}
    try:
        for name in names:
            results[name] = train(name, project=resolved, registry=registry, reporter=PrefectReporter(),
                                  parallel=parallel, flow_run_id=run_id, actor=f"prefect:train/{run_id}",
                                  step=prefect_step).to_dict()
    finally:
        registry.close()
    return results[names[0]] if spec else results
