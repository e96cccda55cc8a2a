"""Training-set snapshots: the exact rows a model saw, as parquet, addressed by their sha256.

Why: a model version must say what data it was trained on in a way that can be checked later.
The snapshot is written deterministically (fixed row and column order, no index) so the same
frame gives the same bytes and the same hash, and it is stored in the registry's content-addressed
artifact store; reading it back verifies the hash before a single row is used.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from registry import Registry
from registry.artifacts import ArtifactStore

SNAPSHOT_FILE = "training_set.parquet"


@dataclass(frozen=True)
class Snapshot:
    uri: str
    sha256: str
    rows: int
    size: int


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Deterministic parquet bytes of ``frame`` (no pandas index, snappy)."""
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="snappy")
    return buffer.getvalue()


def write_snapshot(registry: Registry, model_name: str, frame: pd.DataFrame) -> Snapshot:
    """Store ``frame`` under ``<model>/training-sets/<sha256>/training_set.parquet``."""
    data = to_parquet_bytes(frame)
    stored = registry.put_artifact(f"{model_name}/training-sets", SNAPSHOT_FILE, data)
    return Snapshot(uri=stored.uri, sha256=stored.sha256, rows=len(frame), size=stored.size)


def read_snapshot(uri: str, sha256: str) -> pd.DataFrame:
    """The snapshot's rows, only if its bytes still hash to ``sha256`` (IntegrityError otherwise)."""
    data = ArtifactStore.read_verified(uri, sha256)
    return pq.read_table(io.BytesIO(data)).to_pandas()
