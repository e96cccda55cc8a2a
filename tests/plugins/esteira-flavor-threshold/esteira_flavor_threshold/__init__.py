"""A complete esteira flavor plugin in one file: the model is ``{"feature": name, "threshold": t}``.

It shows the whole contract: ``name`` and ``file_name``, ``save(model) -> bytes`` at registration, and
``load(bytes, signature) -> predictor`` whose ``predict({feature: array}) -> {output: array}``. It is
found through the ``esteira.flavors`` entry point in this package's pyproject.toml; neither the registry
nor the gateway knows about it.

Optional keys, for tests that need a model's behaviour set by hand: ``scale`` (default 1) spreads the
``probability`` output, ``1 / (1 + exp(-(x - threshold) / scale))``; ``delay_ms`` (default 0) makes every
``predict`` call sleep that long, to give a version a known extra latency. The artifact is JSON and
nothing in it is run.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np


class ThresholdPredictor:
    def __init__(self, feature: str, threshold: float, *, scale: float = 1.0, delay_ms: float = 0.0) -> None:
        self.feature = feature
        self.threshold = threshold
        self.scale = scale
        self.delay_ms = delay_ms

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.delay_ms > 0:
            time.sleep(self.delay_ms / 1000.0)
        values = np.asarray(columns[self.feature], dtype=np.float64)
        margin = values - self.threshold
        return {"label": (values > self.threshold).astype(np.int64), "margin": margin,
                "probability": 1.0 / (1.0 + np.exp(-margin / self.scale))}


def _spec(model: Any) -> dict[str, Any]:
    """The stored rule: plain JSON numbers and a feature name, with the optional keys' defaults filled in."""
    scale = float(model.get("scale", 1.0))
    delay_ms = float(model.get("delay_ms", 0.0))
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if not delay_ms >= 0:
        raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
    return {"feature": str(model["feature"]), "threshold": float(model["threshold"]), "scale": scale,
            "delay_ms": delay_ms}


class ThresholdFlavor:
    name = "threshold"
    file_name = "rule.json"

    def save(self, model: Any) -> bytes:
        return json.dumps(_spec(model)).encode()

    def load(self, data: bytes, signature: dict[str, Any]) -> ThresholdPredictor:
        spec = _spec(json.loads(data))
        return ThresholdPredictor(spec["feature"], spec["threshold"], scale=spec["scale"], delay_ms=spec["delay_ms"])
