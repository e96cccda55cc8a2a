"""``esteira demo PROJECT``: the whole loop, end to end, on a project, on the embedded default.

1. the project's local stack: Prefect server, worker and deployments, a Ray head, the gateway on Ray Serve; the web console;
2. the project's scenario writes its baseline data; the materialize flow applies the definitions and loads
   the online store; the train flow trains v1 across Ray, registers and promotes it;
3. realistic traffic (entity-key and inline requests, rebuilt from the spec's label source) and
   ground-truth feedback; a monitor run that finds nothing wrong;
4. the scenario makes the world change (drift); drifted traffic; the monitor finds drift and emits a
   Prefect event; the retrain deployment's trigger starts it on the worker; v2 wins on the holdout and goes
   out as the canary (the spec's ``promotion.rollout: canary``), answering a share of live requests;
5. labelled traffic on both versions; the canary flow looks after each round until its verdict (a
   confidence sequence on the labelled rows, guardrails on latency and errors) promotes v2; the gateway
   hot-loads it while clients keep sending requests throughout (every failure is counted);
6. a summary: versions and metrics before and after, drift scores, what triggered what, stage timings.

Everything about the domain comes from the project: its spec (model name, label, feature service), its
label source (traffic and feedback) and ``scenario.py``, the one file a project adds to be demonstrated:

    SPEC = "<spec name>"                        # the model the demo trains and watches
    def baseline(root: Path, scale: float) -> dict  # write the first data; {"note", "changed_since"}
    def drift(root: Path, scale: float) -> dict     # change the world; {"note", "changed_since"}

``changed_since`` is the earliest event timestamp of any row the step wrote (a snapshot dated long before
the rest included): the materialization starts there, and an older row would never reach the online store.

Every flow here runs against the stack's Prefect server, so each one is in the UI with its artifacts.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from core.project import Project
from core.settings import Settings, get_settings

SCENARIO_FILE = "scenario.py"
TRAFFIC_DAYS = 7
"""Traffic replays the latest label of each entity from the last days of the label source."""


class DemoFailed(RuntimeError):
    """A stage of the demo did not do what it should; the message says which and why."""


def load_scenario(project: Project) -> ModuleType:
    """The project's ``scenario.py``, imported with the project folder on ``sys.path`` (so it may import the
    project's own modules, as Feast definition modules may)."""
    path = project.root / SCENARIO_FILE
    if not path.is_file():
        raise DemoFailed(f"{project.root} has no {SCENARIO_FILE}: the demo needs one to write data and make it "
                         "drift (the projects under esteira's examples/ folder show how)")
    module = project.load_module(path.stem)
    for name in ("SPEC", "baseline", "drift"):
        if not hasattr(module, name):
            raise DemoFailed(f"{path} lacks {name} (see the esteira.demo docstring)")
    return module


@dataclass
class LoadStats:
    """What clients saw: every request counted, none retried."""

    sent: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)
    first_seen: dict[int, float] = field(default_factory=dict)
    last_seen: dict[int, float] = field(default_factory=dict)

    def record(self, ok: bool, latency_ms: float, version: int | None, detail: str = "") -> None:
        self.sent += 1
        if not ok:
            self.failed += 1
            self.errors[detail[:120]] = self.errors.get(detail[:120], 0) + 1
            return
        self.latencies_ms.append(latency_ms)
        if version is not None:
            self.versions[version] = self.versions.get(version, 0) + 1
            now = time.time()
            self.first_seen.setdefault(version, now)
            self.last_seen[version] = now

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


@dataclass
class DemoSummary:
    ok: bool
    stages: list[tuple[str, float, str]]
    versions: list[dict[str, Any]]
    reports: list[dict[str, Any]]
    swap: dict[str, Any]
    urls: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "stages": self.stages, "versions": self.versions, "reports": self.reports,
                "swap": self.swap, "urls": self.urls}


class Demo:
    """One run of the demo. Stages are methods so that a test can read what each one checked."""

    def __init__(self, project: Project, *, keep_up: bool, console: Console, scale: float = 1.0,
                 requests_per_phase: int = 400, settings: Settings | None = None,
                 retrain_timeout_s: float = 300.0) -> None:
        self.project = project
        self.scenario = load_scenario(project)
        self.scale = scale
        self.keep_up = keep_up
        self.console = console
        self.requests_per_phase = requests_per_phase
        self.settings = settings or get_settings()
        self.retrain_timeout_s = retrain_timeout_s
        self.stages: list[tuple[str, float, str]] = []
        self.rng = random.Random(7)
        self.urls: dict[str, str] = {}
        self.reports: list[dict[str, Any]] = []
        self.swap: dict[str, Any] = {}
        self.last_summary: DemoSummary | None = None
        from flows.spec import resolve_spec

        self.spec = resolve_spec(self.scenario.SPEC, project)
        self.model = self.spec.name

    # -- plumbing ---------------------------------------------------------------------------------------

    @contextmanager
    def stage(self, name: str) -> Iterator[list[str]]:
        notes: list[str] = []
        started = time.perf_counter()
        with self.console.status(f"[bold]{name}[/]..."):
            yield notes
        seconds = time.perf_counter() - started
        self.stages.append((name, seconds, "; ".join(notes)))
        self.console.print(f"[green]✓[/] {name} [dim]({seconds:.1f}s)[/] {'; '.join(notes)}", highlight=False)

    @property
    def gateway(self) -> str:
        return self.urls["gateway"]

    def registry(self) -> Any:
        from registry import Registry

        return Registry.from_url()

    # -- stages -----------------------------------------------------------------------------------------

    def start_stack(self) -> None:
        from esteira.stack import local_ray_address, stack_env, start_stack

        with self.stage("stack: Prefect server + worker + deployments, Ray head, gateway, console") as notes:
            # Flows run in this process and in the worker: both must find the stack's server and Ray.
            os.environ.update(stack_env(self.settings))
            os.environ["ESTEIRA_RAY_ADDRESS"] = local_ray_address(self.settings)
            get_settings.cache_clear()
            self.settings = get_settings()
            info = start_stack(self.settings, serving=True, console=True)
            self.urls = {"console": info.console_url or "", "prefect_ui": info.ui_url,
                         "gateway": info.gateway_url or "", "gateway_docs": f"{info.gateway_url}/docs"}
            notes.append(f"{len(info.deployments)} deployments, UI {info.ui_url}, gateway {info.gateway_url}, "
                         f"console {info.console_url}")

    def write_and_materialize(self, step: str) -> str:
        """The scenario writes data (``baseline`` or ``drift``); the materialize flow loads it from the moment
        it changed (the data lies in the past: an incremental run alone would skip it)."""
        from flows.materialize import materialize_flow

        written = getattr(self.scenario, step)(self.project.root, self.scale)
        since = written.get("changed_since")
        report = materialize_flow(project=str(self.project.root),
                                  start=since.isoformat() if isinstance(since, datetime) else since)
        return f"{written.get('note', step)}; {_rows(report)} online rows written"

    def prepare_data(self) -> None:
        with self.stage("data: the scenario's baseline, materialized into Feast") as notes:
            notes.append(self.write_and_materialize("baseline"))

    def train_v1(self) -> int:
        from flows.train import train_flow

        metric = self.spec.metric
        with self.stage("train the baseline across Ray") as notes:
            result = train_flow(spec=self.model, project=str(self.project.root), parallel=True)
            notes.append(f"v{result['version']} {result['best_family']} -> {result['alias']} "
                         f"(holdout {metric} {result['metrics'].get(f'holdout_{metric}', float('nan')):.4g}, "
                         f"{result['n_trials']} trials)")
        version = int(result["version"])
        if not result["promoted"]:
            # A second demo run finds the first run's post-drift model in production. The story starts
            # from a model trained before the drift, so make it the baseline, in the audit log's words.
            reg = self.registry()
            try:
                reg.promote(self.model, version, reason=f"esteira demo: baseline trained before the drift "
                                                   f"(the rule alone said: {result['reason']})", actor="esteira demo")
            finally:
                reg.close()
        return version

    def wait_served(self, version: int, timeout: float = 60.0, *, in_a_row: int = 8) -> None:
        """Until ``in_a_row`` answers in a row say the version is served: each answer comes from one replica
        (HAProxy spreads them), and traffic must not start while another replica is still loading it."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.gateway}/v1/models", timeout=5)
                served = response.json().get("models", {}).get(self.model, {}) if response.status_code == 200 else {}
                seen = seen + 1 if served.get("version") == version else 0
                if seen >= in_a_row:
                    return
            except httpx.HTTPError:
                seen = 0
            time.sleep(0.1 if seen else 0.5)
        raise DemoFailed(f"the gateway did not serve {self.model} v{version} within {timeout:.0f}s")

    def traffic_rows(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Rows of the label source's last days, with their point-in-time features (for inline requests),
        and the production version's signature (what a request carries)."""
        from feature_repo.offline import training_frame
        from feature_repo.store import open_store
        from flows.features import read_labels

        reg = self.registry()
        try:
            signature = reg.get_by_alias(self.model, "production").signature
        finally:
            reg.close()
        ts = self.spec.labels.timestamp_column
        keys = [k["name"] for k in signature.get("entity_keys", [])]
        labels = read_labels(self.spec.labels, self.project)
        labels = labels[labels[ts] >= labels[ts].max() - timedelta(days=TRAFFIC_DAYS)]
        # Each entity's latest label: the online store holds the latest features, so these are the requests
        # whose served features match the moment the label describes.
        labels = labels.sort_values(ts).groupby(keys, as_index=False).tail(1)
        sample = labels.sample(n=min(self.requests_per_phase, len(labels)), random_state=self.rng.randint(0, 9999))
        frame = training_frame(open_store(self.project), self.spec.feature_service, sample.reset_index(drop=True),
                               timestamp=ts)
        return frame, signature

    def send_traffic(self, frame: pd.DataFrame, signature: dict[str, Any], *, concurrency: int = 8) -> LoadStats:
        """One request per row, alternating entity-key and inline requests; then feedback for each."""
        stats = LoadStats()
        feedback: list[dict[str, Any]] = []
        label = self.spec.label

        async def one(client: httpx.AsyncClient, i: int, row: pd.Series) -> None:
            data = await _predict(client, self.model, _request_body(row, signature, by_entity=i % 2 == 0), stats)
            if data is not None:
                feedback.append({"request_id": data["request_id"], "label": _plain(row[label])})

        async def main() -> None:
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            async with httpx.AsyncClient(base_url=self.gateway, timeout=30, limits=limits) as client:
                queue = list(frame.iterrows())
                semaphore = asyncio.Semaphore(concurrency)

                async def guarded(i: int, row: pd.Series) -> None:
                    async with semaphore:
                        await one(client, i, row)

                await asyncio.gather(*(guarded(i, row) for i, row in queue))
                for start in range(0, len(feedback), 500):
                    response = await client.post(f"/v1/models/{self.model}/feedback",
                                                 json={"items": feedback[start:start + 500]})
                    response.raise_for_status()

        asyncio.run(main())
        return stats

    def monitor(self, start: datetime, *, trigger: str) -> dict[str, Any]:
        from flows.monitor import monitor

        time.sleep(self.flush_wait_s)  # the gateway writes its log in micro-batches
        # No cool-down here: the demo may run twice within minutes, and each run must show the trigger.
        # A deployed monitor keeps the spec's cool-down.
        result = monitor(model_name=self.model, start=start, end=datetime.now(UTC) + timedelta(seconds=1),
                         trigger=trigger, policy={"cooldown_minutes": 0},  # type: ignore[arg-type]
                         project=str(self.project.root))
        reg = self.registry()
        try:
            saved = reg.get_report(result["report_id"])
        finally:
            reg.close()
        if saved is not None:
            result = {**result, "drift": (saved.drift or {}).get("features", {}), "performance": saved.performance}
        self.reports.append(result)
        return result

    flush_wait_s = 7.0

    def traffic_then_monitor(self, *, trigger: str) -> tuple[LoadStats, dict[str, Any]]:
        """Labelled traffic on the current 'recent' batch, then a monitor run over exactly that window."""
        start = datetime.now(UTC) - timedelta(seconds=1)
        frame, signature = self.traffic_rows()
        stats = self.send_traffic(frame, signature)
        if stats.failed:
            raise DemoFailed(f"{stats.failed} of {stats.sent} requests failed: {stats.errors}")
        return stats, self.monitor(start, trigger=trigger)

    def steady_phase(self) -> None:
        with self.stage("traffic on the baseline + feedback, then monitor") as notes:
            stats, report = self.traffic_then_monitor(trigger="off")
            notes.append(f"{stats.sent} requests, p50 {stats.percentile(0.5):.1f} ms; monitor: "
                         f"{report.get('decision')} (drift share {_share(report)})")

    def drift_phase(self) -> tuple[dict[str, Any], float]:
        with self.stage("drift: the scenario changes the world, drifted traffic, monitor") as notes:
            notes.append(self.write_and_materialize("drift"))
            _, report = self.traffic_then_monitor(trigger="event")
            decided_at = time.time()
            notes.append(f"monitor: {report.get('decision')} (drift share {_share(report)}; "
                         f"{report.get('reason', '')[:120]})")
        if report.get("decision") != "retrain":
            raise DemoFailed(f"the monitor did not ask for retraining on drifted traffic: {report}")
        return report, decided_at

    @contextmanager
    def background_load(self, stats: LoadStats, *, clients: int = 8) -> Iterator[None]:
        """Clients sending requests (no labels) in a thread of their own until the block ends: what a swap
        must not disturb. Every answer and failure lands in ``stats``."""
        import threading

        frame, signature = self.traffic_rows()
        rows = [r for _, r in frame.iterrows()]
        stop = threading.Event()

        async def client_loop(client: httpx.AsyncClient, worker: int) -> None:
            i = worker
            while not stop.is_set():
                await _predict(client, self.model, _request_body(rows[i % len(rows)], signature,
                                                                 by_entity=i % 2 == 0), stats)
                i += clients
                await asyncio.sleep(0.02)

        async def main() -> None:
            async with httpx.AsyncClient(base_url=self.gateway, timeout=30) as client:
                await asyncio.gather(*(client_loop(client, w) for w in range(clients)))

        thread = threading.Thread(target=lambda: asyncio.run(main()), name="demo-load", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=60)

    def wait_for_alias(self, alias: str, other_than: int, timeout: float) -> tuple[int | None, float | None]:
        """(version, when) once ``alias`` points at a version other than ``other_than``, or (None, None)."""
        reg = self.registry()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                current = reg.resolve_alias(self.model, alias)
                if current is not None and current != other_than:
                    return current, time.time()
                time.sleep(0.25)
            return None, None
        finally:
            reg.close()

    def retrain_to_canary(self, v1: int, stats: LoadStats) -> int:
        """The retrain deployment, started by the monitor's event on the worker, registers v2; it wins on the
        holdout and, as the spec's ``promotion.rollout: canary`` says, goes out as the canary."""
        with self.stage("retrain: Prefect event -> retrain deployment on the worker -> v2 out as the canary") as notes:
            v2, started_at = self.wait_for_alias("canary", v1, self.retrain_timeout_s)
            if v2 is None:
                raise DemoFailed(f"no canary within {self.retrain_timeout_s:.0f}s of the retrain event; see the "
                                 f"worker log under {self.settings.home / 'logs'}")
            self.swap.update(from_version=v1, to_version=v2, canary_started_at=started_at)
            reg = self.registry()
            try:
                share = reg.canary_share(self.model)
            finally:
                reg.close()
            notes.append(f"v{v2} is the canary with {share:.0%} of requests; {stats.sent} requests so far, "
                         f"{stats.failed} failed")
        return int(v2)

    canary_rounds = 8
    """Rounds of labelled traffic the canary stage sends at most before it gives up on a verdict."""

    def canary_phase(self, v1: int, v2: int, stats: LoadStats) -> None:
        """Labelled traffic on both versions; the canary flow looks after each round, as its schedule would,
        until its verdict concludes the canary; then the gateway answers with v2 alone."""
        from flows.canary import canary

        verdicts: list[dict[str, Any]] = []
        with self.stage("canary: v2 on a share of live traffic, judged by the canary flow, promoted") as notes:
            for _ in range(self.canary_rounds):
                frame, signature = self.traffic_rows()
                sent = self.send_traffic(frame, signature)
                if sent.failed:
                    raise DemoFailed(f"{sent.failed} of {sent.sent} labelled requests failed: {sent.errors}")
                time.sleep(self.flush_wait_s)  # the gateway writes its log in micro-batches
                verdict = canary(model_name=self.model, project=str(self.project.root))
                verdicts.append(verdict)
                if verdict.get("action") != "continue":  # promote, rollback, or none: a deployment run concluded it
                    break
            promoted_v, promoted_at = self.wait_for_alias("production", v1, 30.0)
            if promoted_v != v2:
                last = verdicts[-1] if verdicts else {}
                raise DemoFailed(f"the canary flow did not promote v{v2} after {len(verdicts)} looks: "
                                 f"{last.get('action')}: {last.get('reason')}")
            settled = self.settle(v1, stats)
            # The verdict that concluded it: the demo's own look, or the canary deployment's run (started by
            # the canary-started event, or its schedule) if that one looked first.
            reg = self.registry()
            try:
                final = next(r for r in reg.reports(self.model, kind="canary", limit=50, version=v2)
                             if r.decision == "promote")
                # the moment of the verdict's transaction, not when this process noticed it
                moved = next(e for e in reversed(reg.history(self.model, alias="production", limit=20))
                             if e.action == "promote" and e.to_version == v2)
                promoted_at = moved.created_at.replace(tzinfo=moved.created_at.tzinfo or UTC).timestamp()
            finally:
                reg.close()
            self.swap.update(canary_looks=len(verdicts), verdict=final.decision, verdict_reason=final.reason,
                             labelled=final.performance.get("labelled"), verdict_report_id=final.id,
                             verdict_flow_run_id=final.flow_run_id, promoted_at=promoted_at,
                             promotion_to_last_v1_response_s=round(settled - promoted_at, 2) if settled else None)
            notes.append(f"{len(verdicts)} look(s) here; report {final.id}: {final.decision}: {final.reason[:160]}")

    def settle(self, v1: int, stats: LoadStats, *, quiet_s: float = 3.0, timeout: float = 30.0) -> float | None:
        """When v1 answered last, once the background clients have seen only newer versions for ``quiet_s``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = stats.last_seen.get(v1)
            if last is not None and time.time() - last > quiet_s:
                return last
            time.sleep(0.25)
        return None

    def retrain_and_canary_under_load(self, v1: int, decided_at: float) -> int:
        """Keep clients busy from the retrain decision until v2, promoted by the canary's verdict, answers alone."""
        stats = LoadStats()
        with self.background_load(stats):
            v2 = self.retrain_to_canary(v1, stats)
            self.canary_phase(v1, v2, stats)
        self.swap.update(requests=stats.sent, failed=stats.failed, errors=stats.errors,
                         p50_ms=round(stats.percentile(0.5), 1), p99_ms=round(stats.percentile(0.99), 1),
                         decision_to_canary_s=round(self.swap["canary_started_at"] - decided_at, 1),
                         responses_by_version=stats.versions)
        if stats.failed:
            raise DemoFailed(f"{stats.failed} requests failed across the canary and the swap: {stats.errors}")
        return v2

    # -- the run ------------------------------------------------------------------------------------------

    def run(self) -> DemoSummary:
        from esteira.stack import stop_stack, use_stack

        ok = False
        try:
            self.start_stack()
            with use_stack(self.settings):
                self.prepare_data()
                v1 = self.train_v1()
                with self.stage("gateway serves the baseline") as notes:
                    self.wait_served(v1)
                    notes.append(f"{self.gateway}/v1/models/{self.model}/predict answers with v{v1}")
                self.steady_phase()
                _, decided_at = self.drift_phase()
                self.retrain_and_canary_under_load(v1, decided_at)
            ok = True
        except Exception:
            self.console.print_exception(max_frames=8)
            raise
        finally:
            summary = self.summary(ok)
            _disconnect_ray()  # before the cluster goes: a connected driver would abort on losing it
            if not self.keep_up:
                with self.stage("stack down"):
                    stop_stack(self.settings)
        return summary

    def summary(self, ok: bool) -> DemoSummary:
        versions: list[dict[str, Any]] = []
        try:
            reg = self.registry()
            aliases = reg.aliases(self.model)
            metric = self.spec.metric
            for mv in reversed(reg.list_versions(self.model)):
                versions.append({"version": mv.version, "family": mv.params.get("family"),
                                 "aliases": [a for a, v in aliases.items() if v == mv.version],
                                 "holdout_metric": mv.metrics.get(f"holdout_{metric}"),
                                 "production_holdout_metric": mv.metrics.get(f"production_holdout_{metric}"),
                                 "flow_run_id": mv.flow_run_id})
            reg.close()
        except Exception as exc:  # noqa: BLE001 - a summary must not hide the real failure
            versions.append({"error": str(exc)})
        summary = DemoSummary(ok=ok, stages=self.stages, versions=versions, reports=self.reports, swap=self.swap,
                              urls=self.urls)
        self.last_summary = summary
        self.print_summary(summary)
        return summary

    def print_summary(self, summary: DemoSummary) -> None:
        table = Table(title="Stages")
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for name, seconds, _ in summary.stages:
            table.add_row(name, f"{seconds:.1f}")
        table.add_row("[bold]total", f"[bold]{sum(s for _, s, _ in summary.stages):.1f}")
        self.console.print(table)
        metric = self.spec.metric
        versions = Table(title=f"Versions of {self.model}")
        for column in ("version", "family", "aliases", f"holdout {metric}", f"production's {metric}, same holdout"):
            versions.add_column(column)
        for v in summary.versions:
            if "error" in v:
                continue
            versions.add_row(str(v["version"]), str(v["family"]), ", ".join(v["aliases"]) or "-",
                             _fmt(v["holdout_metric"]), _fmt(v["production_holdout_metric"]))
        self.console.print(versions)
        for report in summary.reports:
            drift = report.get("drift") or {}
            table = Table(title=f"Monitor report #{report.get('report_id')}: {report.get('decision')} "
                                f"(drift share {_share(report)})")
            for column in ("feature", "algorithm", "statistic", "p-value", "drifted"):
                table.add_column(column)
            for name, score in sorted(drift.items()):
                if isinstance(score, dict):
                    table.add_row(name, str(score.get("algorithm")), _fmt(score.get("statistic")),
                                  _fmt(score.get("pvalue")), "yes" if score.get("drifted") else "")
            self.console.print(table)
            if report.get("triggered_run"):
                self.console.print(f"  triggered: {report['triggered_run']}")
        if summary.swap:
            self.console.print(f"Hot swap: {summary.swap}")
        for name, url in summary.urls.items():
            self.console.print(f"{name}: {url}")
        self.console.print("[bold green]demo finished[/]" if summary.ok else "[bold red]demo failed[/]")


def _request_body(row: pd.Series, signature: dict[str, Any], *, by_entity: bool) -> dict[str, Any]:
    """An entity-key request (features from the online store) or the same row's inputs inline."""
    if by_entity:
        request = [f["name"] for f in signature.get("request_fields", [])] + signature.get("request_features", [])
        body: dict[str, Any] = {"entities": {k["name"]: _plain(row[k["name"]])
                                             for k in signature.get("entity_keys", [])}}
        if request:
            body["request_data"] = {name: _plain(row[name]) for name in request}
        return body
    return {"inputs": {c["name"]: _plain(row[c["name"]]) for c in signature.get("inputs", [])}}


async def _predict(client: httpx.AsyncClient, model: str, body: dict[str, Any], stats: LoadStats
                   ) -> dict[str, Any] | None:
    """One prediction, recorded in ``stats``; the response body when it succeeded."""
    started = time.perf_counter()
    try:
        response = await client.post(f"/v1/models/{model}/predict", json=body)
    except httpx.HTTPError as exc:
        stats.record(False, 0.0, None, f"{type(exc).__name__}: {exc}")
        return None
    ok = response.status_code == 200
    data = response.json() if ok else None
    stats.record(ok, (time.perf_counter() - started) * 1000, data.get("version") if data else None,
                 "" if ok else f"{response.status_code} {response.text}")
    return data


def _disconnect_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _rows(result: dict[str, Any]) -> Any:
    return result.get("rows_written", result.get("rows", "?"))


def _share(report: dict[str, Any]) -> str:
    share = report.get("drift_share")
    return f"{share:.2f}" if isinstance(share, (int, float)) else "-"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"
