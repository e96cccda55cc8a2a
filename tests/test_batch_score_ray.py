"""Batch scoring on Ray Data: the engine switch, entity inspection without reading rows, input errors that
fail before Ray, and, on a real two-node Ray cluster with real Feast, the Ray Data engine giving the same
rows and values as the single-process engine, with the work spread over both nodes.

The cluster (a head and a second node started with ``ray start --address``, both on 127.0.0.1, two logical
CPUs each, so that one scoring actor per node leaves a CPU free for reading and writing) is
isolated as in ``test_ray_cluster``: its own temp dir, free ports, token auth, a client in a subprocess with
``RAY_ADDRESS``, and teardown that stops only the processes this test started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.batch_ray import default_actors, inspect_entities
from flows.batch_score import LOCAL_MAX_ROWS, RAY_MIN_ROWS, batch_score, choose_engine
from flows.errors import TrainingInputError
from registry import Registry
from tests.projects import EXAMPLES, copy_example, project_module, use_project, use_project_alone
from tests.ray_cluster import two_node_ray

SPEC: dict[str, Any] = {
    "name": "score_ray",
    "task": "binary",
    "feature_service": "churn_v1",
    "label": "churned",
    "labels": {"source": "data/churn_labels"},
    "candidates": [{"family": "hist_gradient_boosting", "params": {"max_iter": 20}}],
    "cv": {"folds": 2},
    "holdout": {"fraction": 0.25},
    "validation": {"min_rows": 200},
    "promotion": {"min_improvement": 0.0, "min_metric": 0.5},
}

# -- the engine switch and the entity source, no Ray ---------------------------------------------------


def test_auto_engine_goes_to_ray_for_large_inputs_sooner_on_a_cluster() -> None:
    assert choose_engine("auto", RAY_MIN_ROWS - 1, cluster=True) == "local"
    assert choose_engine("auto", RAY_MIN_ROWS, cluster=True) == "ray"
    assert choose_engine("auto", RAY_MIN_ROWS, cluster=False) == "local"  # one machine: local is faster
    assert choose_engine("auto", LOCAL_MAX_ROWS, cluster=False) == "ray"  # ... until its memory is the limit
    assert choose_engine("local", 10 * LOCAL_MAX_ROWS, cluster=True) == "local"
    assert choose_engine("ray", 1, cluster=False) == "ray"
    with pytest.raises(TrainingInputError, match="engine must be one of auto, local, ray, not 'spark'"):
        choose_engine("spark", 1, cluster=True)


def test_the_actor_pool_leaves_one_cpu_for_reading_and_writing() -> None:
    assert default_actors(2) == 1 and default_actors(4) == 3 and default_actors(64) == 63
    assert default_actors(1) == 1  # a 1-CPU Ray still gets an actor (and waits for the listing task to end)


def test_entities_are_counted_from_parquet_metadata_and_csv(tmp_path: Path) -> None:
    folder = tmp_path / "entities"
    folder.mkdir()
    for i in range(3):
        pd.DataFrame({"k": np.arange(i * 10, i * 10 + 10), "event_timestamp": pd.Timestamp.now(tz="UTC")}
                     ).to_parquet(folder / f"part-{i}")  # no extension: read_rows reads these, and so must Ray
    source = inspect_entities(str(folder))
    assert (source.rows, source.columns, source.fmt) == (30, ("k", "event_timestamp"), "parquet")
    pd.DataFrame({"k": [1, 2]}).to_csv(tmp_path / "e.csv", index=False)
    assert inspect_entities(str(tmp_path / "e.csv")).rows == 2
    with pytest.raises(TrainingInputError, match="does not exist"):
        inspect_entities(str(tmp_path / "absent.parquet"))
    (tmp_path / "bad.parquet").write_text("k\n1\n")
    with pytest.raises(TrainingInputError, match="cannot be read as parquet"):
        inspect_entities(str(tmp_path / "bad.parquet"))


# -- a project with a trained model (real Feast, no Ray: the search runs in-process) ----------------------


@pytest.fixture(scope="module")
def scored_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A copy of the churn example with 300 customers, a model trained and promoted, and entity files."""
    from core.settings import get_settings
    from feature_repo.store import clear_store_cache
    from flows.features import FeastFetcher
    from flows.spec import load_spec
    from flows.train import train

    base = tmp_path_factory.mktemp("score-ray")
    root = copy_example("churn", base / "churn")
    with pytest.MonkeyPatch.context() as mp:
        use_project_alone(root, base / "home", mp)
        generator = project_module(EXAMPLES / "churn", "generator")
        generator.generate_batch(root / "data", n_customers=300, labels_per_customer=3, seed=11)
        url, artifacts = f"sqlite:///{base / 'registry.db'}", str(base / "artifacts")
        registry = Registry(url, artifacts)
        train(load_spec(SPEC), registry=registry, fetcher=FeastFetcher(apply=True), parallel=False)
        registry.close()
        labels = generator.load_labels(root / "data")
        rng = np.random.default_rng(3)
        rows = labels.drop(columns=["churned"]).sample(3000, replace=True, random_state=3).reset_index(drop=True)
        rows["event_timestamp"] += pd.to_timedelta(rng.integers(0, 3600, len(rows)), unit="s")
        rows.loc[rows.index[:40], "customer_id"] = 999_999_999  # unknown: missing features on both engines
        rows.to_parquet(base / "entities.parquet")
        bad = rows.head(50).astype({"event_timestamp": str})
        bad["event_timestamp"] = "not a time"
        bad.to_parquet(base / "bad_timestamps.parquet")
        yield {"root": root, "base": base, "url": url, "artifacts": artifacts, "home": base / "home"}
        clear_store_cache()
    get_settings.cache_clear()


def test_bad_entities_fail_before_ray_starts(scored_project: dict[str, Any], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing columns, no rows, or no file: the same errors on the Ray engine as on the local one, raised
    from metadata before any Ray work (the calls return in well under Ray's start-up time)."""
    monkeypatch.setenv("ESTEIRA_HOME", str(scored_project["home"]))
    use_project(scored_project["root"], monkeypatch)
    registry = Registry(scored_project["url"], scored_project["artifacts"])
    try:
        pd.DataFrame({"customer_id": [1]}).to_parquet(tmp_path / "keys_only.parquet")
        pd.DataFrame({"customer_id": pd.Series([], dtype="int64"), "days_until_renewal": pd.Series([], dtype="int64")}
                     ).to_parquet(tmp_path / "empty.parquet")
        for engine in ("local", "ray"):
            started = time.monotonic()
            with pytest.raises(TrainingInputError, match=r"lack column\(s\) \['days_until_renewal'\]"):
                batch_score("score_ray@production", str(tmp_path / "keys_only.parquet"), registry=registry,
                            engine=engine, output=str(tmp_path / "o"))  # type: ignore[arg-type]
            with pytest.raises(TrainingInputError, match="no entities to score"):
                batch_score("score_ray@production", str(tmp_path / "empty.parquet"), registry=registry,
                            engine=engine, output=str(tmp_path / "o"))  # type: ignore[arg-type]
            with pytest.raises(TrainingInputError, match="does not exist"):
                batch_score("score_ray@production", "absent.parquet", registry=registry, engine=engine,
                            output=str(tmp_path / "o"))  # type: ignore[arg-type]
            assert time.monotonic() - started < 5.0
        assert not (tmp_path / "o").exists()
    finally:
        registry.close()


# -- the two-node cluster ----------------------------------------------------------------------------------

CLIENT = r"""
import json, sys, time
import ray
from core.ray_runtime import ensure_ray
from flows.batch_score import batch_score
from flows.errors import TrainingInputError
from registry import Registry

args = json.loads(sys.argv[1])
ensure_ray()  # joins RAY_ADDRESS, as every esteira process does
deadline = time.monotonic() + 60
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)  # the second node registers some seconds after the head
registry = Registry(args["url"], args["artifacts"])
model = "score_ray@production"
marks = [time.monotonic()]
local = batch_score(model, args["entities"], output=args["out_local"], engine="local", registry=registry)
marks.append(time.monotonic())
dist = batch_score(model, args["entities"], output=args["out_ray"], engine="ray", registry=registry,
                   batch_rows=500, actors=2)
marks.append(time.monotonic())
try:
    batch_score(model, args["bad"], output=args["out_bad"], engine="ray", registry=registry, actors=2)
    bad = None
except TrainingInputError as exc:
    bad = str(exc)
marks.append(time.monotonic())
print("RESULT " + json.dumps({"local": local.to_dict(), "ray": dist.to_dict(), "bad": bad,
                              "alive": sum(n["Alive"] for n in ray.nodes()),
                              "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
                              "cpus": ray.cluster_resources().get("CPU"),
                              "seconds": [round(b - a, 1) for a, b in zip(marks, marks[1:])]}))
"""


@pytest.fixture
def two_node_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """(the head's address, the environment of its nodes and clients): two nodes of 2 logical CPUs each."""
    with two_node_ray(cpus_per_node=2) as cluster:
        yield cluster


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["scored_at"]).sort_values(
        ["customer_id", "event_timestamp", "probability"], kind="stable").reset_index(drop=True)


@pytest.mark.slow
def test_ray_data_scores_the_same_rows_as_one_process_on_both_nodes(
        scored_project: dict[str, Any], two_node_cluster: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    address, cluster_env = two_node_cluster
    env = {**cluster_env, "RAY_ADDRESS": address, "ESTEIRA_HOME": str(scored_project["home"]),
           "ESTEIRA_PROJECT": str(scored_project["root"])}
    for var in ("ESTEIRA_RAY_ADDRESS", "ESTEIRA_DATABASE_URL", "ESTEIRA_ARTIFACT_ROOT"):
        env.pop(var, None)
    base = scored_project["base"]
    args = {"url": scored_project["url"], "artifacts": scored_project["artifacts"],
            "entities": str(base / "entities.parquet"), "bad": str(base / "bad_timestamps.parquet"),
            "out_local": str(tmp_path / "local.parquet"), "out_ray": str(tmp_path / "ray.parquet"),
            "out_bad": str(tmp_path / "bad.parquet")}
    done = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    print("seconds (local, ray, ray with a bad row):", result["seconds"])
    local, dist = result["local"], result["ray"]
    assert result["alive"] == 2 and result["cpus"] == 4.0
    assert (local["engine"], dist["engine"]) == ("local", "ray")

    # the same rows and values, the same counts
    one, many = pd.read_parquet(local["path"]), pd.read_parquet(dist["path"])
    assert Path(dist["path"]).is_dir()  # Ray Data writes a folder of parquet files
    assert list(one.columns) == list(many.columns) == [
        "customer_id", "event_timestamp", "label", "probability", "model_name", "model_version", "scored_at"]
    pd.testing.assert_frame_equal(_sorted(one), _sorted(many), check_exact=True)
    assert local["rows"] == dist["rows"] == len(one) == 3000
    assert local["rows_with_missing_features"] == dist["rows_with_missing_features"] >= 40
    assert set(many["model_name"]) == {"score_ray"} and set(many["model_version"]) == {1}

    # the work ran on both nodes: scoring actors recorded their node with every batch
    per_node = dist["rows_per_node"]
    assert set(per_node) == set(result["nodes"]) and all(rows > 0 for rows in per_node.values())
    assert sum(per_node.values()) == 3000

    # a row error inside an actor reaches the caller as the same input error as on the local engine
    assert result["bad"] is not None and "column 'event_timestamp' is not a timestamp" in result["bad"]
