"""The model spec: training is configured, not coded.

A spec (YAML in a project's ``specs/``, validated by the pydantic models below) names the model, its task
(binary, multiclass, regression), the feature service, the label source and its column, the time window to
train on, request fields used as inputs as they are, the candidate estimator families (from the allow-list
in :mod:`flows.estimators`) with their search spaces, the cross-validation, the metric, the time-based
holdout, the seed, the data-validation thresholds, the promotion rule and the monitoring policy.

Search spaces take two forms per parameter:

* a list: a grid, crossed with the other grid parameters (``C: [0.1, 1.0]``);
* a mapping with ``distribution`` (``uniform``, ``loguniform``, ``randint``, ``choice``): sampled
  ``samples`` times, seeded (``max_depth: {distribution: randint, low: 3, high: 12}``).

Configurations are expanded here, deterministically from the seed, not by a search algorithm at
run time: the same spec gives the same trials, and every trial can be recorded and reproduced.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.project import Project
from flows.delivery.policy import CanaryPolicy
from flows.estimators import ESTIMATORS, check_param_names, families
from flows.monitoring.policy import MonitoringPolicy
from flows.tasks import DEFAULT_METRIC, Task, check_metric
from registry.names import check_alias, check_model_name

_RELATIVE_RE = re.compile(r"^-(\d+)([dhm])$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
    """A sampled parameter. ``randint`` draws from ``[low, high)`` like Ray Tune's ``randint``."""

    distribution: Literal["uniform", "loguniform", "randint", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("a 'choice' distribution needs a non-empty 'values' list")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.distribution!r} distribution needs low < high")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("a 'loguniform' distribution needs low > 0")
        return self

    def sample(self, rng: np.random.Generator) -> Any:
        if self.distribution == "choice":
            assert self.values is not None
            return self.values[int(rng.integers(len(self.values)))]
        assert self.low is not None and self.high is not None
        if self.distribution == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.distribution == "loguniform":
            return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        return int(rng.integers(int(self.low), int(self.high)))


class Candidate(_Strict):
    """One estimator family, its fixed params and its search space."""

    family: str
    params: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, list[Any] | Distribution] = Field(default_factory=dict)
    samples: int = Field(default=1, ge=1, le=1000, description="Random draws of the distributions per grid point.")

    @field_validator("search")
    @classmethod
    def _non_empty_grids(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, space in value.items():
            if isinstance(space, list) and not space:
                raise ValueError(f"search space for {name!r} is an empty list")
        return value

    def check(self, task: Task) -> None:
        """Refuse parameter names the estimator does not have (``get_params()``), before Ray."""
        check_param_names(self.family, list(self.params), where=f"candidate {self.family} params", task=task)
        check_param_names(self.family, list(self.search), where=f"candidate {self.family} search space", task=task)
        overlap = set(self.params) & set(self.search)
        if overlap:
            raise ValueError(f"candidate {self.family}: {sorted(overlap)} both fixed and searched")

    def configurations(self, rng: np.random.Generator) -> list[dict[str, Any]]:
        """The grid crossed with ``samples`` draws of the distributions, fixed params included."""
        grid_names = [k for k, v in self.search.items() if isinstance(v, list)]
        dists = {k: v for k, v in self.search.items() if isinstance(v, Distribution)}
        draws = self.samples if dists else 1
        configs: list[dict[str, Any]] = []
        for point in itertools.product(*(self.search[k] for k in grid_names)):  # type: ignore[misc]
            for _ in range(draws):
                config = dict(self.params)
                config.update(zip(grid_names, point, strict=True))
                config.update({k: d.sample(rng) for k, d in dists.items()})
                configs.append(config)
        return configs


class LabelSource(_Strict):
    """Where the labelled rows are, and which of them to train on.

    ``source`` is a path relative to the project or any fsspec URI (``s3://bucket/labels/``): a parquet
    file or folder of parquet files, or a CSV file (``format: auto`` tells them apart by suffix). The rows
    hold the feature service's join keys, the timestamp column (the moment each label refers to), the
    request fields and request features, and the label column.

    ``start`` / ``end`` are relative to now (``-90d``, ``-12h``, ``-30m``; the default window is the last 90
    days, so a retrain trains on fresh data) or ISO datetimes (an absolute window, kept for reproduction;
    a retrain moves it forward, keeping its width).
    """

    source: str
    format: Literal["auto", "parquet", "csv"] = "auto"
    timestamp_column: str = "event_timestamp"
    start: str | None = "-90d"
    end: str | None = None

    @field_validator("start", "end")
    @classmethod
    def _parseable(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @property
    def relative(self) -> bool:
        """True when the window follows the clock by itself (no absolute bound)."""
        return all(v is None or _RELATIVE_RE.match(v.strip()) for v in (self.start, self.end))

    def window(self, now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
        return (parse_time(self.start, now) if self.start else None,
                parse_time(self.end, now) if self.end else None)

    def moved_forward(self, now: datetime | None = None) -> LabelSource:
        """The same window ending now: relative windows already do; an absolute one keeps its width.

        An absolute window open at the start (``start: null``) keeps its start and moves its end to now.
        """
        if self.relative:
            return self
        start, end = self.window(now)
        now = now or datetime.now(UTC)
        if start is None:
            return self.model_copy(update={"end": None})
        width = (end or now) - start
        return self.model_copy(update={"start": (now - width).isoformat(), "end": None})

    def resolved_format(self, location: str) -> str:
        if self.format != "auto":
            return self.format
        return "csv" if location.lower().endswith((".csv", ".csv.gz")) else "parquet"


class CrossValidation(_Strict):
    folds: int = Field(default=3, ge=2, le=20)
    strategy: Literal["auto", "stratified", "kfold", "time"] = Field(
        default="auto", description="auto: stratified folds for classification, shuffled folds for regression.")


class Holdout(_Strict):
    """The last ``fraction`` of the time range is held out: evaluation sees only the future."""

    fraction: float = Field(default=0.2, gt=0.0, lt=0.9)


class SearchSettings(_Strict):
    max_trials: int = Field(default=200, ge=1, description="Refuse specs that expand to more trials.")
    trial_timeout_s: float | None = Field(default=None, gt=0, description="Per-trial wall-clock limit.")
    cpus_per_trial: float = Field(default=1.0, gt=0)


class ValidationThresholds(_Strict):
    """Data checks before training. Schema problems always fail; value skew fails over these limits."""

    min_rows: int = Field(default=100, ge=1)
    min_positive_rate: float = Field(default=0.005, ge=0.0, le=0.5,
                                     description="Binary: each class makes at least this share of the labels.")
    min_class_rows: int = Field(default=10, ge=1, description="Multiclass: fewer rows of a class fail validation.")
    max_null_fraction: float = Field(default=0.3, ge=0.0, le=1.0)
    max_null_increase: float = Field(default=0.1, ge=0.0, le=1.0,
                                     description="Null fraction above the reference's, absolute.")
    range_tolerance: float = Field(default=0.25, ge=0.0,
                                   description="Widen the reference [min, max] by this share of its width.")
    max_out_of_range_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    max_new_category_fraction: float = Field(default=0.2, ge=0.0, le=1.0,
                                             description="Rows with a category unseen in the reference.")


class PromotionRule(_Strict):
    """Promote to ``alias`` when the candidate beats production by ``min_improvement`` on the same
    holdout (and reaches ``min_metric``); otherwise point ``otherwise_alias`` at it, with the reason."""

    alias: str = "production"
    otherwise_alias: str = "staging"
    rollout: Literal["direct", "canary"] = Field(
        default="direct", description="How a winner reaches production: 'direct' moves the alias at once; "
        "'canary' starts it as the canary (the spec's canary.share of traffic) for the canary flow to promote "
        "or roll back on live, labelled traffic. A model's first version is always promoted directly.")

    @field_validator("alias", "otherwise_alias")
    @classmethod
    def _alias_name(cls, value: str) -> str:
        return check_alias(value)
    min_improvement: float = 0.0
    min_metric: float | None = None


class ModelSpec(_Strict):
    name: str = Field(description="The model's name in the registry (letters, digits, '_', '.', '-', starting "
                      "alphanumeric, at most 128): also a folder of the artifact store.")
    description: str = ""
    task: Task
    feature_service: str
    label: str
    labels: LabelSource
    request_features: list[str] = Field(
        default_factory=list, description="Columns of the label source that are model inputs as they are: sent in "
        "each request (with entity keys, in request_data) and never looked up.")
    candidates: list[Candidate] = Field(min_length=1)
    cv: CrossValidation = Field(default_factory=CrossValidation)
    metric: str = ""
    holdout: Holdout = Field(default_factory=Holdout)
    seed: int = 42
    search: SearchSettings = Field(default_factory=SearchSettings)
    validation: ValidationThresholds = Field(default_factory=ValidationThresholds)
    promotion: PromotionRule = Field(default_factory=PromotionRule)
    monitoring: MonitoringPolicy = Field(default_factory=MonitoringPolicy)
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)

    @field_validator("name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        """The registry's own rule, checked whole, before the name reaches the artifact store."""
        return check_model_name(value)

    @model_validator(mode="before")
    @classmethod
    def _earlier_forms(cls, data: Any) -> Any:
        """Specs stored by earlier versions (in training runs): ``entities`` was the label source, the task
        was always binary and the entity key was named in the spec."""
        if isinstance(data, dict) and "entities" in data and "labels" not in data:
            data = dict(data)
            data["labels"] = data.pop("entities")
            data.setdefault("task", "binary")
            data.pop("entity_key", None)
        return data

    @model_validator(mode="after")
    def _task_rules(self) -> ModelSpec:
        if not self.metric:
            object.__setattr__(self, "metric", DEFAULT_METRIC[self.task])
        check_metric(self.task, self.metric)
        for candidate in self.candidates:
            if candidate.family not in ESTIMATORS[self.task]:
                raise ValueError(f"unknown estimator family {candidate.family!r} for a {self.task} task; "
                                 f"allowed: {', '.join(families(self.task))}")
        if self.task == "regression" and self.cv.strategy == "stratified":
            raise ValueError("stratified folds need classes: use cv.strategy kfold (or auto) for regression")
        if self.label in self.request_features:
            raise ValueError(f"the label {self.label!r} cannot also be a request feature")
        return self

    def check(self) -> None:
        """Checks that need the estimators (parameter names), run before anything is launched."""
        for candidate in self.candidates:
            candidate.check(self.task)
        n = len(self.trial_configs())
        if n > self.search.max_trials:
            raise ValueError(f"spec {self.name!r} expands to {n} trials, over search.max_trials={self.search.max_trials}")

    def trial_configs(self) -> list[tuple[str, dict[str, Any]]]:
        """Every (family, params) to try, deterministic in the seed."""
        out: list[tuple[str, dict[str, Any]]] = []
        for index, candidate in enumerate(self.candidates):
            rng = np.random.default_rng([self.seed, index])
            out.extend((candidate.family, config) for config in candidate.configurations(rng))
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO datetime (UTC if naive) or a relative ``-<n>d|h|m`` from ``now``."""
    match = _RELATIVE_RE.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount), "m": timedelta(minutes=amount)}[unit]
        return (now or datetime.now(UTC)) - delta
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid time {text!r}: expected an ISO datetime or e.g. '-30d', '-12h'") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def load_spec(source: str | Path | dict[str, Any]) -> ModelSpec:
    """A spec from a YAML file, a YAML string or a dict; validated, with parameter names checked."""
    if isinstance(source, dict):
        data = source
    else:
        text = str(source)
        path = Path(text)
        if "\n" not in text and path.suffix in (".yaml", ".yml", ".json"):
            if not path.exists():
                raise FileNotFoundError(f"model spec {path} does not exist")
            text = path.read_text()
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError("a model spec must be a YAML mapping")  # noqa: TRY004 - bad input, not a bad call
    spec = ModelSpec.model_validate(data)
    spec.check()
    return spec


def resolve_spec(spec: ModelSpec | str | Path | dict[str, Any], project: Project | None = None) -> ModelSpec:
    """A spec object, a dict, YAML text, a path, or the name of a spec in the project's ``specs/``."""
    if isinstance(spec, ModelSpec):
        spec.check()
        return spec
    if isinstance(spec, dict):
        return load_spec(spec)
    text = str(spec)
    if "\n" in text:
        return load_spec(text)
    if project is None:
        from core.project import current_project

        if Path(text).suffix in (".yaml", ".yml") and Path(text).expanduser().is_absolute():
            return load_spec(text)
        project = current_project()
    return load_spec(project.spec_path(text))


def models_with_alias(registry: Any, project: Project, alias: str = "production") -> list[str]:
    """The project's models (its specs' names) that have a version behind ``alias`` in ``registry``: what
    the scheduled monitor watches and the daily batch scoring scores."""
    return [name for name in project.spec_names() if registry.resolve_alias(name, alias) is not None]


def project_specs(project: Project) -> list[ModelSpec]:
    """Every spec of the project, validated (one bad spec is an error naming its file)."""
    specs = []
    for name in project.spec_names():
        path = project.spec_path(name)
        try:
            specs.append(load_spec(path))
        except Exception as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return specs
