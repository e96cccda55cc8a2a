"""The churn example's demo scenario (``esteira demo examples/churn``): the data the story needs.

``baseline`` writes 30 days of history and a normal "recent" week; ``drift`` rewrites the recent week as a
world that changed: a price increase, a move to cheap monthly plans, lower engagement, and a new relation
between features and churn (support tickets stop predicting it, price dominates).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from generator import generate_batch

SPEC = "churn"
CUSTOMERS = 3_000


def _customers(scale: float) -> int:
    return max(300, int(CUSTOMERS * scale))


def baseline(root: Path, scale: float = 1.0) -> dict[str, Any]:
    data = Path(root) / "data"
    history = generate_batch(data, batch="history", n_customers=_customers(scale))
    recent = generate_batch(data, batch="recent", n_customers=_customers(scale))
    return {"note": f"{history.label_rows + recent.label_rows:,} labels for {history.n_customers:,} customers",
            "changed_since": history.start}


def drift(root: Path, scale: float = 1.0) -> dict[str, Any]:
    recent = generate_batch(Path(root) / "data", batch="recent", drift=True, n_customers=_customers(scale))
    return {"note": f"recent week regenerated with drift (churn rate {recent.positive_rate:.3f})",
            "changed_since": recent.start}
