"""The monitor's read of the inference log: polars returns exactly what the pandas reader returned, and
compaction of closed hours loses no row, counts none twice, and keeps the gateway's request-id lookups.

Logs are written with the gateway's own serialisation (``predictions_frame``, ``feedback_tables``) at chosen
write times, so a log can span midnight and hours that are closed. The pandas reader as it was is
``tests/inference_log_reference.py``; every comparison is ``assert_frame_equal`` with exact values and dtypes.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import tests.inference_log_reference as reference
from core import inference_log
from core.inference_log import compact_log, log_partitions, read_feedback, read_window
from gateway.inference_log import FeedbackRecord, PredictionRecord, feedback_tables, predictions_frame

MODEL = "m"
MIDNIGHT = datetime(2026, 3, 2, tzinfo=UTC)
"""The logs below run from two hours before this midnight to two hours after."""
WEEK = timedelta(days=7)


# -- writing a log as the gateway does, at chosen times ----------------------------------------------------------


def _put(root: Path, kind: str, at: float, data: bytes) -> Path:
    """A file of the log written at ``at``: its day folder, its name and its modification time say so."""
    folder = root / MODEL / kind / f"date={datetime.fromtimestamp(at, UTC):%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{int(at * 1000)}-{uuid.uuid4().hex[:12]}.parquet"
    path.write_bytes(data)
    os.utime(path, (at, at))
    return path


def write_predictions(root: Path, at: float, records: list[PredictionRecord]) -> Path:
    return _put(root, "predictions", at, predictions_frame(records).to_parquet(index=False))


def write_feedback(root: Path, at: float, records: list[FeedbackRecord]) -> None:
    tables, bad = feedback_tables(records)
    assert not bad
    for table in tables:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        _put(root, "feedback", at, buffer.getvalue())


def record(rid: str, ts: float, rows: int, rng: np.random.Generator, *, role: str = "production", version: int = 1,
           plan: list[Any] | None = None, extra: bool = False) -> PredictionRecord:
    inputs: dict[str, np.ndarray] = {
        "x": rng.normal(size=rows),
        "n": rng.integers(0, 9, rows),
        "plan": np.array(plan if plan is not None else list(rng.choice(np.array(["a", "b", None], dtype=object), rows)), dtype=object),
    }
    if extra:  # a later version that takes one more feature
        inputs["z"] = rng.random(rows)
    return PredictionRecord(rid, ts, MODEL, version, role, inputs,
                            {"label": rng.integers(0, 2, rows), "probability": rng.random(rows)})


def build_log(root: Path, *, swap: bool = False, string_labels: bool = False, all_null: bool = False,
              seed: int = 0) -> None:
    """Two replicas flushing every 10 minutes from 22:00 to 02:00 across :data:`MIDNIGHT`: requests of one and
    two rows, shadow predictions of the same requests, a request id a client used twice, a nullable string
    feature. Feedback: most labels minutes later, some the next day, some relabelled later, one tie in time,
    one for a request never answered.

    ``swap``: from midnight the version takes one more feature (files of two schemas). ``string_labels``: some
    labels were stored as strings (feedback files of two label types). ``all_null``: one flush where the
    string feature was all null (arrow's null type in that file).
    """
    rng = np.random.default_rng(seed)
    start = MIDNIGHT.timestamp() - 2 * 3600
    labels: list[tuple[float, FeedbackRecord]] = []
    count = 0
    for flush in range(24):
        for replica in range(2):
            written = start + flush * 600 + 600 + replica * 3.5
            batch = []
            for _ in range(int(rng.integers(1, 4))):
                ts = written - float(rng.uniform(1, 590))
                rid = "reused-id" if count in (3, 40) else f"r{count}"
                count += 1
                rows = int(rng.integers(1, 3))
                after_swap = swap and ts >= MIDNIGHT.timestamp()
                plan = [None] * rows if all_null and flush == 5 and replica == 0 else None
                batch.append(record(rid, ts, rows, rng, version=2 if after_swap else 1, plan=plan, extra=after_swap))
                if count % 4 == 0:
                    batch.append(record(rid, ts, rows, rng, role="shadow", version=3))
                for row in range(rows):
                    if rng.random() < 0.6:
                        late = float(rng.choice([rng.uniform(5, 300), rng.uniform(20 * 3600, 30 * 3600)], p=[0.8, 0.2]))
                        value: Any = int(rng.integers(0, 2))
                        if string_labels and count % 5 == 0:
                            value = str(value)
                        labels.append((ts + late, FeedbackRecord(rid, row, value, ts + late, MODEL, "tester")))
                        if rng.random() < 0.1:  # relabelled an hour later
                            labels.append((ts + late + 3600, FeedbackRecord(rid, row, 1 - int(value), ts + late + 3600,
                                                                          MODEL, "tester")))
            if not (all_null and flush == 5 and replica == 0):  # a string in every other file
                batch[0].inputs["plan"][0] = "a"
            write_predictions(root, written, batch)
    labels.append((start + 100, FeedbackRecord("never-answered", 0, 1, start + 100, MODEL, "tester")))
    tie = labels[7][1]  # the same key and time again, with the other class: written later, so it wins
    labels.append((labels[7][0] + 400, FeedbackRecord(tie.request_id, tie.row, 1 - int(tie.label), tie.timestamp,
                                                      MODEL, "tester")))
    labels.sort(key=lambda item: item[0])
    by_flush: dict[int, list[FeedbackRecord]] = {}
    for at, item in labels:
        by_flush.setdefault(int(at // 300), []).append(item)  # written every 5 minutes after they came
    for slot, items in sorted(by_flush.items()):
        write_feedback(root, slot * 300 + 300 + 1.5, items)


WINDOWS = [
    (MIDNIGHT - timedelta(hours=1), MIDNIGHT + timedelta(hours=1)),
    (MIDNIGHT - timedelta(minutes=25), MIDNIGHT - timedelta(minutes=5)),
    (None, None),
    (MIDNIGHT + timedelta(minutes=30), None),
    (None, MIDNIGHT - timedelta(minutes=30)),
]


def assert_same_reads(root: Path, windows: Sequence[tuple[datetime | None, datetime | None]] = WINDOWS,
                      **kwargs: Any) -> None:
    for start, end in windows:
        old = reference.read_window(MODEL, start, end, root=str(root), horizon=WEEK, **kwargs)
        new = read_window(MODEL, start, end, root=str(root), horizon=WEEK, **kwargs)
        assert len(old) > 0
        pd.testing.assert_frame_equal(new, old, check_exact=True)


# -- the polars read is the pandas read -----------------------------------------------------------------------------


def test_the_polars_read_returns_exactly_the_rows_and_dtypes_the_pandas_read_did(tmp_path: Path) -> None:
    build_log(tmp_path)
    assert_same_reads(tmp_path)
    assert_same_reads(tmp_path, role=None)
    assert_same_reads(tmp_path, classes=[0, 1])
    both = read_window(MODEL, root=str(tmp_path), horizon=WEEK, role=None)
    assert both["request_id"].eq("reused-id").sum() >= 2 and both["role"].eq("shadow").any()
    labelled = both.dropna(subset=["label"])
    assert 0 < len(labelled) < len(both) and str(both["label"].dtype) == "float64"
    assert not both["request_id"].eq("never-answered").any()
    old = reference.read_feedback(MODEL, root=str(tmp_path), horizon=WEEK)
    pd.testing.assert_frame_equal(read_feedback(MODEL, root=str(tmp_path), horizon=WEEK), old, check_exact=True)


def test_files_of_two_schemas_and_labels_of_two_types_read_as_pandas_read_them(tmp_path: Path) -> None:
    """A version swap that adds a feature, labels stored as strings beside integers, a string feature all null
    in one file: the files are read a schema at a time and concatenated as pandas did (``z`` missing before
    the swap, labels of mixed types)."""
    build_log(tmp_path, swap=True, string_labels=True, all_null=True, seed=1)
    assert_same_reads(tmp_path)
    assert_same_reads(tmp_path, classes=[0, 1])
    window = read_window(MODEL, root=str(tmp_path), horizon=WEEK)
    assert window["z"].isna().any() and window["z"].notna().any()
    assert {type(v) for v in window["label"].dropna()} == {int, str}


def test_a_log_of_one_schema_is_read_by_polars_in_one_scan(tmp_path: Path) -> None:
    """The fast path is taken where it can be (so the comparisons above compare polars with pandas), and a
    file that stores a column as arrow's null type sends the read to the exact path."""
    import polars as pl

    build_log(tmp_path, all_null=True, seed=2)
    fs, _ = inference_log.filesystem(str(tmp_path))
    feedback = sorted(str(p) for p in (tmp_path / MODEL / "feedback").rglob("*.parquet"))
    assert isinstance(inference_log._read_files(fs, feedback), pl.DataFrame)
    predictions = sorted(str(p) for p in (tmp_path / MODEL / "predictions").rglob("*.parquet"))
    assert isinstance(inference_log._read_files(fs, predictions), pd.DataFrame)  # one flush's plan is all null
    uniform = [p for p in predictions if str(pq.read_schema(p).field("plan").type) == "string"]
    assert isinstance(inference_log._read_files(fs, uniform), pl.DataFrame)


def test_multiclass_probabilities_and_an_fsspec_store_read_as_pandas_read_them(tmp_path: Path) -> None:
    """A list column (one probability per class) and a log on an fsspec store that is not a local folder."""
    import fsspec

    rng = np.random.default_rng(3)
    memory_root = f"memory://log-{uuid.uuid4().hex[:8]}"
    memory, base = inference_log.filesystem(memory_root)
    for i in range(6):
        at = MIDNIGHT.timestamp() + 60 * i
        records = [PredictionRecord(f"q{i}-{j}", at - 30, MODEL, 1, "production", {"x": rng.normal(size=2)},
                                    {"label": rng.integers(0, 3, 2), "probabilities": rng.dirichlet([1, 1, 1], 2)})
                   for j in range(2)]
        path = write_predictions(tmp_path, at, records)
        memory.pipe(f"{base}/{MODEL}/predictions/{path.parent.name}/{path.name}", path.read_bytes())
        write_feedback(tmp_path, at + 5, [FeedbackRecord(f"q{i}-0", 1, 2, at + 5, MODEL)])
    for path in (tmp_path / MODEL / "feedback").rglob("*.parquet"):
        memory.pipe(f"{base}/{MODEL}/feedback/{path.parent.name}/{path.name}", path.read_bytes())
    windows = [(MIDNIGHT - timedelta(hours=1), MIDNIGHT + timedelta(hours=1))]
    assert_same_reads(tmp_path, windows)
    for root in (str(tmp_path), memory_root):
        frame = read_window(MODEL, *windows[0], root=root, horizon=WEEK)
        pd.testing.assert_frame_equal(frame, reference.read_window(MODEL, *windows[0], root=str(tmp_path),
                                                                   horizon=WEEK), check_exact=True)
        assert len(frame["output.probabilities"].iloc[0]) == 3 and frame["label"].notna().sum() == 6
    fsspec.filesystem("memory").rm(base, recursive=True)


def test_a_window_reads_only_the_files_written_from_an_hour_before_it(tmp_path: Path) -> None:
    """A file written before the window's start minus an hour cannot hold its rows (a record is written after
    it is made): such files are not even opened. Here they are not parquet, and opening one would fail."""
    build_log(tmp_path, seed=4)
    start, end = MIDNIGHT + timedelta(minutes=30), MIDNIGHT + timedelta(hours=1)
    expected = read_window(MODEL, start, end, root=str(tmp_path), horizon=WEEK)
    old_ms = int((start - timedelta(hours=1, minutes=1)).timestamp() * 1000)
    day = datetime.fromtimestamp(old_ms / 1000, UTC)
    for kind in ("predictions", "feedback"):
        (tmp_path / MODEL / kind / f"date={day:%Y-%m-%d}" / f"{old_ms}-broken.parquet").write_text("not parquet")
    pd.testing.assert_frame_equal(read_window(MODEL, start, end, root=str(tmp_path), horizon=WEEK), expected)
    listed = log_partitions(str(tmp_path), MODEL, "predictions", since=start - timedelta(hours=1))
    assert listed and all((inference_log.written_ms(p) or 0) > old_ms for paths in listed.values() for p in paths)
    with pytest.raises(Exception):  # noqa: B017 - the broken file is there: a read from before it fails
        read_window(MODEL, start - timedelta(hours=2), end, root=str(tmp_path), horizon=WEEK)


# -- compaction ------------------------------------------------------------------------------------------------------


NOW = (MIDNIGHT + timedelta(hours=3, minutes=1) + inference_log.COMPACT_MIN_AGE).timestamp()
"""Late enough that every hour of predictions is closed (the last file is written at 02:00:03)."""


def files(root: Path, kind: str = "predictions") -> list[Path]:
    return sorted((root / MODEL / kind).rglob("*.parquet"))


def hour_files(root: Path, hour: datetime) -> list[Path]:
    """The prediction files written in the hour starting at ``hour``, by their names."""
    lo = int(hour.timestamp() * 1000)
    return [p for p in files(root) if lo <= inference_log.written_ms(p.name) < lo + 3_600_000]  # type: ignore[operator]


def test_compaction_keeps_every_row_once_in_one_file_per_hour(tmp_path: Path) -> None:
    build_log(tmp_path, seed=5)
    before = {start_end: read_window(MODEL, *start_end, root=str(tmp_path), horizon=WEEK, role=None)
              for start_end in WINDOWS}
    n_before = len(files(tmp_path))
    done = compact_log(MODEL, root=str(tmp_path), now=NOW)
    assert done.hours >= 5 and done.finished and done.late_files == 0
    assert n_before == 48 and len(files(tmp_path)) == 5  # 2 replicas x 24 flushes, written in 5 hours
    assert all("-compacted-" in p.name for p in files(tmp_path))
    assert sum(pq.read_metadata(p).num_rows for p in files(tmp_path)) == done.rows - sum(
        pq.read_metadata(p).num_rows for p in files(tmp_path, "feedback") if "-compacted-" in p.name)
    for (start, end), frame in before.items():
        after = read_window(MODEL, start, end, root=str(tmp_path), horizon=WEEK, role=None)
        pd.testing.assert_frame_equal(after, frame, check_exact=True)
        # what is on disk: the pandas reader (which knows nothing of compaction) reads the same rows
        pd.testing.assert_frame_equal(reference.read_window(MODEL, start, end, root=str(tmp_path), horizon=WEEK,
                                                            role=None), frame, check_exact=True)
    assert compact_log(MODEL, root=str(tmp_path), now=NOW).files_in == 0  # nothing left to do


def test_an_hour_not_closed_yet_and_a_file_that_came_late_are_left_as_they_are(tmp_path: Path) -> None:
    build_log(tmp_path, seed=6)
    last_hour = hour_files(tmp_path, MIDNIGHT + timedelta(hours=1))
    assert len(last_hour) == 12  # 01:00-02:00: 6 flushes of 2 replicas
    late = last_hour[0]
    os.utime(late, (NOW - 60, NOW - 60))  # written in its hour by its name, but appeared long after
    expected = read_window(MODEL, root=str(tmp_path), horizon=WEEK)
    early = compact_log(MODEL, root=str(tmp_path), kinds=["predictions"],
                        now=(MIDNIGHT + timedelta(hours=3, minutes=30)).timestamp())
    assert all(p.exists() for p in last_hour)  # 01:00-02:00 ended 1.5 h ago: not closed
    assert (early.hours, early.files_in) == (3, 34)  # 22:00 (5 flushes of 2), 23:00 and 00:00 (6 of 2)
    done = compact_log(MODEL, root=str(tmp_path), kinds=["predictions"], now=NOW)
    assert done.late_files == 1 and late.exists() and not any(p.exists() for p in last_hour[1:])
    pd.testing.assert_frame_equal(read_window(MODEL, root=str(tmp_path), horizon=WEEK), expected, check_exact=True)


def test_a_reader_that_listed_the_files_before_they_were_compacted_lists_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compaction replaces the files between the reader's listing and its read: the read fails to open a
    deleted file, lists again (now the compacted files) and returns every row once."""
    build_log(tmp_path, seed=7)
    expected = read_window(MODEL, root=str(tmp_path), horizon=WEEK)
    real_read = inference_log._read_files
    compacted: list[int] = []

    def compaction_in_between(fs: Any, paths: list[str], *args: Any) -> Any:
        if not compacted:
            compacted.append(compact_log(MODEL, root=str(tmp_path), now=NOW).files_in)
        return real_read(fs, paths, *args)

    monkeypatch.setattr(inference_log, "_read_files", compaction_in_between)
    frame = read_window(MODEL, root=str(tmp_path), horizon=WEEK)
    assert compacted and compacted[0] > 0
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)


def test_a_compaction_stopped_before_deleting_its_sources_counts_no_row_twice(tmp_path: Path) -> None:
    """Sources still there beside their compacted file (a compaction stopped, or another one still reading
    them): readers skip them by the compacted file's manifest; the next pass deletes them."""
    build_log(tmp_path, seed=8)
    expected = read_window(MODEL, root=str(tmp_path), horizon=WEEK, role=None)
    kept = tmp_path / "kept"
    shutil.copytree(tmp_path / MODEL, kept / MODEL)
    compact_log(MODEL, root=str(tmp_path), now=NOW)
    compacted = files(tmp_path)
    for source in files(kept):  # put every source back
        target = tmp_path / source.relative_to(kept)
        shutil.copy2(source, target)
    assert len(files(tmp_path)) == len(compacted) + 48
    pd.testing.assert_frame_equal(read_window(MODEL, root=str(tmp_path), horizon=WEEK, role=None), expected,
                                  check_exact=True)
    again = compact_log(MODEL, root=str(tmp_path), now=NOW)
    assert again.removed_leftovers >= 48 and again.files_in == 0 and files(tmp_path) == compacted


def test_two_compactions_of_one_hour_write_the_same_file(tmp_path: Path) -> None:
    """The second one read the sources before the first deleted them: it writes the same rows under the same
    name, and its deletions find the sources gone."""
    build_log(tmp_path, seed=9)
    expected = read_window(MODEL, root=str(tmp_path), horizon=WEEK, role=None)
    fs, _ = inference_log.filesystem(str(tmp_path))
    day_dir = tmp_path / MODEL / "predictions" / f"date={MIDNIGHT:%Y-%m-%d}"
    hour = int(MIDNIGHT.timestamp())
    sources = [str(p) for p in hour_files(tmp_path, MIDNIGHT)]
    copies = {path: Path(path).read_bytes() for path in sources}
    written, rows_written = inference_log._compact_hour(fs, str(day_dir), hour, sources)
    assert written == 1 and rows_written > len(sources)
    (first,) = day_dir.glob("*-compacted-*.parquet")
    rows = pq.read_table(first)
    for path, data in copies.items():
        Path(path).write_bytes(data)
    inference_log._compact_hour(fs, str(day_dir), hour, sources)
    assert list(day_dir.glob("*-compacted-*.parquet")) == [first] and pq.read_table(first).equals(rows)
    assert not any(Path(p).exists() for p in sources)
    pd.testing.assert_frame_equal(read_window(MODEL, root=str(tmp_path), horizon=WEEK, role=None), expected,
                                  check_exact=True)


def test_an_hour_of_two_schemas_becomes_one_compacted_file_per_schema(tmp_path: Path) -> None:
    build_log(tmp_path, swap=True, string_labels=True, all_null=True, seed=10)
    expected = read_window(MODEL, root=str(tmp_path), horizon=WEEK, classes=[0, 1])
    done = compact_log(MODEL, root=str(tmp_path), now=NOW)
    assert done.files_out > done.hours  # the hour holding the all-null flush, and feedback of two label types
    pd.testing.assert_frame_equal(read_window(MODEL, root=str(tmp_path), horizon=WEEK, classes=[0, 1]), expected,
                                  check_exact=True)


def test_the_gateway_still_knows_the_answers_of_a_compacted_hour(tmp_path: Path) -> None:
    """The gateway accepts labels only for request ids it finds in the log: compacted files hold them too."""
    from gateway.answered import AnsweredRequests

    build_log(tmp_path, seed=11)
    compact_log(MODEL, root=str(tmp_path), now=NOW)
    ids = read_window(MODEL, root=str(tmp_path), horizon=WEEK)["request_id"].unique().tolist()
    index = AnsweredRequests(30 * 24 * 3600.0, log_root=str(tmp_path), flush_interval_s=0,
                             clock=lambda: NOW)
    assert index.unknown_logged(MODEL, [*ids, "made-up"]) == ["made-up"]
