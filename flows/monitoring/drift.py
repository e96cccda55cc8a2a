"""Per-feature drift of a target profile against the reference profile, and the dataset-drift share.

The numbers come from whylogs (through :mod:`core.profiles`): KS for numeric features,
chi-squared for categorical ones, Hellinger where the policy asks. Whether a feature counts as
drifted is decided here from the policy's thresholds, not from whylogs' fixed categories, so the
thresholds live in one reviewed place (the model spec) and the report shows both. Each feature also
gets a small reference-vs-window picture (:func:`core.profiles.feature_pictures`) stored with the report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core import profiles
from flows.monitoring.policy import MonitoringPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftResult:
    """Drift of one window. ``features`` maps a feature to its scores and ``drifted`` flag; ``pictures``
    maps a feature (scored or not) to its reference-vs-window picture, where one could be drawn."""

    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    unscored: list[str] = field(default_factory=list)
    pictures: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def drifted(self) -> list[str]:
        return sorted(name for name, score in self.features.items() if score["drifted"])

    @property
    def share(self) -> float | None:
        """Drifted features over scored features; None when nothing could be scored."""
        return len(self.drifted) / len(self.features) if self.features else None

    def to_json(self) -> dict[str, Any]:
        """What the registry's ``MonitoringReport.drift`` column holds: a scored feature's picture under
        ``features[name]["picture"]``, an unscored one's under ``unscored_pictures[name]``."""
        features = {
            name: {**score, "picture": self.pictures[name]} if name in self.pictures else score
            for name, score in self.features.items()
        }
        unscored = {name: self.pictures[name] for name in self.unscored if name in self.pictures}
        return {"features": features, "unscored": self.unscored, "drifted": self.drifted,
                "unscored_pictures": unscored}


def is_drifted(score: dict[str, Any], policy: MonitoringPolicy) -> bool:
    """The policy's verdict on one score: a significant test *and* an effect large enough to matter.

    KS (numbers) needs its statistic over ``ks_min_statistic``; chi-squared (categories) needs the category
    shares' Hellinger distance (``effect``) over ``categorical_min_hellinger``: on a window of tens of
    thousands of rows, either test alone calls the smallest shift significant.
    """
    statistic = score.get("statistic")
    if score.get("algorithm") == "hellinger":
        return statistic is not None and statistic >= policy.hellinger_threshold
    pvalue = score.get("pvalue")
    if pvalue is None:
        return False
    if score.get("algorithm") == "ks" and (statistic or 0.0) < policy.ks_min_statistic:
        return False
    if score.get("algorithm") == "chi-square" and (score.get("effect") or 0.0) < policy.categorical_min_hellinger:
        return False
    return pvalue < policy.pvalue_threshold


def feature_drift(
    reference: bytes, target: bytes, features: Iterable[str] | None, policy: MonitoringPolicy
) -> DriftResult:
    """Score each monitored feature present in both profiles.

    ``features`` are the model's inputs (its signature): entity keys, timestamps, predictions and
    labels in a log are not features and must not count toward the drift share. None scores every
    column the two profiles share. Features whylogs cannot score (missing on one side, all null)
    are listed as ``unscored`` instead of silently lowering the share.
    """
    wanted = (
        [name for name in (features or []) if name not in policy.ignore] if features is not None else None
    )
    hellinger = [name for name in policy.hellinger if wanted is None or name in wanted]
    scores = profiles.drift_scores(reference, target, columns=wanted, hellinger=hellinger)
    if wanted is None:
        scores = {name: score for name, score in scores.items() if name not in policy.ignore}
    categorical = [name for name, score in scores.items() if score.get("algorithm") == "chi-square"]
    for name, distance in profiles.category_distances(reference, target, categorical).items():
        scores[name] = {**scores[name], "effect": distance}
    result = {name: {**score, "drifted": is_drifted(score, policy)} for name, score in sorted(scores.items())}
    unscored = sorted(set(wanted or ()) - set(result))
    pictures = _pictures(reference, target, [*result, *unscored])
    return DriftResult(features=result, unscored=unscored, pictures=pictures)


def _pictures(reference: bytes, target: bytes, names: list[str]) -> dict[str, dict[str, Any]]:
    """The report's pictures; drawing them is never a reason for a monitor run to fail."""
    try:
        return profiles.feature_pictures(reference, target, names)
    except Exception as exc:
        log.warning("no reference-vs-window pictures: %s: %s", type(exc).__name__, exc)
        return {}
