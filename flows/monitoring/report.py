"""What a person reads after a monitor run: a drift picture, a per-feature table, a summary.

The picture is one PNG of small multiples, reference vs target per feature, drifted features first
and outlined in red. It is saved under ``<home>/reports/<model>/`` and embedded in the Prefect
markdown artifact as a data URI (the Prefect UI renders it; a link to a local file would not open
from a browser on another machine). Publishing goes through ``flows.reporting``: Prefect artifacts in a
flow run, the log otherwise.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from flows.monitoring.drift import DriftResult

MAX_PLOTTED = 12
"""Features drawn in the picture (most drifted first); the table lists them all."""


def drift_rows(
    drift: DriftResult,
    summary_ref: dict[str, dict[str, Any]] | None = None,
    summary_tgt: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per feature for the table artifact, drifted features first."""
    summary_ref, summary_tgt = summary_ref or {}, summary_tgt or {}
    rows = []
    for name, score in drift.features.items():
        ref, tgt = summary_ref.get(name, {}), summary_tgt.get(name, {})
        rows.append(
            {
                "feature": name,
                "drifted": "yes" if score["drifted"] else "no",
                "algorithm": score.get("algorithm"),
                "statistic": _fmt(score.get("statistic")),
                "p_value": _fmt(score.get("pvalue")),
                "effect": _fmt(score.get("effect")),
                "whylogs_category": score.get("category"),
                "reference_mean": _fmt(ref.get("mean")),
                "target_mean": _fmt(tgt.get("mean")),
            }
        )
    for name in drift.unscored:
        rows.append(
            {
                "feature": name,
                "drifted": "unscored",
                "algorithm": None,
                "statistic": None,
                "p_value": None,
                "effect": None,
                "whylogs_category": None,
                "reference_mean": None,
                "target_mean": None,
            }
        )
    return sorted(rows, key=lambda r: (r["drifted"] != "yes", r["feature"]))


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return value


def plot_drift(distributions: dict[str, dict[str, Any]], drift: DriftResult, *, title: str) -> bytes:
    """PNG bytes: per feature, reference vs target shares (histogram for numbers, bars for categories)."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: workers have no display
    from matplotlib.figure import Figure

    order = sorted(
        distributions,
        key=lambda n: (
            not drift.features.get(n, {}).get("drifted", False),
            -(drift.features.get(n, {}).get("statistic") or 0.0),
        ),
    )
    names = order[:MAX_PLOTTED]
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    figure = Figure(figsize=(4.2 * cols, 2.8 * rows + 0.6), dpi=80, layout="constrained")
    figure.suptitle(title, fontsize=11)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if not names:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no comparable features", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, name in zip(axes, names, strict=False):
        data = distributions[name]
        score = drift.features.get(name, {})
        if data["kind"] == "numeric":
            edges = data["edges"]
            width = edges[1] - edges[0]
            ax.bar(
                edges[:-1],
                data["reference"],
                width=width,
                align="edge",
                alpha=0.5,
                label="reference",
                color="tab:blue",
            )
            ax.bar(
                edges[:-1],
                data["target"],
                width=width,
                align="edge",
                alpha=0.5,
                label="target",
                color="tab:orange",
            )
        else:
            positions = range(len(data["categories"]))
            ax.bar(
                [p - 0.2 for p in positions],
                data["reference"],
                width=0.4,
                label="reference",
                color="tab:blue",
            )
            ax.bar(
                [p + 0.2 for p in positions], data["target"], width=0.4, label="target", color="tab:orange"
            )
            ax.set_xticks(list(positions), [str(c)[:12] for c in data["categories"]], rotation=30, fontsize=7)
        stat = score.get("statistic")
        label = f"{score.get('algorithm', '?')} {stat:.3f}" if isinstance(stat, float) else ""
        ax.set_title(
            f"{name}  ({label})" if label else name,
            fontsize=9,
            color="tab:red" if score.get("drifted") else "black",
        )
        if score.get("drifted"):
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:red")
                spine.set_linewidth(2)
        ax.tick_params(labelsize=7)
        ax.set_ylabel("share", fontsize=7)
    if names:
        axes[0].legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_picture(png: bytes, home: Path, model_name: str, stamp: datetime, report_id: int | None) -> Path:
    """``<home>/reports/<model>/<report id>-<utc time>-drift.png``; the folder is created on demand."""
    folder = home / "reports" / model_name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report_id if report_id is not None else 'unsaved'}-{stamp:%Y%m%dT%H%M%SZ}-drift.png"
    path.write_bytes(png)
    return path


def summary_markdown(
    *,
    model_name: str,
    version: int | None,
    report_id: int | None,
    status: str,
    decision: str,
    reason: str,
    n_rows: int,
    n_labelled: int,
    drift_share: float | None,
    performance: dict[str, Any],
    window: Sequence[datetime | None],
    source: str,
    triggered_run: str | None,
    picture: Path | None,
    png: bytes | None,
    console_url: str | None = None,
) -> str:
    """The markdown artifact: decision first, then the numbers behind it, then the picture; a link to the
    report in the web console when its address is known."""
    share = f"{drift_share:.0%}" if drift_share is not None else "n/a"
    start, end = window
    lines = [
        f"# Monitoring: {model_name} v{version if version is not None else '?'}",
        "",
        f"**Decision: {decision}** (status {status}). {reason}",
        "",
        "| | |",
        "|---|---|",
        f"| window | {start.isoformat() if start else '-'} to {end.isoformat() if end else '-'} ({source}) |",
        f"| rows / labelled | {n_rows} / {n_labelled} |",
        f"| drifted features | {share} |",
        f"| performance, realised (labels) | {_perf(performance)}{_realised(performance)} |",
        f"| performance, estimated (CBPE) | {_estimated(performance)} |",
        *_rejudged(performance),
        f"| retrain run | {triggered_run or '-'} |",
        f"| registry report | {report_id if report_id is not None else '-'} |",
        "",
    ]
    if console_url and report_id is not None:
        lines += [f"[Report {report_id} in the console]({console_url}/reports/{report_id}) · "
                  f"[{model_name}'s monitoring over time]({console_url}/models/{model_name}/monitoring)", ""]
    if picture is not None:
        lines += [f"Drift picture: `{picture}`", ""]
    if png is not None:
        lines.append(f"![drift](data:image/png;base64,{base64.b64encode(png).decode()})")
    return "\n".join(lines)


def _perf(performance: dict[str, Any]) -> str:
    if performance.get("status") != "ok":
        note = performance.get("note")
        return f"{performance.get('status', 'n/a')}{f': {note}' if note else ''}"
    return (
        f"{performance['metric']} {performance['value']:.4f} vs {performance['baseline']:.4f} at evaluation "
        f"(drop {performance['drop']:+.4f})"
    )


def _realised(performance: dict[str, Any]) -> str:
    """Coverage and maturity of the realised metric: how much of the window it stands on, and whether it
    decides yet."""
    realised = performance.get("realised") or {}
    if not realised:
        return ""
    coverage = realised.get("coverage")
    share = f"{coverage:.0%}" if isinstance(coverage, (int, float)) else "-"
    when = realised.get("matures_at")
    state = "matured" if realised.get("matured") else f"not matured (labels due by {when or '-'}): decides nothing yet"
    return f"; {realised.get('labelled', 0)} of {realised.get('rows', 0)} rows labelled (coverage {share}), {state}"


def _estimated(performance: dict[str, Any]) -> str:
    estimated = performance.get("estimated") or {}
    if not estimated:
        return "-"
    if estimated.get("status") != "ok":
        return f"{estimated.get('status')}: {estimated.get('note', '')}".strip()
    base, drop = estimated.get("baseline"), estimated.get("drop")
    against = f" vs {base:.4f} at evaluation (drop {drop:+.4f})" if base is not None and drop is not None else ""
    return (f"{estimated['metric']} {estimated['value']:.4f}{against}, expected from calibrated confidence on "
            f"{estimated.get('rows', 0)} rows, labelled or not")


def _rejudged(performance: dict[str, Any]) -> list[str]:
    """One line per earlier judgement of this window that a later run replaced."""
    lines = []
    for entry in performance.get("rejudged") or []:
        value = entry.get("value")
        number = f"{value:.4f}" if isinstance(value, (int, float)) else entry.get("status", "-")
        coverage = entry.get("coverage")
        share = f"{coverage:.0%}" if isinstance(coverage, (int, float)) else "-"
        lines.append(f"| earlier judgement ({entry.get('at') or 'when the report was written'}) | realised {number} on "
                     f"{entry.get('labelled', 0)} labels (coverage {share}"
                     f"{', matured' if entry.get('matured') else ', not matured'}) |")
    return lines


def artifact_key(model_name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in model_name.lower())
    return f"monitor-{cleaned.strip('-') or 'model'}"
