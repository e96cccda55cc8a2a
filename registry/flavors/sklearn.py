"""scikit-learn flavor: skops format, never a raw pickle.

skops refuses any type it does not know to be safe unless told to trust it. We trust exactly the
types whose module is on an allow-list (scikit-learn, numpy, scipy) and fail closed on anything else,
so an artifact that smuggles ``os.system`` or a custom class is refused before any of it runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio

from registry.errors import UntrustedArtifact

TRUSTED_MODULE_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.", "scipy.sparse.", "scipy.special.")


def trusted_types_for(data: bytes) -> list[str]:
    """The types skops would need trusted to load ``data``, if all are allowed; raises otherwise."""
    needed = sio.get_untrusted_types(data=data)
    refused = [t for t in needed if not t.startswith(TRUSTED_MODULE_PREFIXES)]
    if refused:
        raise UntrustedArtifact(f"artifact needs types outside the allow-list: {', '.join(sorted(refused))}")
    return needed


class SklearnPredictor:
    """Wraps a fitted estimator or pipeline. Builds the DataFrame the pipeline was fitted on by name."""

    def __init__(self, model: Any, signature: dict[str, Any]) -> None:
        self.model = model
        self.input_names = [col["name"] for col in signature.get("inputs", [])] or list(
            getattr(model, "feature_names_in_", [])
        )
        self.is_classifier = hasattr(model, "predict_proba")
        classes = getattr(model, "classes_", None)
        self.classes = list(classes) if classes is not None else None

    def frame(self, columns: dict[str, np.ndarray]) -> pd.DataFrame:
        return pd.DataFrame({name: columns[name] for name in self.input_names})

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frame = self.frame(columns)
        if not self.is_classifier:
            return {"prediction": np.asarray(self.model.predict(frame))}
        proba = self.model.predict_proba(frame)
        labels = np.asarray(self.classes)[proba.argmax(axis=1)]
        out: dict[str, np.ndarray] = {"label": labels}
        if proba.shape[1] == 2:
            out["probability"] = proba[:, 1]
        else:
            out["probabilities"] = proba
        return out


class SklearnFlavor:
    name = "sklearn"
    file_name = "model.skops"

    def save(self, model: Any) -> bytes:
        return sio.dumps(model)

    def load_model(self, data: bytes) -> Any:
        return sio.loads(data, trusted=trusted_types_for(data))

    def load(self, data: bytes, signature: dict[str, Any]) -> SklearnPredictor:
        return SklearnPredictor(self.load_model(data), signature)
