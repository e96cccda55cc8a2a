"""The promotion rule, in one function, and applying it to the registry.

Kept apart from training so the rule can be read (and tested) alone: given the candidate's and
production's scores on the same holdout, which alias does the new version get, and why. The why
is written to the registry's audit log with the alias move.

With ``rollout: canary`` a winner does not take all traffic at once while a production version exists: it
goes out as the ``canary`` (a share of live traffic) and the canary flow (:mod:`flows.canary`) promotes it,
or rolls it back, on the evidence of that traffic. The first version of a model has nothing to be compared
with live and is promoted directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flows.evaluate import ProductionComparison
from flows.spec import PromotionRule
from registry import Registry
from registry.api import CANARY, PRODUCTION


@dataclass(frozen=True)
class Decision:
    promote: bool
    alias: str
    reason: str


def decide(rule: PromotionRule, metric: str, candidate: float, production: ProductionComparison) -> Decision:
    """Promote when the candidate clears ``min_metric`` and beats production by ``min_improvement``.

    No production version: promote on ``min_metric`` alone (the first model). Production present
    but not scorable on this holdout (other features, unreadable artifact): do not promote
    automatically, because nothing shows the candidate is better.
    """
    if rule.min_metric is not None and candidate < rule.min_metric:
        return Decision(False, rule.otherwise_alias,
                        f"{metric} {candidate:.5f} below the spec's floor min_metric={rule.min_metric}")
    if production.version is None:
        return Decision(True, rule.alias, f"first version: no {rule.alias} yet; {metric} {candidate:.5f}")
    if production.metric is None:
        return Decision(False, rule.otherwise_alias,
                        f"cannot compare with {rule.alias} v{production.version}: {production.reason}")
    gain = candidate - production.metric
    if gain >= rule.min_improvement and (gain > 0 or rule.min_improvement < 0):  # a tie never moves the alias
        why = (f"{metric} {candidate:.5f} beats {rule.alias} v{production.version} ({production.metric:.5f}) by "
               f"{gain:+.5f} >= {rule.min_improvement} on the same holdout")
        if rule.rollout == "canary" and rule.alias == PRODUCTION:
            return Decision(True, CANARY, f"{why}; out as the canary, for the canary flow to promote on live traffic")
        return Decision(True, rule.alias, why)
    return Decision(False, rule.otherwise_alias,
                    f"{metric} {candidate:.5f} vs {rule.alias} v{production.version} {production.metric:.5f} "
                    f"({gain:+.5f}): does not beat it by min_improvement={rule.min_improvement}")


def apply(registry: Registry, model_name: str, version: int, decision: Decision, *, actor: str,
          details: dict[str, Any], canary_share: float | None = None) -> None:
    """Move the decided alias to ``version`` (one transaction with its audit event); a canary starts with
    ``canary_share`` of the traffic (default: the model's last share)."""
    if decision.alias == CANARY:
        registry.start_canary(model_name, version, share=canary_share, reason=decision.reason, actor=actor,
                              details={**details, "promoted": decision.promote})
        return
    registry.promote(model_name, version, alias=decision.alias, reason=decision.reason, actor=actor,
                     details={**details, "promoted": decision.promote})
