"""The whole loop, as the README's main command runs it, on a copy of the churn example, on free ports.

Drift is injected, the monitor's Prefect event starts the retrain deployment on the worker, v2 goes out
as the canary, the canary flow's verdict promotes it on labelled traffic, and the gateway answers with v2
while clients keep sending requests: none may fail.
The demo runs in its own process, as a user runs it, so that its Ray cluster is not this session's.

Then the web console is opened in a real headless Chromium on the registry the demo's flows filled: a person's
walk from the models to a version, its training run and a monitoring report, the charts' points, a compare,
promote and rollback with and without the admin token, and the audit log after each. ``ESTEIRA_SCREENSHOTS``
saves each page as the README shows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.testing import free_port, serve_app
from tests.browser import chromium, screenshot  # noqa: F401 - chromium is a fixture

pytestmark = pytest.mark.slow
ADMIN_TOKEN = "demo-console-admin"


@dataclass(frozen=True)
class DemoRun:
    project: Path
    home: Path
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """The demo, run once for this module with ``--keep-up``; its stack stops when the module's tests are done."""
    from tests.projects import copy_example

    tmp_path = tmp_path_factory.mktemp("demo")
    project = copy_example("churn", tmp_path / "churn")
    home = tmp_path / "home"
    summary_file = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESTEIRA_", "PREFECT_", "RAY_ADDRESS"))}
    env.update({"ESTEIRA_HOME": str(home), "ESTEIRA_PREFECT_PORT": str(free_port()),
                "ESTEIRA_GATEWAY_PORT": str(free_port()), "ESTEIRA_STACK_RAY_PORT": str(free_port()),
                "ESTEIRA_CONSOLE_PORT": str(free_port()), "COLUMNS": "160"})
    command = [sys.executable, "-m", "esteira.cli", "demo", str(project), "--scale", "0.5", "--keep-up",
               "--summary-json", str(summary_file)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        yield DemoRun(project=project, home=home, summary=json.loads(summary_file.read_text()))
    finally:  # whatever happened, leave no stack behind
        subprocess.run([sys.executable, "-m", "esteira.cli", "--project", str(project), "down"], env=env,
                       capture_output=True, timeout=120, check=False)


def test_demo_runs_the_whole_loop(demo: DemoRun) -> None:
    summary = demo.summary
    steady, drifted = summary["reports"]
    assert drifted["decision"] == "retrain" and drifted["drift_share"] >= 0.3
    assert drifted["drift_share"] > steady["drift_share"]
    assert drifted["triggered_run"].startswith("event:"), "the retrain must start through the Prefect event"

    swap = summary["swap"]
    assert (swap["from_version"], swap["to_version"]) == (1, 2)
    assert swap["failed"] == 0 and swap["requests"] > 100
    # v2 went out as the canary and the canary flow's verdict promoted it; then v1 stopped answering
    assert swap["verdict"] == "promote" and swap["canary_looks"] >= 1, swap
    assert swap["labelled"]["canary"] >= 100 and swap["labelled"]["production"] >= 100, swap
    assert swap["promotion_to_last_v1_response_s"] is not None and swap["promotion_to_last_v1_response_s"] < 5.0

    versions = {v["version"]: v for v in summary["versions"]}
    assert versions[2]["aliases"] == ["production"]
    assert versions[2]["flow_run_id"], "v2 must record the retrain flow run that made it"
    assert versions[2]["holdout_metric"] > versions[2]["production_holdout_metric"]


def test_the_audit_log_tells_the_canarys_story(demo: DemoRun) -> None:
    """Retrained v2 started as the canary, then the canary flow's verdict (with its report) promoted it."""
    from registry import Registry

    registry = Registry.from_url(f"sqlite:///{demo.home / 'registry.db'}", str(demo.home / "artifacts"),
                                 notify=False)
    try:
        story = [(e.action, e.alias, e.to_version, e.actor.split("/")[0])  # "retrain/<run>" -> "retrain"
                 for e in registry.history("churn", version=2)]
        report = registry.get_report(demo.summary["swap"]["verdict_report_id"])
    finally:
        registry.close()
    started, verdict, promoted, ended = (story.index(step) for step in (
        ("promote", "canary", 2, "retrain"), ("canary_verdict", "canary", 2, "canary-flow"),
        ("promote", "production", 2, "canary-flow"), ("delete_alias", "canary", None, "canary-flow")))
    assert started < verdict < promoted < ended, story
    assert report.kind == "canary" and report.decision == "promote" and report.performance["bound"]["lower"] > 0


def test_the_stack_serves_the_console_with_the_demos_models(demo: DemoRun) -> None:
    url = demo.summary["urls"]["console"]
    assert url.startswith("http://127.0.0.1:"), demo.summary["urls"]
    page = httpx.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and 'data-model="churn"' in page.text


@pytest.fixture(scope="module")
def console_url(demo: DemoRun) -> Iterator[str]:
    """A console with an admin token on the demo's registry (the stack's own has none, as the embedded default)."""
    from pydantic import SecretStr

    from console.app import Console, create_app
    from core.settings import Settings

    settings = Settings(project=demo.project, home=demo.home, gateway_admin_token=SecretStr(ADMIN_TOKEN),
                        gateway_port=int(demo.summary["urls"]["gateway"].rsplit(":", 1)[1]))
    with serve_app(create_app(Console(settings))) as url:
        yield url


def _aliases(page: Any) -> dict[str, str]:
    return {row.get_attribute("data-alias"): row.locator("td").nth(1).inner_text()
            for row in page.locator("table.aliases tr[data-alias]").all()}


def _act(page: Any, action: str, token: str | None, **fields: str) -> None:
    form = page.locator(f"section.actions form[data-action={action}]")
    for name, value in fields.items():
        form.locator(f"input[name={name}]").fill(value)
    if token is not None:
        form.locator("input[name=token]").fill(token)
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()


def test_a_person_walks_the_console_in_chromium(demo: DemoRun, console_url: str, chromium: Any) -> None:  # noqa: F811
    from registry import Registry

    registry = Registry.from_url(f"sqlite:///{demo.home / 'registry.db'}", str(demo.home / "artifacts"))
    v2 = registry.get_version("churn", 2)
    page = chromium.new_page(viewport={"width": 1360, "height": 1000})
    page.goto(console_url)
    row = page.locator("tr[data-model=churn]")
    assert "production → v2" in row.inner_text()
    screenshot(page, "models")

    row.locator("a.model-link").click()
    assert page.locator("h1").inner_text() == "churn"
    assert _aliases(page)["production"] == "v2"
    served = page.locator("table.replicas").inner_text()
    assert "churn@production v2" in served, served  # what the gateway's replicas report they serve
    screenshot(page, "model")

    page.locator("tr[data-version='2'] a.version-link").click()
    lineage = page.locator("table.lineage").inner_text()
    assert v2.feature_service and v2.feature_service in lineage
    assert v2.training_set_sha256 and v2.training_set_sha256 in lineage and v2.artifact_sha256 in lineage
    assert page.locator("a.flow-run").get_attribute("href").startswith("http://127.0.0.1:")  # type: ignore[union-attr]
    screenshot(page, "version")

    page.locator("a.run-link").click()
    board = page.locator("table.leaderboard tbody tr")
    assert board.count() >= 3 and page.locator("table.leaderboard tr.chosen").count() == 1
    assert "Production on the same holdout" in page.locator("section.verdict").inner_text()
    screenshot(page, "run")
    page.locator("a.sort", has_text="Duration").click()
    page.wait_for_load_state()
    durations = [float(t) for t in page.locator("table.leaderboard tbody td:nth-child(7)").all_inner_texts()]
    assert durations == sorted(durations, reverse=True)

    page.goto(f"{console_url}/models/churn/monitoring")
    reports = len(demo.summary["reports"])
    assert page.locator("#drift-chart").get_attribute("data-points") == str(reports)
    assert page.locator("#drift-chart circle.point").count() == reports
    assert page.locator("#drift-chart circle.point[data-decision=retrain]").count() >= 1
    screenshot(page, "monitoring")
    page.locator("#drift-chart a:has(circle.point[data-decision=retrain])").last.click(force=True)
    page.wait_for_load_state()
    assert "retrain" in page.locator("h1").inner_text()
    assert page.locator("table.features tr.drifted").count() >= 1
    assert page.locator("table.features svg.picture").count() >= 1
    screenshot(page, "report")

    page.goto(f"{console_url}/models/churn")
    page.locator("input[name=v][value='1']").check()
    page.locator("input[name=v][value='2']").check()
    page.locator("#compare-form button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator("table.compare[data-section=lineage] tr.differs").count() >= 2
    screenshot(page, "compare")

    events = len(registry.history("churn"))
    page.goto(f"{console_url}/models/churn")
    _act(page, "promote", "not-the-token", version="1", actor="tester", reason="browser check")
    assert "invalid admin token" in page.locator("p.message").inner_text()
    assert registry.resolve_alias("churn", "production") == 2 and len(registry.history("churn")) == events

    page.goto(f"{console_url}/models/churn")
    _act(page, "promote", ADMIN_TOKEN, version="1", actor="tester", reason="browser check: back to v1")
    assert "Recorded as audit event" in page.locator("p.notice").inner_text()
    assert _aliases(page)["production"] == "v1" and registry.resolve_alias("churn", "production") == 1
    _act(page, "rollback", ADMIN_TOKEN, actor="tester", reason="browser check: v2 again")
    assert _aliases(page)["production"] == "v2"

    page.goto(f"{console_url}/models/churn/audit")
    newest = page.locator("table.audit tbody tr").first
    assert newest.get_attribute("data-action") == "rollback"
    assert "console:tester" in newest.inner_text() and "v2 again" in newest.inner_text()
    assert len(registry.history("churn")) == events + 2
    screenshot(page, "audit")

    page.goto(f"{console_url}/models/nope")
    assert "model 'nope' not found" in page.locator("p.message").inner_text()
    registry.close()
    page.close()
