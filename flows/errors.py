"""Errors of the training and scoring flows. Each names what was asked for and what was wrong.

They are raised before anything is written where possible (bad spec, unknown feature service,
missing label, empty or out-of-range entity query), so a failed run leaves the registry as it was.
"""

from __future__ import annotations

from typing import Any


class TrainingInputError(ValueError):
    """The spec or the data it points at cannot be trained on; nothing was registered."""


class DataValidationError(TrainingInputError):
    """The training set failed validation; carries the report (``.report``)."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class SearchFailed(RuntimeError):
    """Every trial of the search failed; the trials (with their errors) are in the registry."""


class ReproductionMismatch(RuntimeError):
    """A retrained version does not match what was recorded (data hash, params or metrics)."""
