"""The canary flow through the real gateway: simulated traffic, labels by request id, verdicts, hot-loads.

The gateway is the real ``ModelService`` and its FastAPI app on a SQLite registry (no Ray); the models are
the one-feature threshold flavor (the third-party plugin of ``tests/plugins``), whose accuracy on a known
truth and whose latency (``delay_ms``) a test sets. The truth is ``y = x > 0`` with a tenth of the labels
flipped, so a threshold at 0 is the best rule and one further from 0 is worse. The inference log writes
only when a test says so (``flush``); the verdict is the flow's own (``run_canary``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from flows.canary import run_canary
from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.service import ModelService

MODEL = "rule"
SIGNATURE = {"inputs": [{"name": "x", "dtype": "float64"}],
             "outputs": [{"name": "label", "dtype": "int64"}, {"name": "probability", "dtype": "float64"}],
             "task": "binary", "classes": [0, 1]}
POLICY = {"min_labels": 100, "planned_labels": 1500, "min_requests": 50}
BATCH = 200
MAX_LOOKS = 12  # at most 2,400 requests before the test gives up


def _rule(threshold: float, delay_ms: float = 0.0) -> dict[str, Any]:
    return {"feature": "x", "threshold": threshold, "delay_ms": delay_ms}


def _release(registry: Any, production: dict[str, Any], canary: dict[str, Any], share: float) -> tuple[int, int]:
    """``production`` in production, ``canary`` started as the canary with ``share`` of the traffic."""
    v1 = registry.register_version(MODEL, production, flavor="threshold", signature=SIGNATURE).version
    registry.promote(MODEL, v1, reason="baseline")
    v2 = registry.register_version(MODEL, canary, flavor="threshold", signature=SIGNATURE).version
    registry.start_canary(MODEL, v2, share=share, reason="try it", actor="test")
    return v1, v2


@pytest.fixture
def gateway(threshold_plugin: None, registry: Any, esteira_home: Path) -> Iterator[tuple[ModelService, TestClient]]:
    def make() -> tuple[ModelService, TestClient]:
        config = GatewayConfig(database_url=registry.url, artifact_root=registry.artifacts.root, feast_lookup=False,
                               inference_log_uri=str(esteira_home / "inference"), poll_interval_s=0.05,
                               log_flush_interval_s=3600, feedback_wait_s=0, profile_in_subprocess=False,
                               batch_max_rows=0)
        service = ModelService.from_config(config)
        return service, TestClient(build_app(service))

    made: list[TestClient] = []

    def started() -> tuple[ModelService, TestClient]:
        service, client = make()
        client.__enter__()
        made.append(client)
        return service, client

    yield started  # type: ignore[misc]
    for client in made:
        client.__exit__(None, None, None)


class Traffic:
    """Requests with known truth, and their labels sent back by request id through the feedback route."""

    def __init__(self, client: TestClient, service: ModelService, seed: int = 0) -> None:
        self.client, self.service = client, service
        self.rng = np.random.default_rng(seed)
        self.versions: dict[int, int] = {}
        self.sent = 0

    def send(self, n: int, *, labels: bool = True) -> None:
        x = self.rng.normal(0.0, 1.0, n)
        truth = (x > 0).astype(int)
        flip = self.rng.random(n) < 0.1
        truth[flip] = 1 - truth[flip]
        items = []
        for value, label in zip(x, truth, strict=True):
            self.sent += 1
            response = self.client.post(f"/v1/models/{MODEL}/predict",
                                        json={"inputs": {"x": float(value)}, "request_id": f"r{self.sent}"})
            assert response.status_code == 200, response.text
            body = response.json()
            self.versions[body["version"]] = self.versions.get(body["version"], 0) + 1
            items.append({"request_id": body["request_id"], "label": int(label)})
        if labels:
            answer = self.client.post(f"/v1/models/{MODEL}/feedback", json={"items": items})
            assert answer.status_code == 202 and answer.json()["accepted"] == n, answer.text
        assert self.service.inference_log is not None
        self.service.inference_log.flush()


def _judge_until_verdict(registry: Any, traffic: Traffic, root: Path) -> tuple[Any, int]:
    """Send labelled batches and let the flow look after each one, until it concludes (or the test fails)."""
    for look in range(1, MAX_LOOKS + 1):
        traffic.send(BATCH)
        outcome = run_canary(MODEL, registry=registry, policy=POLICY, root=str(root))
        assert outcome is not None
        if outcome.action != "continue":
            return outcome, look
    raise AssertionError(f"no verdict after {MAX_LOOKS * BATCH} requests: {outcome.reason}")


def _answers_only(client: TestClient, service: ModelService, version: int) -> None:
    service.manager.poll_once()
    seen = {client.post(f"/v1/models/{MODEL}/predict", json={"inputs": {"x": 0.3}, "request_id": f"after{i}"}
                        ).json()["version"] for i in range(40)}
    assert seen == {version}


def test_a_better_canary_is_promoted_after_a_bounded_number_of_labels_and_hot_loaded(
        gateway: Any, registry: Any, esteira_home: Path) -> None:
    v1, v2 = _release(registry, _rule(0.8), _rule(0.0), share=0.5)
    service, client = gateway()
    traffic = Traffic(client, service)
    outcome, looks = _judge_until_verdict(registry, traffic, esteira_home / "inference")

    assert outcome.action == "promote", outcome.reason
    assert traffic.versions.keys() == {v1, v2}
    assert outcome.labelled["canary"] + outcome.labelled["production"] <= looks * BATCH
    assert registry.aliases(MODEL) == {"production": v2}
    actions = [(e.action, e.alias) for e in registry.history(MODEL)[-3:]]
    assert actions == [("canary_verdict", "canary"), ("promote", "production"), ("delete_alias", "canary")]
    assert all(f"report {outcome.report_id}" in e.reason for e in registry.history(MODEL)[-3:])
    report = registry.get_report(outcome.report_id)
    assert report.kind == "canary" and report.decision == "promote"
    assert report.performance["bound"]["lower"] > 0  # the evidence: better, with the confidence sequence's bound
    assert registry.reports(MODEL) == []  # canary verdicts are not monitor reports
    _answers_only(client, service, v2)


def test_a_worse_canary_is_rolled_back_and_production_keeps_every_request(
        gateway: Any, registry: Any, esteira_home: Path) -> None:
    v1, v2 = _release(registry, _rule(0.0), _rule(1.0), share=0.5)
    service, client = gateway()
    traffic = Traffic(client, service, seed=1)
    outcome, _ = _judge_until_verdict(registry, traffic, esteira_home / "inference")

    assert outcome.action == "rollback", outcome.reason
    assert registry.aliases(MODEL) == {"production": v1}
    last = registry.history(MODEL)[-1]
    assert (last.action, last.alias, last.from_version, last.to_version) == ("rollback", "canary", v2, None)
    assert registry.get_report(outcome.report_id).performance["bound"]["upper"] < 0
    _answers_only(client, service, v1)


def test_a_canary_three_times_slower_is_rolled_back_by_the_guardrail_in_one_look_without_labels(
        gateway: Any, registry: Any, esteira_home: Path) -> None:
    v1, v2 = _release(registry, _rule(0.0, delay_ms=5.0), _rule(0.0, delay_ms=15.0), share=0.5)
    service, client = gateway()
    traffic = Traffic(client, service, seed=2)
    traffic.send(160, labels=False)
    outcome = run_canary(MODEL, registry=registry, policy=POLICY, root=str(esteira_home / "inference"))

    assert outcome is not None and outcome.action == "rollback", outcome and outcome.reason
    assert outcome.labelled == {"canary": 0, "production": 0}
    assert "latency" in outcome.reason
    sides = outcome.guardrails["sides"]
    assert sides["canary"]["p99_ms"] > 2 * sides["production"]["p99_ms"]
    assert registry.aliases(MODEL) == {"production": v1}
    _answers_only(client, service, v1)


def test_an_equal_canary_is_not_promoted_however_often_the_flow_looks(
        gateway: Any, registry: Any, esteira_home: Path) -> None:
    """Two versions of the same rule: the flow looks after every batch and never concludes (margin 0)."""
    _release(registry, _rule(0.0), _rule(0.0), share=0.5)
    service, client = gateway()
    traffic = Traffic(client, service, seed=3)
    for _ in range(6):
        traffic.send(BATCH)
        outcome = run_canary(MODEL, registry=registry, policy=POLICY, root=str(esteira_home / "inference"),
                             act=False)
        assert outcome is not None and outcome.action == "continue", outcome.reason
    assert len(registry.reports(MODEL, kind="canary")) == 6


def test_a_canary_is_concluded_once_when_two_judges_race(registry: Any, threshold_plugin: None) -> None:
    """``end_canary(version=...)`` is a compare-and-set: the slower of two judges (a scheduled run and one
    started by hand) finds the canary concluded, and a canary replaced meanwhile is not concluded by a verdict
    on its predecessor."""
    from registry import NotFound

    v1, v2 = _release(registry, _rule(0.5), _rule(0.0), share=0.2)
    registry.end_canary(MODEL, promote=True, reason="first judge", version=v2)
    with pytest.raises(NotFound, match="concluded already"):
        registry.end_canary(MODEL, promote=True, reason="second judge", version=v2)
    v3 = registry.register_version(MODEL, _rule(0.1), flavor="threshold", signature=SIGNATURE).version
    registry.start_canary(MODEL, v3, reason="next")
    with pytest.raises(NotFound, match=f"is version {v3} now, not {v1}"):
        registry.end_canary(MODEL, promote=False, reason="stale verdict", version=v1)
    assert registry.aliases(MODEL) == {"canary": v3, "production": v2}


def test_no_canary_means_nothing_to_judge(registry: Any, esteira_home: Path) -> None:
    assert run_canary("nobody", registry=registry, root=str(esteira_home / "inference")) is None
