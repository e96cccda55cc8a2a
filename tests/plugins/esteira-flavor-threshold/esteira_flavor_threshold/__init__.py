"""A complete esteira flavor plugin in one file: the model is ``{"feature": name, "threshold": t}``.

It shows the whole contract: ``name`` and ``file_name``, ``save(model) -> bytes`` at registration, and
``load(bytes, signature) -> predictor`` whose ``predict({feature: array}) -> {output: array}``. It is
found through the ``esteira.flavors`` entry point in this package's pyproject.toml; neither the registry
nor the gateway knows about it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


class ThresholdPredictor:
    def __init__(self, feature: str, threshold: float) -> None:
        self.feature = feature
        self.threshold = threshold

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = np.asarray(columns[self.feature], dtype=np.float64)
        return {"label": (values > self.threshold).astype(np.int64), "margin": values - self.threshold}


class ThresholdFlavor:
    name = "threshold"
    file_name = "rule.json"

    def save(self, model: Any) -> bytes:
        return json.dumps({"feature": str(model["feature"]), "threshold": float(model["threshold"])}).encode()

    def load(self, data: bytes, signature: dict[str, Any]) -> ThresholdPredictor:
        spec = json.loads(data)
        return ThresholdPredictor(spec["feature"], float(spec["threshold"]))
