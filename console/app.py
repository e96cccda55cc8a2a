"""The web console: the registry, the monitor's history and canary verdicts as pages, and promote/rollback
behind the admin token.

Server-rendered HTML (Jinja2) with inline SVG charts (:mod:`console.charts`) and one stylesheet served by the
package: a page is one response, works with no internet access and needs no build step. Reads go through
:class:`registry.Registry`; the only writes are the two actions, through the same ``Registry.promote`` and
``Registry.rollback`` calls as the CLI, each landing in the audit log with its actor.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from console import charts, pages
from console.links import Links
from core.settings import Settings, get_settings, redact_urls
from registry import Registry
from registry.errors import InvalidName, NotFound, RegistryError, RegistryUnavailable
from registry.names import check_alias

log = logging.getLogger("esteira.console")
STATIC = Path(__file__).parent / "static"
ACTOR_PREFIX = "console:"


class Forbidden(RegistryError):
    def __init__(self, message: str, status: int, field: str) -> None:
        super().__init__(message)
        self.status, self.field = status, field


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("console"), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else v)
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"
    env.filters["short"] = lambda s: (s[:12] + "…") if isinstance(s, str) and len(s) > 13 else (s or "-")
    env.filters["pct"] = lambda v: f"{v:.0%}" if isinstance(v, (int, float)) else "-"
    env.filters["percent"] = lambda v: f"{v * 100:.3g}%" if isinstance(v, (int, float)) else "-"
    env.filters["signed"] = lambda v: f"{v:+.4g}" if isinstance(v, (int, float)) else "-"
    env.filters["count"] = lambda v: f"{v:,}" if isinstance(v, int) else "-"
    env.filters["picture"] = charts.picture
    env.globals["urlencode"] = urlencode
    return env


class Console:
    """The console's state: settings, the registry (opened on first use, so a console started while the
    database is down comes up and says so), the links out and the templates."""

    def __init__(self, settings: Settings | None = None, registry: Registry | None = None) -> None:
        self.settings = settings or get_settings()
        self._registry = registry
        self._lock = threading.Lock()
        self.links = Links.from_settings(self.settings)
        self.templates = _environment()
        token = self.settings.gateway_admin_token
        self.admin_token = token.get_secret_value() if token else None

    @property
    def registry(self) -> Registry:
        with self._lock:
            if self._registry is None:  # migrated as the CLI does; a database that is down raises, and is
                # tried again on the next page
                self._registry = Registry(self.settings.resolved_database_url, self.settings.resolved_artifact_root)
            return self._registry

    @property
    def database(self) -> str:
        return redact_urls(self.settings.resolved_database_url)

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            request=request, links=self.links, database=self.database, admin_token_set=bool(self.admin_token),
            path=request.url.path, **context)
        return HTMLResponse(html, status_code=status)

    def check_action(self, request: Request, token: str) -> None:
        """Refuse an action sent from another site (a page elsewhere posting to this console) or without the
        admin token when one is set."""
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        if site == "cross-site" or (origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc):
            raise Forbidden("actions are only accepted from the console's own pages", 403, "origin")
        if self.admin_token is None:
            return
        if not token.strip():
            raise Forbidden("this action needs the admin token (ESTEIRA_GATEWAY_ADMIN_TOKEN)", 401, "token")
        if not hmac.compare_digest(token.strip().encode(), self.admin_token.encode()):
            raise Forbidden("invalid admin token: nothing was changed", 401, "token")


def _int(value: str | None, field: str, default: int | None = None, *, what: str = "a number") -> int:
    if value is None or value == "":
        if default is None:
            raise pages.BadRequest(f"{field} is required", field=field)
        return default
    if not (value.isascii() and value.isdigit()):
        raise pages.BadRequest(f"{field} must be {what}, not {value!r}", field=field)
    return int(value)


def _version(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise NotFound(f"version {text!r} of model {name!r} not found: versions are numbers")
    return int(text)


def create_app(console: Console | None = None) -> FastAPI:
    """The console's routes over ``console`` (default: one from the process settings)."""
    state = console or Console()
    app = FastAPI(title="esteira console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def server_timing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Each response says how long the server took (``Server-Timing: app;dur=<ms>``): what the benchmark
        reads, and what a browser's network panel shows."""
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    def error_page(request: Request, status: int, title: str, message: str, field: str | None = None) -> HTMLResponse:
        return state.render(request, "error.html", status=status, title=title, message=message, field=field)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> HTMLResponse:
        return error_page(request, 404, "Not found", str(exc))

    @app.exception_handler(RegistryUnavailable)
    async def registry_down(request: Request, exc: RegistryUnavailable) -> HTMLResponse:
        log.warning("registry unavailable: %s", exc)
        return state.render(request, "registry_down.html", status=503, message=redact_urls(str(exc)))

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> HTMLResponse:
        return error_page(request, exc.status, "Not allowed", str(exc), exc.field)

    @app.exception_handler(RegistryError)
    async def bad_request(request: Request, exc: RegistryError) -> HTMLResponse:
        return error_page(request, 400, "Bad request", str(exc), getattr(exc, "field", None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_page(request, 404, "Not found", f"no page at {request.url.path}")
        return error_page(request, exc.status_code, "Error", str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> HTMLResponse:
        log.exception("console page %s failed", request.url.path)
        return error_page(request, 500, "Something went wrong",
                          f"the console could not build this page ({type(exc).__name__}); its log has the details")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/", response_class=HTMLResponse)
    def models_index(request: Request, q: str = "") -> HTMLResponse:
        rows = pages.model_index(state.registry, q, state.settings.gateway_heartbeat_s)
        return state.render(request, "models.html", rows=rows, q=q)

    @app.get("/models/{name}", response_class=HTMLResponse)
    def model_page(request: Request, name: str, page: str | None = None, filter: str = "",
                   event: str | None = None) -> HTMLResponse:
        reg = state.registry
        model = reg.get_model(name)
        assert model is not None
        filters = [f for f in filter.split(" and ") if f.strip()] if filter.strip() else []
        versions, pager = pages.versions_page(reg, name, _int(page, "page", 1), filters)
        notice = None
        if event:
            found = [e for e in reg.history(name, limit=20) if str(e.id) == event]
            notice = found[0] if found else None
        aliases = reg.alias_rows(name)
        canary_reports = pages.canary_reports(reg, name)
        return state.render(
            request, "model.html", model=model, aliases=aliases, versions=versions, pager=pager,
            by_version=pages.aliases_by_version(reg, name), filter=filter, headline=pages.headline_metric,
            runs=reg.list_runs(name, limit=10), report=reg.latest_report(name), notice=notice,
            replicas=pages.replicas_of(reg, name, state.settings.gateway_heartbeat_s),
            canary=pages.canary_box(reg, name, aliases, canary_reports), canary_reports=canary_reports)

    @app.get("/models/{name}/versions/{version}", response_class=HTMLResponse)
    def version_page(request: Request, name: str, version: str) -> HTMLResponse:
        reg = state.registry
        mv = reg.get_version(name, _version(name, version))
        run = None
        if mv.training_run_id is not None:
            try:
                run = reg.get_run(mv.training_run_id)
            except NotFound:
                run = None
        return state.render(
            request, "version.html", mv=mv, run=run, aliases=pages.aliases_by_version(reg, name).get(mv.version, []),
            reports=reg.reports(name, version=mv.version, limit=20), events=reg.history(name, version=mv.version),
            rows=pages.training_rows(mv), headline=pages.headline_metric(mv))

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str, sort: str = "cv", order: str = "desc",
                 page: str | None = None) -> HTMLResponse:
        reg = state.registry
        if not (run_id.isascii() and run_id.isdigit()):
            raise NotFound(f"training run {run_id!r} not found: runs are numbers")
        run = reg.get_run(int(run_id))
        ranked, pager, failed = pages.leaderboard(reg, run.id, sort, order, _int(page, "page", 1))  # type: ignore[arg-type]
        best = None
        if run.best_trial_id is not None:
            try:
                best = reg.get_trial(run.best_trial_id)
            except NotFound:
                best = None
        version = None
        if run.registered_version is not None:
            try:
                version = reg.get_version(run.model_name, run.registered_version)
            except NotFound:
                version = None
        return state.render(request, "run.html", run=run, ranked=ranked, pager=pager, best=best, version=version,
                            sort=sort, order=order, n_trials=pager.total, failed=failed)

    @app.get("/models/{name}/monitoring", response_class=HTMLResponse)
    def monitoring_page(request: Request, name: str, before: str | None = None) -> HTMLResponse:
        reg = state.registry
        reg.get_model(name)
        series = reg.report_series(name)
        drift, performance, metric, baseline = pages.series_points(series, "/reports/{id}")
        before_id = _int(before, "before", 0) or None
        reports = reg.reports(name, limit=pages.REPORTS_PER_PAGE, before_id=before_id)
        drift_chart = charts.time_series(drift, title="Drift share (drifted features / scored features)",
                                         y_label="drift share", y_floor=0.0, y_ceiling=1.0, chart_id="drift-chart")
        perf_chart = charts.time_series(performance, title=f"Performance on labelled feedback ({metric or 'metric'})",
                                        y_label=metric or "metric", reference=baseline,
                                        reference_label="holdout", chart_id="performance-chart")
        decisions: dict[str, int] = {}
        for row in series:
            decisions[row["decision"]] = decisions.get(row["decision"], 0) + 1
        return state.render(request, "monitoring.html", name=name, reports=reports, drift_chart=drift_chart,
                            perf_chart=perf_chart, total=len(series), decisions=decisions,
                            next_before=reports[-1].id if len(reports) == pages.REPORTS_PER_PAGE else None)

    @app.get("/reports/{report_id}", response_class=HTMLResponse)
    def report_page(request: Request, report_id: str) -> HTMLResponse:
        if not (report_id.isascii() and report_id.isdigit()):
            raise NotFound(f"monitoring report {report_id!r} not found: reports are numbers")
        report = state.registry.get_report(int(report_id))
        if report.kind == "canary":  # a verdict on a canary: its evidence, no drift
            return state.render(request, "canary_report.html", report=report, **pages.canary_view(report))
        features = (report.drift or {}).get("features") or {}
        return state.render(request, "report.html", report=report, features=features,
                            unscored=(report.drift or {}).get("unscored") or [],
                            unscored_pictures=(report.drift or {}).get("unscored_pictures") or {})

    @app.get("/models/{name}/compare", response_class=HTMLResponse)
    def compare_page(request: Request, name: str) -> HTMLResponse:
        reg = state.registry
        reg.get_model(name)
        numbers = pages.parse_versions(request.query_params.getlist("v"))
        versions = [reg.get_version(name, n) for n in numbers]
        return state.render(request, "compare.html", name=name, versions=versions,
                            sections=pages.compare_rows(versions))

    @app.get("/models/{name}/audit", response_class=HTMLResponse)
    def audit_page(request: Request, name: str, before: str | None = None) -> HTMLResponse:
        before_id = _int(before, "before", 0) or None
        events = state.registry.history(name, limit=pages.EVENTS_PER_PAGE, before_id=before_id)[::-1]
        return state.render(request, "audit.html", name=name, events=events,
                            next_before=events[-1].id if len(events) == pages.EVENTS_PER_PAGE else None)

    async def _form(request: Request) -> dict[str, str]:
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def _actor_and_reason(form: dict[str, str]) -> tuple[str, str]:
        actor = form.get("actor", "").strip()
        reason = form.get("reason", "").strip()
        if not actor:
            raise pages.BadRequest("say who you are (actor): the audit log records it", field="actor")
        if not reason:
            raise pages.BadRequest("give a reason: the audit log records it", field="reason")
        return ACTOR_PREFIX + actor[:200], reason[:4000]

    def _alias(form: dict[str, str]) -> str:
        alias = form.get("alias", "").strip() or "production"
        try:
            return check_alias(alias)
        except InvalidName as exc:
            raise pages.BadRequest(str(exc), field="alias") from None

    @app.post("/models/{name}/promote")
    async def promote(request: Request, name: str) -> Response:
        form = await _form(request)
        state.check_action(request, form.get("token", ""))
        version = _int(form.get("version"), "version", what="a version number")
        alias = _alias(form)
        actor, reason = _actor_and_reason(form)
        event = state.registry.promote(name, version, alias=alias, reason=reason, actor=actor,
                                       details={"via": "console"})
        return RedirectResponse(f"/models/{name}?event={event.id}", status_code=303)

    @app.post("/models/{name}/rollback")
    async def rollback(request: Request, name: str) -> Response:
        form = await _form(request)
        state.check_action(request, form.get("token", ""))
        alias = _alias(form)
        actor, reason = _actor_and_reason(form)
        event = state.registry.rollback(name, alias=alias, reason=reason, actor=actor)
        return RedirectResponse(f"/models/{name}?event={event.id}", status_code=303)

    return app
