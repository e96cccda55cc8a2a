"""Opportunistic micro-batching of small concurrent requests inside one replica.

At high concurrency many one-row requests for the same version reach the predictor in the same turn of
the event loop, and a model such as HistGradientBoosting spends most of a one-row call on per-call
overhead. The first request for a version becomes the *leader*: it yields to the loop exactly once
(``await asyncio.sleep(0)``, no timer), during which requests that are already runnable join its batch;
then it concatenates their columns, calls the predictor once and hands every request its own rows.

* Alone (concurrency 1) the leader calls the predictor with its own columns, exactly as without batching:
  the only cost is one loop yield.
* A batch holds at most ``max_rows`` rows; a request that would overflow it starts the next batch.
* If the batched call fails, or its outputs are not one row per input row, every request is scored alone,
  so one bad request gets its own error and never fails the others.
* Requests whose columns do not match the leader's (names, dtypes, trailing shapes) are scored alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import numpy as np

Columns = dict[str, np.ndarray]
Outputs = dict[str, Any]


class _Batch:
    __slots__ = ("predictor", "items", "rows")

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        # (columns, rows, future or None for the leader)
        self.items: list[tuple[Columns, int, asyncio.Future[Outputs] | None]] = []
        self.rows = 0


def _layout(columns: Columns) -> tuple[Any, ...]:
    return tuple((name, array.dtype, array.shape[1:]) for name, array in columns.items())


class MicroBatcher:
    """One open batch per key (model name and version); see the module docstring."""

    def __init__(self, max_rows: int = 64) -> None:
        self.max_rows = max_rows
        self._open: dict[Hashable, _Batch] = {}
        self.calls = 0  # predictor calls made for batches of two or more requests (for tests and debugging)

    async def predict(self, key: Hashable, predictor: Any, columns: Columns, rows: int) -> Outputs:
        batch = self._open.get(key)
        if batch is not None and batch.predictor is predictor and batch.rows + rows <= self.max_rows:
            future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
            batch.items.append((columns, rows, future))
            batch.rows += rows
            return await future
        batch = _Batch(predictor)
        batch.items.append((columns, rows, None))
        batch.rows = rows
        self._open[key] = batch
        try:
            await asyncio.sleep(0)
        finally:
            # Runs even if the leader is cancelled, so the requests that joined always get an answer.
            if self._open.get(key) is batch:
                del self._open[key]
            mine = self._run(batch)
        if isinstance(mine, BaseException):
            raise mine
        return mine

    # -- scoring --------------------------------------------------------------------------------------------

    def _run(self, batch: _Batch) -> Outputs | BaseException:
        """Score the batch; settle every follower's future and return the leader's result (or error)."""
        items = batch.items
        if len(items) == 1:
            return _alone(batch.predictor, items[0][0])
        layout = _layout(items[0][0])
        together = [item for item in items if _layout(item[0]) == layout]
        results: dict[int, Outputs | BaseException] = {}
        if len(together) > 1:
            results.update(self._together(batch.predictor, together))
        mine: Outputs | BaseException = RuntimeError("unscored")
        for item in items:
            result = results.get(id(item))
            if result is None:
                result = _alone(batch.predictor, item[0])
            future = item[2]
            if future is None:
                mine = result
            elif not future.done():
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        return mine

    def _together(self, predictor: Any, items: list[tuple[Columns, int, Any]]) -> dict[int, Outputs]:
        """One predictor call for all ``items``; empty if it fails (the caller then scores each alone)."""
        names = list(items[0][0])
        total = sum(rows for _, rows, _ in items)
        try:
            merged = {name: np.concatenate([columns[name] for columns, _, _ in items]) for name in names}
            self.calls += 1
            outputs = {key: np.asarray(value) for key, value in predictor.predict(merged).items()}
        except Exception:  # noqa: BLE001 - a failed batch falls back to one call per request
            return {}
        if not outputs or any(value.ndim == 0 or len(value) != total for value in outputs.values()):
            return {}
        results: dict[int, Outputs] = {}
        start = 0
        for item in items:
            end = start + item[1]
            results[id(item)] = {key: value[start:end] for key, value in outputs.items()}
            start = end
        return results


def _alone(predictor: Any, columns: Columns) -> Outputs | BaseException:
    try:
        return predictor.predict(columns)
    except Exception as exc:  # noqa: BLE001 - handed back to the request that owns it
        return exc
