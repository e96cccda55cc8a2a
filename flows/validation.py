"""Data validation before training: schema skew and value skew, as one readable report.

Why before training: a model trained on a broken join (a feature all null, a column that became a
string, values from another unit) still trains and may even score well on its own broken holdout.
Checks run against the spec (rows, label) and the feature service's schema (present, typed), and,
when a production version exists, against its reference profile: null fractions, numeric ranges
and categories seen at training time. Whylogs' drift scores are shown for information: drift is
the reason a retraining runs, so it must not by itself block one.

The report is plain data; :meth:`ValidationReport.to_markdown` is what the Prefect artifact shows
and what the exception carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from flows.spec import ValidationThresholds

Status = Literal["pass", "warn", "fail"]
_NUMERIC_KINDS = {"integral", "fractional", "boolean"}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    column: str | None = None


@dataclass
class ValidationReport:
    rows: int
    checks: list[Check] = field(default_factory=list)
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    def add(self, name: str, status: Status, detail: str, column: str | None = None) -> None:
        self.checks.append(Check(name, status, detail, column))

    def summary(self) -> str:
        failed = "; ".join(f"{c.column + ': ' if c.column else ''}{c.detail}" for c in self.failures)
        return failed or f"{len(self.checks)} checks passed ({len(self.warnings)} warnings)"

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "passed": self.passed, "reference": self.reference,
                "checks": [asdict(c) for c in self.checks], "drift": self.drift}

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [f"# Data validation: {verdict}", "",
                 (f"{self.rows} rows; reference: {self.reference or 'none (first version)'}; "
                  f"{len(self.failures)} failed, {len(self.warnings)} warnings, {len(self.checks)} checks."), "",
                 "| status | check | column | detail |", "|---|---|---|---|"]
        order = {"fail": 0, "warn": 1, "pass": 2}
        for c in sorted(self.checks, key=lambda c: order[c.status]):
            lines.append(f"| {c.status.upper()} | {c.name} | {c.column or ''} | {c.detail} |")
        if self.drift:
            lines += ["", "## Drift against the reference (information, not a gate)", "",
                      "| column | algorithm | p-value | category |", "|---|---|---|---|"]
            for col, score in sorted(self.drift.items()):
                pvalue = score.get("pvalue")
                lines.append(f"| {col} | {score.get('algorithm')} | "
                             f"{'' if pvalue is None else f'{pvalue:.3g}'} | {score.get('category')} |")
        return "\n".join(lines)


def _is_string(series: pd.Series) -> bool:
    return bool(pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)
                or isinstance(series.dtype, pd.CategoricalDtype))


def check_label(report: ValidationReport, frame: pd.DataFrame, label: str, task: str,
                limits: ValidationThresholds) -> None:
    """The label fits the task: two classes in a sane balance, several classes with enough rows each, or
    numbers."""
    if label not in frame.columns:
        report.add("label present", "fail", f"label column {label!r} is missing", label)
        return
    values = frame[label].dropna()
    if task == "regression":
        numbers = pd.to_numeric(values, errors="coerce")
        bad = int(numbers.isna().sum())
        if bad:
            example = values[numbers.isna()].iloc[0]
            report.add("label numeric", "fail", f"{bad} label values are not numbers (e.g. {example!r})", label)
        elif numbers.nunique() < 2:
            report.add("label varies", "fail", "every label has the same value", label)
        else:
            report.add("label numeric", "pass", f"mean {numbers.mean():.4g}, std {numbers.std():.4g}", label)
        return
    counts = values.value_counts()
    if task == "binary":
        if len(counts) != 2:
            report.add("label binary", "fail",
                       f"a binary label needs exactly two classes, found {len(counts)}: {list(counts.index[:5])}",
                       label)
            return
        rate = float(counts.min() / counts.sum())
        if rate < limits.min_positive_rate:
            report.add("label balance", "fail",
                       f"the rarer class {counts.idxmin()!r} is {rate:.4f} of the labels, under "
                       f"min_positive_rate={limits.min_positive_rate}", label)
        else:
            report.add("label balance", "pass", f"class shares {(counts / counts.sum()).round(4).to_dict()}", label)
        return
    if len(counts) < 3:
        report.add("label classes", "fail", f"a multiclass label needs at least three classes, found "
                   f"{list(counts.index)} (use task: binary for two)", label)
        return
    rare = counts[counts < limits.min_class_rows]
    if not rare.empty:
        report.add("label classes", "fail", f"classes with fewer than min_class_rows={limits.min_class_rows} rows: "
                   f"{rare.to_dict()}", label)
    else:
        report.add("label classes", "pass", f"{len(counts)} classes, rarest {counts.idxmin()!r} with "
                   f"{int(counts.min())} rows", label)


def check_schema(report: ValidationReport, frame: pd.DataFrame, schema: Mapping[str, str]) -> None:
    """Every feature of the service present and of its declared kind (string vs number)."""
    for column, dtype in schema.items():
        if column not in frame.columns:
            report.add("column present", "fail", "feature missing from the training set", column)
            continue
        series = frame[column]
        if series.isna().all():
            continue  # reported by the null check, where the reason is clearer
        is_string = _is_string(series)
        if (dtype == "string") != is_string:
            report.add("column type", "fail", f"declared {dtype}, got {series.dtype}", column)


def check_nulls(report: ValidationReport, frame: pd.DataFrame, schema: Mapping[str, str],
                limits: ValidationThresholds, reference: Mapping[str, Mapping[str, Any]] | None) -> None:
    for column in schema:
        if column not in frame.columns:
            continue
        fraction = float(frame[column].isna().mean())
        if fraction >= 1.0:
            report.add("null fraction", "fail", "every value is null (a broken join?)", column)
            continue
        if fraction > limits.max_null_fraction:
            report.add("null fraction", "fail", f"{fraction:.3f} null > {limits.max_null_fraction}", column)
            continue
        ref = (reference or {}).get(column)
        if ref and ref.get("count"):
            ref_fraction = ref["null_count"] / ref["count"]
            if fraction - ref_fraction > limits.max_null_increase:
                report.add("null increase", "fail",
                           f"{fraction:.3f} null vs {ref_fraction:.3f} in the reference "
                           f"(+{fraction - ref_fraction:.3f} > {limits.max_null_increase})", column)
                continue
        report.add("null fraction", "warn" if fraction > 0 else "pass", f"{fraction:.3f} null", column)


def check_reference(report: ValidationReport, frame: pd.DataFrame, schema: Mapping[str, str],
                    limits: ValidationThresholds, reference: Mapping[str, Mapping[str, Any]]) -> None:
    """Schema and value skew against the production version's reference profile."""
    for column, ref in reference.items():
        if column not in schema:
            continue
        if column not in frame.columns:
            report.add("reference column", "fail", "in the production reference profile, missing now", column)
            continue
        series = frame[column].dropna()
        if series.empty:
            continue
        ref_kind = ref.get("kind")
        if ref_kind in _NUMERIC_KINDS | {"string"} and (ref_kind == "string") != _is_string(series):
            report.add("reference type", "fail", f"was {ref_kind} in the reference, now {series.dtype}", column)
            continue
        if _is_string(series):
            _check_categories(report, column, series, ref, limits)
        else:
            _check_range(report, column, series.astype(float), ref, limits)


def _check_range(report: ValidationReport, column: str, series: pd.Series, ref: Mapping[str, Any],
                 limits: ValidationThresholds) -> None:
    low, high = ref.get("min"), ref.get("max")
    if low is None or high is None:
        return
    slack = limits.range_tolerance * max(high - low, abs(high) * 1e-9, 1e-12)
    outside = float(((series < low - slack) | (series > high + slack)).mean())
    detail = (f"{outside:.3f} of values outside reference [{low:.4g}, {high:.4g}] +/- {slack:.3g}; "
              f"now [{series.min():.4g}, {series.max():.4g}]")
    status: Status = "fail" if outside > limits.max_out_of_range_fraction else ("warn" if outside > 0 else "pass")
    report.add("value range", status, detail, column)


def _check_categories(report: ValidationReport, column: str, series: pd.Series, ref: Mapping[str, Any],
                      limits: ValidationThresholds) -> None:
    known = ref.get("frequent") or []
    distinct = ref.get("distinct")
    if not known or distinct is None or distinct > len(known) + 0.5:
        return  # the reference's frequent items are not the complete category set: no claim possible
    new = float((~series.astype(str).isin({str(k) for k in known})).mean())
    detail = f"{new:.3f} of rows have categories unseen in the reference"
    status: Status = "fail" if new > limits.max_new_category_fraction else ("warn" if new > 0 else "pass")
    report.add("categories", status, detail, column)


def validate_training_frame(frame: pd.DataFrame, *, schema: Mapping[str, str], label: str, task: str,
                            limits: ValidationThresholds,
                            reference: Mapping[str, Mapping[str, Any]] | None = None,
                            reference_name: str | None = None,
                            drift: Mapping[str, Mapping[str, Any]] | None = None) -> ValidationReport:
    """Run every check; ``reference`` is ``core.profiles.profile_summary`` of production's profile."""
    report = ValidationReport(rows=len(frame), reference=reference_name, drift=dict(drift or {}))
    if len(frame) < limits.min_rows:
        report.add("row count", "fail", f"{len(frame)} rows < min_rows={limits.min_rows}")
    else:
        report.add("row count", "pass", f"{len(frame)} rows")
    check_label(report, frame, label, task, limits)
    check_schema(report, frame, schema)
    check_nulls(report, frame, schema, limits, reference)
    if reference:
        check_reference(report, frame, schema, limits, reference)
    return report


def infer_kinds(frame: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns of ``frame``, by dtype."""
    numeric = [c for c in columns if not _is_string(frame[c])]
    return numeric, [c for c in columns if c not in numeric]


def coerce_features(frame: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """Numbers as float64 (nullable ints from joins become NaN), strings as object with None for missing.

    The same coercion runs before training, evaluation and batch scoring, so the pipeline always
    sees one representation per column.
    """
    out = frame.copy()
    for column, dtype in schema.items():
        if column not in out.columns:
            continue
        if dtype == "string":
            values = out[column].astype(object)
            out[column] = values.where(values.notna(), None)
        else:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(np.float64)
    return out
