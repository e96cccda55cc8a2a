"""Batch scoring on Ray Data: entities stream from parquet/CSV through scoring actors into parquet.

The pipeline is ``read -> repartition -> map_batches(_Scorer) -> write_parquet``, run by Ray Data's streaming
executor:
blocks flow through as they are read, and the executor backpressures on the object store's budget, so
neither the driver nor any worker holds the whole dataset. Each scoring actor loads the model once (the
artifact read by URI and checked against the registry's sha256, then the version's flavor builds the
predictor, as :meth:`registry.Registry.load_predictor` does) and opens the feature store once; every batch
then runs :func:`flows.scoring.score_frame`, the step the single-process engine runs on the whole
frame, so both engines give the same rows.

Cluster placement: Ray Data spreads the actors over the nodes (its default ``SPREAD`` strategy). The pool
leaves one CPU of the cluster free: Ray Data starts the actors before any read task, and its file listing
task needs a whole CPU that nothing can configure away, so a pool on every CPU waits forever
(ray-project/ray 44687, seen here with Ray 2.60: a 2-CPU Ray and two 1-CPU actors never started reading).

Where things must be for a multi-node cluster: entities and output as URIs every node can reach (``s3://``
...) or a shared folder; the project folder at the same path on every node, or shipped as the job's working
directory (``ray job submit --working-dir``); the feature store's online store and registry shared services.
The actors get the settings that locate those stores (:func:`core.ray_runtime.replica_env_vars`).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fsspec
import pandas as pd

from flows.errors import TrainingInputError
from flows.features import FeastFetcher, FeatureFetcher, file_format
from flows.scoring import ScoringPlan, score_frame, utc_timestamps

if TYPE_CHECKING:
    import pyarrow.fs

    from core.project import Project

log = logging.getLogger("esteira.flows.batch_ray")


ACTOR_START_TIMEOUT_S = 600
"""How long the scoring actors may take to start (load the model, open the feature store) before the run fails:
on this 2-core machine an actor took 10-20 s; a cluster that must first add nodes needs minutes."""


@dataclass(frozen=True)
class EntitySource:
    """A parquet/CSV location of entities, counted and described from metadata, not read."""

    location: str
    fmt: str
    rows: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class RayRun:
    rows: int
    rows_with_missing_features: int
    rows_per_node: dict[str, int] = field(default_factory=dict)


def arrow_filesystem(location: str) -> tuple[pyarrow.fs.FileSystem | None, str]:
    """(pyarrow filesystem, path) for a local path or fsspec URI; None for the local disk, which Ray Data and
    pyarrow then open natively. Other fsspec filesystems are wrapped so every reader sees one interface."""
    return _arrow_filesystem(*fsspec.core.url_to_fs(location))


def _arrow_filesystem(fs: fsspec.AbstractFileSystem, path: str) -> tuple[pyarrow.fs.FileSystem | None, str]:
    from fsspec.implementations.local import LocalFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    if isinstance(fs, LocalFileSystem):
        return None, path
    return PyFileSystem(FSSpecHandler(fs)), path


def inspect_entities(location: str, *, what: str = "entities") -> EntitySource:
    """Rows and columns of a parquet file or folder, or a CSV file, local or any fsspec URI.

    Parquet rows come from the files' footers (no row is read); a CSV is scanned once in a stream. Errors
    read as :func:`flows.features.read_rows`'s do.
    """
    import pyarrow.dataset as pads

    fmt = file_format(location)
    fs, path = fsspec.core.url_to_fs(location)
    filesystem, path = _arrow_filesystem(fs, path)
    if not fs.exists(path):
        raise TrainingInputError(f"{what} {location} does not exist")
    try:
        dataset = pads.dataset(path, filesystem=filesystem, format=fmt)
        return EntitySource(location, fmt, int(dataset.count_rows()), tuple(dataset.schema.names))
    except Exception as exc:  # unreadable: a parquet reader on CSV, a corrupt file, no permission
        raise TrainingInputError(f"{what} {location} cannot be read as {fmt}: {type(exc).__name__}: {exc}"
                                 ) from None


def default_actors(cluster_cpus: float, actor_cpus: float = 1.0) -> int:
    """One scoring actor per CPU of the cluster but one (the module docstring says why one stays free)."""
    return max(1, int((cluster_cpus - 1) // actor_cpus))


@functools.cache
def _tally_class() -> Any:
    """The counting actor's class, made on first use so that importing this module does not import Ray."""
    import ray

    @ray.remote(num_cpus=0)
    class Tally:
        """Counts what the scoring actors did (rows, rows with missing inputs, rows per node) and keeps the first
        input error one of them met: Ray hands the driver that error only as text inside its own exception."""

        def __init__(self) -> None:
            self.rows = 0
            self.missing = 0
            self.nodes: Counter[str] = Counter()
            self.refusal: str | None = None

        def add(self, rows: int, missing: int, node: str) -> None:
            self.rows += rows
            self.missing += missing
            self.nodes[node] += rows

        def refuse(self, message: str) -> None:
            self.refusal = self.refusal or message

        def totals(self) -> tuple[int, int, dict[str, int]]:
            return self.rows, self.missing, dict(self.nodes)

        def refused(self) -> str | None:
            return self.refusal

    return Tally


class _Scorer:
    """The Ray Data UDF: one per actor, so the model and the feature store open once per actor, not per batch."""

    def __init__(self, plan: ScoringPlan, tally: Any, fetcher: FeatureFetcher | None = None) -> None:
        import ray

        from registry.artifacts import ArtifactStore
        from registry.flavors.base import get_flavor

        self.plan = plan
        self.tally = tally
        self.node = ray.get_runtime_context().get_node_id()
        # Registry.load_predictor's two steps, without a database connection per actor: the bytes must match
        # the sha256 the registry recorded, then the flavor (with its trusted-type checks) builds the predictor.
        data = ArtifactStore.read_verified(plan.artifact_uri, plan.artifact_sha256)
        self.predictor = get_flavor(plan.flavor).load(data, plan.signature)
        self.fetcher = fetcher if fetcher is not None else FeastFetcher()
        self.fetcher.service(plan.feature_service)  # opens the store now: a broken store fails the actor, early

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import ray

        try:
            frame = utc_timestamps(batch, self.plan.timestamp)
            result, missing = score_frame(frame, self.plan, self.predictor, self.fetcher)
        except TrainingInputError as exc:
            ray.get(self.tally.refuse.remote(str(exc)))
            raise
        # Waited on: the driver reads the totals right after the last batch, so no count may still be in flight.
        ray.get(self.tally.add.remote(len(result), missing, self.node))
        return result


def _read(source: EntitySource | pd.DataFrame) -> Any:
    import ray

    if isinstance(source, pd.DataFrame):
        return ray.data.from_pandas(source)
    filesystem, path = arrow_filesystem(source.location)
    if source.fmt == "csv":
        return ray.data.read_csv(path, filesystem=filesystem, file_extensions=None)
    return ray.data.read_parquet(path, filesystem=filesystem, file_extensions=None)


def score_on_ray(plan: ScoringPlan, source: EntitySource | pd.DataFrame, output: str, *,
                 project: Project | None, batch_rows: int, fetcher: FeatureFetcher | None = None,
                 actors: int | None = None, actor_cpus: float = 1.0) -> RayRun:
    """Stream ``source`` through ``actors`` scoring actors into a folder of parquet files at ``output``.

    A file source is read by Ray Data's tasks on the nodes; a DataFrame source (already in the caller's memory)
    is put into the object store as it is.

    Ray is joined as everywhere else (:func:`core.ray_runtime.ensure_ray`: ``ESTEIRA_RAY_ADDRESS`` or
    ``RAY_ADDRESS``, else a local Ray). A :class:`~flows.features.FeastFetcher` is opened again in each actor
    (a feature store does not travel); any other fetcher is sent to the actors as it is.
    """
    import ray
    from ray.data import ActorPoolStrategy, SaveMode

    from core.ray_runtime import ensure_ray, replica_env_vars

    if batch_rows < 1:
        raise TrainingInputError(f"batch_rows must be at least 1, not {batch_rows}")
    resources = ensure_ray()
    cpus = resources.get("CPU", 1.0)
    size = actors or default_actors(cpus, actor_cpus or 1.0)
    if cpus < 2:
        actor_cpus = 0.0  # a 1-CPU Ray: the listing task needs that CPU, so the one actor reserves none
    if size * actor_cpus > cpus - 1:
        log.warning("%d scoring actors of %s CPU leave no CPU of the cluster's %s for Ray Data's file listing: the "
                    "run may wait until more CPUs join (ray-project/ray 44687)", size, actor_cpus, cpus)
    shipped = bool(ray.get_runtime_context().runtime_env.get("working_dir"))
    env_vars = {"WHYLOGS_NO_ANALYTICS": "1",
                **replica_env_vars(project.root if project is not None else None, shipped=shipped)}
    remote_fetcher = None if fetcher is None or isinstance(fetcher, FeastFetcher) else fetcher
    tally = _tally_class().remote()
    filesystem, path = arrow_filesystem(output)
    try:
        # Blocks of one batch each: an actor task takes a whole block, so one large block would keep every
        # batch on one actor (one node) however many actors wait. Streaming: blocks are cut as they are read.
        blocks = _read(source).repartition(target_num_rows_per_block=batch_rows)
        # The pool starts in full before the first block: otherwise the first actor up queues the first blocks
        # while the others load (seconds each), and a short run never reaches the other nodes. A pool the
        # cluster cannot place fails after the wait instead of hanging. This dataset's context only.
        blocks.context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
        scored = blocks.map_batches(
            _Scorer, fn_constructor_kwargs={"plan": plan, "tally": tally, "fetcher": remote_fetcher},
            batch_size=batch_rows, batch_format="pandas",
            compute=ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=2),
            num_cpus=actor_cpus, runtime_env={"env_vars": env_vars})
        scored.write_parquet(path, filesystem=filesystem, mode=SaveMode.OVERWRITE)
        rows, missing, per_node = ray.get(tally.totals.remote())
    except Exception:
        # Ray Data raises a UserCodeException whose original exception is gone (only its text survives):
        # the input error an actor recorded fails the run as it would on the local engine.
        refusal = ray.get(tally.refused.remote())
        if refusal is not None:
            raise TrainingInputError(refusal) from None
        raise
    finally:
        ray.kill(tally)
    log.info("Ray Data scored %d rows on %d node(s) with %d actor(s)", rows, len(per_node), size)
    return RayRun(rows, missing, per_node)
