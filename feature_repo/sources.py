"""The files behind file sources: where they are, whether they exist, what they hold.

A ``FileSource`` path is relative to the project (Feast joins it to ``repo_path``) or any fsspec URI. These
helpers resolve it the same way Feast does (``FileSource.get_uri_for_file_path``) and read only what they
need with pyarrow datasets (a column or two, filtered): checking sources before an apply, the earliest
timestamp a backfill starts from, and the row counts a materialization reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.project import is_uri


class SourceMissing(FileNotFoundError):
    """A feature view reads a file or folder that does not exist; the message names both."""


def source_location(source: Any, repo_path: Path | str | None) -> str:
    """Where a file source's data is: an absolute path or a URI."""
    from feast.infra.offline_stores.file_source import FileSource

    return FileSource.get_uri_for_file_path(repo_path, source.path)


def _dataset(location: str) -> Any:
    import pyarrow.dataset as ds

    fmt = "csv" if location.endswith(".csv") else "parquet"
    if is_uri(location):
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(location)
        return ds.dataset(path, format=fmt, filesystem=fs)
    return ds.dataset(location, format=fmt)


def exists(location: str) -> bool:
    if is_uri(location):
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(location)
        return bool(fs.exists(path))
    return Path(location).exists()


def check_sources(views: Iterable[Any], repo_path: Path | str | None) -> None:
    """Raise :class:`SourceMissing` for the first view whose file source is absent, before anything is written."""
    from feast import FileSource

    for view in views:
        source = getattr(view, "batch_source", None)
        if isinstance(source, FileSource):
            location = source_location(source, repo_path)
            if not exists(location):
                raise SourceMissing(f"feature view {view.name!r} reads {source.path!r}, which does not exist "
                                    f"({location})")


def earliest(source: Any, repo_path: Path | str | None) -> datetime | None:
    """The earliest event timestamp of a file source, or None (not a file source, or empty)."""
    from feast import FileSource

    if not isinstance(source, FileSource):
        return None
    location = source_location(source, repo_path)
    if not exists(location):
        return None
    import pyarrow.compute as pc

    column = _dataset(location).to_table(columns=[source.timestamp_field]).column(0)
    if len(column) == 0:
        return None
    value = pc.min(column).as_py()
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def row_counts(source: Any, repo_path: Path | str | None, key_columns: list[str], start: datetime,
               end: datetime) -> tuple[int, int] | None:
    """(source rows, distinct entities) with ``start <= ts <= end`` for a file source, else None.

    Feast writes the latest row per entity of the interval (its file store filters inclusively), so the
    number of distinct entities is the number of online rows written.
    """
    from feast import FileSource

    if not isinstance(source, FileSource):
        return None
    location = source_location(source, repo_path)
    if not exists(location):
        return (0, 0)
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    field = ds.field(source.timestamp_field)
    table = _dataset(location).to_table(columns=key_columns, filter=(field >= start) & (field <= end))
    if table.num_rows == 0:
        return (0, 0)
    if len(key_columns) == 1:
        distinct = len(pc.unique(table.column(key_columns[0])))
    else:
        distinct = table.group_by(key_columns).aggregate([]).num_rows
    return (table.num_rows, distinct)
