"""The flights example's demo scenario (``esteira demo examples/flights``): real data, real drift.

``baseline`` writes the second half of November 2013 (time-shifted to end 31 days ago); ``drift`` adds
December: winter weather (colder, damper, lower visibility) and holiday traffic, with departure delays that
more than double on average. Nothing is
simulated: the drift is what happened at New York's airports that month.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prepare import prepare

SPEC = "departure_delay"
FRACTION = 0.3
"""Share of the flights kept as labelled rows at scale 1: about 4,000 for November 16-30, 12,200 with December
(training peaks at 0.46 GB, then 0.9 GB). ``--scale 3.4`` or more uses every flight (13,177, then 40,346)."""


def _fraction(scale: float) -> float:
    return min(1.0, max(0.02, FRACTION * scale))


def baseline(root: Path, scale: float = 1.0) -> dict[str, Any]:
    info = prepare(root, "2013-11-30", fraction=_fraction(scale))
    rows = info.rows
    return {"note": f"{rows['flight_labels']:,} departed flights of November 16-30, 2013, "
                    f"{rows['origin_weather']:,} weather hours, {rows['route_delays']:,} route-days",
            "changed_since": info.changed_since}


def drift(root: Path, scale: float = 1.0) -> dict[str, Any]:
    info = prepare(root, "2013-12-31", fraction=_fraction(scale))
    return {"note": f"December 2013 added: {info.rows['flight_labels']:,} departed flights in all "
                    "(winter weather, holiday traffic)",
            "changed_since": info.changed_since}
