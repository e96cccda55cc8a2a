"""Small helpers for tests and benchmarks of the gateway: tiny models and a free loopback port.

Kept in the package (like ``prefect.testing``) so the test suite and ``bench/`` share them. Nothing here
runs at import.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

NUMERIC_FEATURES = ("tenure_months", "monthly_charges", "support_calls")
SIGNATURE_NUMERIC: dict[str, Any] = {
    "inputs": [{"name": "tenure_months", "dtype": "int64"}, {"name": "monthly_charges", "dtype": "float64"},
               {"name": "support_calls", "dtype": "int64"}],
    "outputs": [{"name": "label", "dtype": "int64"}, {"name": "probability", "dtype": "float64"}],
    "task": "binary_classification",
    "classes": [0, 1],
}
SIGNATURE_MIXED: dict[str, Any] = {
    "inputs": [*SIGNATURE_NUMERIC["inputs"], {"name": "plan", "dtype": "string"}],
    "outputs": SIGNATURE_NUMERIC["outputs"],
    "task": "binary_classification",
    "classes": [0, 1],
}
PLANS = ("basic", "standard", "premium")


def training_frame(n: int = 300, seed: int = 0) -> tuple[Any, np.ndarray]:
    """A few hundred rows of a small binary problem (DataFrame, labels)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "tenure_months": rng.integers(0, 72, n),
        "monthly_charges": rng.normal(60, 20, n).round(2),
        "support_calls": rng.poisson(1.5, n),
        "plan": rng.choice(PLANS, n),
    })
    logit = -0.04 * frame["tenure_months"] + 0.03 * (frame["monthly_charges"] - 60) + 0.5 * frame["support_calls"]
    labels = (logit + rng.normal(0, 0.5, n) > 0).astype(int).to_numpy()
    return frame, labels


def numeric_classifier(kind: str = "logistic", seed: int = 0) -> Any:
    """A fitted all-numeric pipeline (fitted on a DataFrame, as training flows do)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame, labels = training_frame(seed=seed)
    estimators = {
        "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(C=1.0 + seed)),
        "forest": lambda: RandomForestClassifier(n_estimators=20, max_depth=4, random_state=seed),
        "hgb": lambda: HistGradientBoostingClassifier(max_iter=30, random_state=seed),
    }
    return estimators[kind]().fit(frame[list(NUMERIC_FEATURES)], labels)


def mixed_classifier(seed: int = 0) -> Any:
    """A fitted pipeline with a string column (ColumnTransformer by name: the DataFrame path)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, labels = training_frame(seed=seed)
    pre = ColumnTransformer([("num", StandardScaler(), list(NUMERIC_FEATURES)),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])])
    return Pipeline([("pre", pre), ("model", LogisticRegression())]).fit(frame, labels)


def example_row(mixed: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {"tenure_months": 12, "monthly_charges": 70.5, "support_calls": 2}
    if mixed:
        row["plan"] = "basic"
    return row


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_app(app: Any, *, timeout_s: float = 30.0) -> Iterator[str]:
    """``app`` served by uvicorn on a free 127.0.0.1 port in a thread, lifespan included; yields the base URL.

    For clients that only speak real HTTP (tritonclient, schemathesis' CLI) without a subprocess per test.
    """
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


@contextmanager
def serve_example_models(home: Any, numeric: str, mixed: str, **config: Any) -> Iterator[str]:
    """The numeric and mixed-type example classifiers, named ``numeric`` and ``mixed``, registered and promoted
    in a SQLite registry under ``home``, served by the real gateway app over HTTP (:func:`serve_app`; no Ray, no Feast);
    ``config`` adds :class:`GatewayConfig` fields (tokens). Yields the base URL."""
    from gateway.app import build_app
    from gateway.config import GatewayConfig
    from gateway.service import ModelService
    from registry import Registry

    registry = Registry.from_url(f"sqlite:///{home}/registry.db", str(home / "artifacts"))
    try:
        for name, model, signature in ((numeric, numeric_classifier(), SIGNATURE_NUMERIC),
                                       (mixed, mixed_classifier(), SIGNATURE_MIXED)):
            registry.promote(name, registry.register_version(name, model, signature=signature).version)
        service = ModelService.from_config(GatewayConfig(
            database_url=registry.url, artifact_root=registry.artifacts.root, inference_log_uri=str(home / "log"),
            feast_lookup=False, poll_interval_s=0.2, log_flush_interval_s=0.2, profile_in_subprocess=False,
            **config))
        with serve_app(build_app(service)) as url:
            yield url
    finally:
        registry.close()


def replica_pids(root_pid: int) -> list[int]:
    """The gateway replicas' processes under ``root_pid`` (an ``esteira serve`` process with its own Ray):
    Ray titles them ``ray::ServeReplica:<app>:<deployment>``."""
    import psutil

    pids = []
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::ServeReplica"):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return sorted(pids)


def haproxy_replicas(stats_port: int) -> dict[str, str]:
    """Replica servers in Ray Serve's HAProxy backends and their status (``UP``, ``DOWN``...), from HAProxy's
    stats page (``RAY_SERVE_HAPROXY_STATS_PORT``); Serve's fallback proxy, a backup server there, left out.
    Empty while HAProxy does not answer."""
    import csv
    import io
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=2) as resp:
            text = resp.read().decode().lstrip("# ")
    except OSError:
        return {}
    return {row["svname"]: row["status"] for row in csv.DictReader(io.StringIO(text))
            if row["svname"].startswith("SERVE_REPLICA")}
