"""The web console over HTTP: every page on SQLite and PostgreSQL, what bad input gets, the two actions.

The browser tests (``tests/test_e2e_demo.py``) open the same pages in Chromium on the registry the demo's
flows filled; these read a registry filled through the ``Registry`` API (``tests/console_data.py``) and check
each page's content, the 404 and 503 pages, and that promote and rollback need the admin token, go through
the registry and land in the audit log with their actor. A canary's pages read a story written as the canary
flow writes it: its reports (kind ``canary``) and the registry calls of its verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from console.app import Console, create_app
from console.server import ConsoleExposureError, check_exposure
from core.settings import Settings
from registry import Registry
from tests.console_data import Filled, canary_look, fill, start_canary_story

TOKEN = "console-admin-token"


def _client(registry: Registry, tmp_path: Path, token: str | None = None) -> TestClient:
    settings = Settings(home=tmp_path, gateway_admin_token=SecretStr(token) if token else None)
    return TestClient(create_app(Console(settings, registry)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """An empty registry on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}", str(tmp_path / "artifacts"))
    else:
        registry = Registry(request.getfixturevalue("pg_url"), str(tmp_path / "artifacts"))
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture
def filled(any_registry: Registry) -> tuple[Registry, Filled]:
    return any_registry, fill(any_registry, versions=12, trials=240, reports=25)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_every_page_shows_the_registry(filled: tuple[Registry, Filled], tmp_path: Path) -> None:
    registry, data = filled
    client = _client(registry, tmp_path)
    name = data.model
    events_before = len(registry.history(name))

    index = client.get("/")
    assert index.status_code == 200 and "Server-Timing" in index.headers
    assert f'data-model="{name}"' in index.text and "production → v12" in _text(index.text)
    assert f'href="/reports/{data.report_ids[-1]}"' in index.text  # the latest monitoring decision
    assert client.get("/?q=no-such-thing").text.count("data-model=") == 0

    model = client.get(f"/models/{name}")
    assert model.status_code == 200
    assert re.search(r'data-alias="production".*?v12', model.text, re.S)
    assert re.search(r'data-alias="staging".*?v11', model.text, re.S)
    assert model.text.count("data-version=") == 12

    version = _text(client.get(f"/models/{name}/versions/3").text)
    assert "svc_v1" in version and f"{2:064x}" in version and "10,002 rows" in version  # lineage
    assert "scikit-learn 1.7.2" in version and "git:" in version
    mv = registry.get_version(name, 3)
    assert f"run {mv.training_run_id}" in version

    run = client.get(f"/runs/{data.big_run_id}?sort=cv&order=desc")
    scores = [float(s) for s in re.findall(r'<td class="cv">([-0-9.e]+)</td>', run.text)]
    assert len(scores) == 100 and scores == sorted(scores, reverse=True)  # a page of the 120-trial leaderboard
    assert "class=\"chosen" in run.text and "beats production on the holdout" in run.text
    second = client.get(f"/runs/{data.big_run_id}?sort=duration&order=asc&page=2")
    assert second.status_code == 200 and second.text.count("data-trial=") == 20

    monitoring = client.get(f"/models/{name}/monitoring").text
    assert re.search(r'id="drift-chart"[^>]*data-points="25"', monitoring)
    assert re.search(r'id="performance-chart"[^>]*data-points="25"', monitoring)
    assert monitoring.count('data-decision="retrain"') == 2 * 2  # two retrain reports, on both charts

    retrain = data.report_ids[9]
    report = client.get(f"/reports/{retrain}").text
    assert report.count('class="picture histogram"') == 14 and report.count('class="picture categories"') == 6
    assert "00000000-0000-4000-8000-000000000009" in report  # the retrain run it started

    compare = client.get(f"/models/{name}/compare?v=1&v=12").text
    assert 'data-field="holdout_roc_auc"' in compare and 'class="differs" data-field="code_version"' in compare

    audit = client.get(f"/models/{name}/audit").text
    ids = [int(i) for i in re.findall(r'data-event="(\d+)"', audit)]
    assert ids == sorted(ids, reverse=True) and len(ids) == events_before
    assert len(registry.history(name)) == events_before, "reading pages must write nothing"


def test_unknown_things_are_404_pages_that_name_them(registry: Registry, tmp_path: Path) -> None:
    data = fill(registry, versions=2, trials=4, reports=1)
    client = _client(registry, tmp_path)
    cases = {
        "/models/nope": "model 'nope' not found",
        f"/models/{data.model}/versions/99": f"version 99 of model '{data.model}' not found",
        f"/models/{data.model}/versions/abc": "versions are numbers",
        "/models/nope/versions/1": "model 'nope' not found",
        "/reports/424242": "monitoring report 424242 not found",
        "/runs/424242": "training run 424242 not found",
        f"/models/{data.model}/compare?v=1&v=7": f"version 7 of model '{data.model}' not found",
        "/no/such/page": "no page at /no/such/page",
    }
    for url, message in cases.items():
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert message in _text(answer.text).replace("&#39;", "'"), (url, _text(answer.text))
        assert "Traceback" not in answer.text
    bad = {f"/runs/{data.big_run_id}?sort=bogus": "sort", f"/models/{data.model}/compare?v=1": "v",
           f"/models/{data.model}?page=x": "page", f"/models/{data.model}?filter=metrics.x >": "filter"}
    for url, field in bad.items():
        answer = client.get(url)
        assert answer.status_code == 400, url
        assert field in _text(answer.text), (url, _text(answer.text))


@pytest.mark.parametrize("url", ["postgresql+psycopg://esteira@127.0.0.1:1/registry",
                                 "sqlite:///{tmp_path}"])  # a folder where the database file should be
def test_a_registry_that_is_down_gives_a_page_that_says_so(url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=url.format(tmp_path=tmp_path))
    client = TestClient(create_app(Console(settings)))
    for path in ("/", "/models/m", "/reports/1"):
        answer = client.get(path)
        assert answer.status_code == 503
        assert "The registry is unavailable" in answer.text and "registry database unreachable" in answer.text
        assert "Traceback" not in answer.text
    assert client.get("/healthz").status_code == 200  # the console itself is up


def _audit_tail(registry: Registry, name: str) -> list[tuple[str, str | None, int | None, str, str]]:
    return [(e.action, e.alias, e.to_version, e.actor, e.reason) for e in registry.history(name)]


def test_promote_and_rollback_need_the_admin_token_and_land_in_the_audit_log(
        any_registry: Registry, tmp_path: Path) -> None:
    registry = any_registry
    data = fill(registry, versions=3, trials=6, reports=0)
    name = data.model
    client = _client(registry, tmp_path, token=TOKEN)
    before = _audit_tail(registry, name)
    form = {"version": "1", "alias": "production", "actor": "ana", "reason": "v3 misbehaves"}

    for token, status, says in (("", 401, "needs the admin token"), ("wrong", 401, "invalid admin token")):
        answer = client.post(f"/models/{name}/promote", data={**form, "token": token}, follow_redirects=False)
        assert answer.status_code == status and says in answer.text
        answer = client.post(f"/models/{name}/rollback", data={**form, "token": token}, follow_redirects=False)
        assert answer.status_code == status
    assert registry.resolve_alias(name, "production") == 3 and _audit_tail(registry, name) == before

    cross_site = client.post(f"/models/{name}/promote", data={**form, "token": TOKEN},
                             headers={"Origin": "http://elsewhere.example"}, follow_redirects=False)
    assert cross_site.status_code == 403 and registry.resolve_alias(name, "production") == 3

    for field, value in (("reason", ""), ("actor", " "), ("version", "one"), ("alias", "Bad Alias!")):
        answer = client.post(f"/models/{name}/promote", data={**form, "token": TOKEN, field: value},
                             follow_redirects=False)
        assert answer.status_code == 400 and f"field: {field}" in _text(answer.text), field
    missing = client.post(f"/models/{name}/promote", data={**form, "version": "9", "token": TOKEN})
    assert missing.status_code == 404 and "version 9" in missing.text
    assert _audit_tail(registry, name) == before

    promoted = client.post(f"/models/{name}/promote", data={**form, "token": TOKEN}, follow_redirects=False)
    assert promoted.status_code == 303
    assert registry.resolve_alias(name, "production") == 1
    assert _audit_tail(registry, name)[-1] == ("promote", "production", 1, "console:ana", "v3 misbehaves")
    page = client.get(promoted.headers["location"]).text
    assert "Recorded as audit event" in page and "console:ana" in page

    rolled = client.post(f"/models/{name}/rollback",
                         data={"alias": "production", "actor": "ana", "reason": "false alarm", "token": TOKEN},
                         follow_redirects=False)
    assert rolled.status_code == 303 and registry.resolve_alias(name, "production") == 3
    assert _audit_tail(registry, name)[-1] == ("rollback", "production", 3, "console:ana", "false alarm")
    audit = client.get(f"/models/{name}/audit").text
    assert audit.index("false alarm") < audit.index("v3 misbehaves"), "newest first"


def test_without_an_admin_token_actions_are_open_on_loopback_only(registry: Registry, tmp_path: Path) -> None:
    data = fill(registry, versions=2, trials=2, reports=0)
    client = _client(registry, tmp_path)
    answer = client.post(f"/models/{data.model}/promote",
                         data={"version": "1", "actor": "bo", "reason": "try v1", "token": ""})
    assert answer.status_code == 200 and registry.resolve_alias(data.model, "production") == 1
    check_exposure("127.0.0.1", Settings(home=tmp_path))
    with pytest.raises(ConsoleExposureError, match="ESTEIRA_GATEWAY_ADMIN_TOKEN"):
        check_exposure("0.0.0.0", Settings(home=tmp_path))
    check_exposure("0.0.0.0", Settings(home=tmp_path, gateway_admin_token=SecretStr(TOKEN)))


def test_the_model_page_shows_what_each_live_gateway_replica_serves(registry: Registry, tmp_path: Path) -> None:
    data = fill(registry, versions=3, trials=3, reports=0)
    name = data.model
    served = {f"{name}@production": {"version": 3, "flavor": "sklearn", "role": "serving"},
              f"{name}@challenger": {"version": 2, "flavor": "sklearn", "role": "shadow"},
              "other@production": {"version": 7, "flavor": "sklearn", "role": "serving"}}
    registry.record_replica("gw#a", host="node-a", pid=11, served=served, refused={f"{name}:1": "IntegrityError"})
    registry.record_replica("gw#b", host="node-b", pid=12, served={f"{name}@production": {"version": 2,
                                                                                         "role": "serving"}})
    registry.record_replica("gw#gone", host="node-c", pid=13, served=served)
    registry.stop_replica("gw#gone")
    page = _client(registry, tmp_path).get(f"/models/{name}").text
    table = _text(page[page.index('<table class="replicas">'):page.index("</table>", page.index("replicas"))])
    assert "node-a" in table and "node-b" in table and "node-c" not in table, table  # a stopped one is gone
    assert f"{name}@production v3" in table and f"{name}@challenger v2 (shadow)" in table
    assert f"refused {name}:1" in table and "other@" not in table
    index = _text(_client(registry, tmp_path).get("/").text)
    assert f"{name}@production v2 {name}@production v3" in index  # a mixed fleet mid-swap shows both


def test_the_leaderboard_ranks_sorts_and_pages_in_sql_as_python_would(any_registry: Registry) -> None:
    """``Registry.leaderboard`` against a plain-Python oracle: rank by CV score with failed trials last (ties by
    id), any sort column either way with missing values last, pages that tile the whole run."""
    import random

    registry = any_registry
    rng = random.Random(3)
    run = registry.start_run("board")
    rows = []
    for i in range(57):
        failed = i % 9 == 4
        metrics = {} if i % 13 == 5 else {"cv_mean": round(rng.choice([0.7, 0.8, rng.random()]), 3),
                                         "cv_std": round(rng.random() / 10, 4)}
        rows.append({"family": rng.choice(["a", "b", "c"]), "params": {"i": i}, "metrics": metrics,
                     "duration_s": round(rng.random() * 5, 2), "status": "failed" if failed else "succeeded"})
    trials = registry.record_trials(run.id, rows)  # type: ignore[arg-type]

    def score(t):  # noqa: ANN001, ANN202
        return t.metrics.get("cv_mean") if t.status == "succeeded" else None

    by_rank = sorted(trials, key=lambda t: (score(t) is None, -(score(t) or 0), t.id))
    rank = {t.id: i + 1 for i, t in enumerate(by_rank)}
    keys = {"id": lambda t: t.id, "family": lambda t: t.family, "cv": score,
            "std": lambda t: t.metrics.get("cv_std"), "duration": lambda t: t.duration_s, "status": lambda t: t.status}
    assert registry.trial_counts(run.id) == (57, sum(r["status"] == "failed" for r in rows))  # type: ignore[arg-type]
    for sort, key in keys.items():
        for descending in (True, False):
            present = sorted((t for t in trials if key(t) is not None), key=lambda t: t.id)
            present.sort(key=key, reverse=descending)  # stable: ties stay in id order
            expected = [(rank[t.id], t.id) for t in present + [t for t in trials if key(t) is None]]
            got = [(r, t.id) for offset in (0, 20, 40)
                   for r, t in registry.leaderboard(run.id, sort=sort, descending=descending,  # type: ignore[arg-type]
                                                    offset=offset, limit=20)]
            assert got == expected, (sort, descending)


def test_text_from_the_registry_is_shown_as_text_never_as_markup(registry: Registry, tmp_path: Path) -> None:
    data = fill(registry, versions=2, trials=2, reports=1)
    hostile = "<script>alert(1)</script>"
    registry.create_model("plain", description=hostile, tags={"team": "<b>x</b>"})
    report = registry.get_report(data.report_ids[0])
    features = dict(report.drift["features"])
    features['<img src=x onerror="alert(1)">'] = {
        "algorithm": "chi-square", "drifted": True, "picture": {
            "kind": "categories", "categories": [hostile], "reference": [1.0], "window": [1.0]}}
    registry.update_report(report.id, drift={**report.drift, "features": features}, reason=hostile)  # type: ignore[arg-type]
    registry.promote(data.model, 1, reason=hostile, actor="<i>me</i>")
    client = _client(registry, tmp_path)
    for url in ("/", "/models/plain", f"/reports/{report.id}", f"/models/{data.model}/audit",
                f"/models/{data.model}/versions/1", f"/models/{data.model}/monitoring"):
        html = client.get(url).text
        for raw in (hostile, "<img src=x", "<b>x</b>", "<i>me</i>"):
            assert raw not in html, (url, raw)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/models/plain").text


def _row(html: str, marker: str) -> str:
    """The text of the first table row that holds ``marker`` (an attribute such as ``data-action="x"``)."""
    found = [row for row in re.findall(r"<tr[^>]*>.*?</tr>", html, re.S) if marker in row]
    assert found, marker
    return _text(found[0]).strip()


def _cells(html: str, row: str) -> list[str]:
    """The canary and production cells of one row of a canary report's sides table."""
    cells = re.findall(r'<td data-side="\w+">(.*?)</td>', _raw_row(html, row), re.S)
    return [_text(c).strip() for c in cells]


def _raw_row(html: str, row: str) -> str:
    found = re.search(rf'<tr data-row="{row}">(.*?)</tr>', html, re.S)
    assert found, row
    return found.group(1)


def test_a_canary_shows_its_share_its_looks_and_its_verdict(any_registry: Registry, tmp_path: Path) -> None:
    registry = any_registry
    story = start_canary_story(registry, reports=3)  # production v1, canary v2 on 30% of requests
    name = story.model
    client = _client(registry, tmp_path)
    started = [e for e in registry.history(name, alias="canary") if e.action == "promote"][-1]

    first = canary_look(registry, story, "continue")
    model = client.get(f"/models/{name}").text
    assert re.search(r'data-canary="version"><a href="/models/canary_model/versions/2">v2<', model)
    assert 'data-canary="share">30%<' in model
    assert f'data-canary="since">{started.created_at:%Y-%m-%d %H:%M:%S}<' in model
    latest = _row(model, 'data-canary="latest"')
    assert f'href="/reports/{first}"' in model and "continue" in latest and f"report {first}" in latest
    assert "waiting for labels: 1 canary and 12 production labelled rows" in _text(model)
    assert "1 canary · 12 production" in _row(model, f'data-report="{first}"')

    looking = client.get(f"/reports/{first}").text
    assert "Canary report" in looking and "decision-continue" in looking
    assert _cells(looking, "labelled") == ["1", "12"] and _cells(looking, "requests") == ["60", "140"]
    assert "unbounded" in _row(looking, 'data-bound="lower"')
    assert "unbounded" in _row(looking, 'data-bound="upper"')
    assert 'class="features"' not in looking and "Drift" not in looking  # a verdict has no drift section

    second = canary_look(registry, story, "promote")
    events_before = len(registry.history(name))
    report = registry.get_report(second)
    perf = report.performance
    verdict = client.get(f"/reports/{second}").text
    heading = _text(verdict[verdict.index("<h1>"):verdict.index("</h1>")])
    assert "promote" in heading and "canary better: accuracy difference" in _text(verdict)
    assert _cells(verdict, "version") == ["v2", "v1"]
    assert _cells(verdict, "labelled") == ["900", "2,100"]
    assert _cells(verdict, "mean") == [f"{perf['mean']['canary']:.4g}", f"{perf['mean']['production']:.4g}"]
    sides = perf["guardrails"]["sides"]
    assert _cells(verdict, "p99_ms") == [f"{sides[side]['p99_ms']:.4g}" for side in ("canary", "production")]
    assert _cells(verdict, "errors") == ["0", "0"] and _cells(verdict, "error_rate") == ["0%", "0%"]
    bound = perf["bound"]
    assert bound["lower"] > 0 and _row(verdict, 'data-bound="lower"') == f"Lower {bound['lower']:+.4g}"
    assert _row(verdict, 'data-bound="upper"') == f"Upper {bound['upper']:+.4g}"
    assert _row(verdict, 'data-bound="planned_labels"') == "Planned labels 2,000"
    assert "95% confidence sequence" in _text(verdict) and "none breached" in verdict
    assert _row(verdict, "min_labels") == "min_labels 100"
    assert _row(verdict, "max_duration") == "max_duration 2d"
    assert "30% of requests" in _text(verdict)
    flow_run = "00000000-1111-4000-8000-000000000000"
    assert re.search(rf'class="flow-run" href="http[^"]+/runs/flow-run/{flow_run}"', verdict)
    for v in (1, 2):
        assert f'href="/models/{name}/versions/{v}"' in verdict

    concluded = client.get(f"/models/{name}").text
    assert "data-canary=" not in concluded, "the verdict ended the canary"
    assert re.findall(r'<tr data-report="(\d+)" data-decision="(\w+)"', concluded) == [
        (str(second), "promote"), (str(first), "continue")]  # history stays, newest first
    assert "no canary runs now" in concluded

    audit = client.get(f"/models/{name}/audit").text
    assert "share 10% → 30%" in _row(audit, 'data-action="canary_share"')
    ruling = _row(audit, 'data-action="canary_verdict"')
    assert "verdict promote" in ruling and f"report {second}" in ruling and "no guardrail breached" in ruling
    assert f'href="/reports/{second}"' in audit
    assert f"[{bound['lower']:+.4g}, {bound['upper']:+.4g}]" in ruling
    assert "alias removed" in _row(audit, 'data-action="delete_alias"')
    assert "{" not in _text(audit), "no event's details shown as a raw dict"

    monitoring = client.get(f"/models/{name}/monitoring").text  # the charts and table are the monitor's only
    assert re.search(r'id="drift-chart"[^>]*data-points="3"', monitoring)
    assert re.search(r'id="performance-chart"[^>]*data-points="3"', monitoring)
    assert f"/reports/{first}" not in monitoring and f"/reports/{second}" not in monitoring
    assert f"/reports/{second}" not in client.get("/").text  # "last monitoring" is the monitor's
    assert len(registry.history(name)) == events_before, "reading pages must write nothing"


def test_a_restarted_canary_waits_for_its_own_look_and_a_guardrail_rollback_reads_well(
        registry: Registry, tmp_path: Path) -> None:
    story = start_canary_story(registry)
    name = story.model
    client = _client(registry, tmp_path)
    canary_look(registry, story, "continue")
    registry.start_canary(name, 2, share=0.05, reason="restart on a smaller share", actor="ops")
    model = client.get(f"/models/{name}").text
    assert 'data-canary="share">5%<' in model
    latest = _row(model, 'data-canary="latest"')
    assert "not judged yet since it started" in latest  # the earlier canary's look is not this one's

    rolled = canary_look(registry, story, "rollback")
    page = client.get(f"/reports/{rolled}").text
    assert "decision-rollback" in page and "canary breached a guardrail: error rate" in _text(page)
    breached = re.search(r'<ul class="breached">(.*?)</ul>', page, re.S)
    assert breached and "more than 2 points above" in _text(breached.group(1))
    audit = client.get(f"/models/{name}/audit").text
    assert "verdict rollback" in _row(audit, 'data-action="canary_verdict"')
    assert "guardrails breached: error rate" in _row(audit, 'data-action="canary_verdict"')
    assert "alias removed" in _row(audit, 'data-action="rollback"')
    assert "data-canary=" not in client.get(f"/models/{name}").text

    hostile = "<script>alert(1)</script>"
    report = registry.get_report(rolled)
    perf = report.performance
    registry.update_report(rolled, reason=hostile, performance={  # type: ignore[arg-type]
        **perf, "note": hostile, "metric": hostile, "policy": {**perf["policy"], hostile: hostile},
        "guardrails": {**perf["guardrails"], "breached": [hostile]}})
    registry.record_event(name, "note", reason=hostile, actor=hostile,
                          details={hostile: [hostile], "x": hostile})
    registry.set_canary_share(name, 0.2, reason=hostile, actor=hostile)
    for url in (f"/reports/{rolled}", f"/models/{name}", f"/models/{name}/audit"):
        html = client.get(url).text
        assert hostile not in html, url
        assert "&lt;script&gt;" in html, url
