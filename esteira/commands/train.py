"""``esteira train ...`` and ``esteira score ...``: the training-side commands.

Each command calls the same plain function a test calls; ``--flow`` runs it as a Prefect flow run instead
(artifacts in the UI; without ``PREFECT_API_URL`` Prefect starts a temporary server). A ``--database-url``
reaches a flow run through the environment, never as a parameter (Prefect stores and shows parameters). A
training run shows what it is doing as it does it: each stage, then a bar of trials done with the best score so
far.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from esteira.commands.common import (
    DbOption,
    FlowOption,
    JsonOption,
    console,
    err_console,
    open_registry,
    print_result,
    registry_in_environment,
    user_errors,
)

train_app = typer.Typer(help="Train, check and reproduce models from the project's model specs.",
                        no_args_is_help=True)
score_app = typer.Typer(help="Score entities in batch with a registered model.", no_args_is_help=True)


class ProgressReporter:
    """A :class:`flows.reporting.Reporter` for a person at a terminal: one line per stage as it starts, then a
    live bar of trials done with the best score so far (a line per tenth of the trials when the output is
    not a terminal, as in CI logs). It writes to stderr: stdout carries the result (``--json`` stays clean).
    """

    def __init__(self) -> None:
        from flows.reporting import LogReporter

        self._log = LogReporter()
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task: Any = None
        self._shown = -1

    def _line(self, text: str) -> None:
        err_console.print(f"[dim]{time.monotonic() - self._started:6.1f}s[/] {text}", highlight=False)

    def stage(self, key: str, description: str) -> None:
        self.close()
        self._line(description)

    def progress(self, key: str, done: int, total: int, description: str = "") -> None:
        if not err_console.is_terminal:
            tenth = done * 10 // max(total, 1)
            if tenth != self._shown:
                self._shown = tenth
                self._line(description or f"{done}/{total}")
            return
        if self._bar is None:
            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=err_console)
            self._bar.start()
            self._task = self._bar.add_task(description, total=total)
        self._bar.update(self._task, completed=done, total=total, description=description or key)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def markdown(self, key: str, text: str, description: str = "") -> None:
        self._log.markdown(key, text, description)

    def table(self, key: str, rows: list[dict[str, Any]], description: str = "") -> None:
        self._log.table(key, rows, description)


@train_app.command("run")
def run(
    spec: Annotated[str, typer.Argument(help="A spec of the project's specs/ (by name) or a YAML path.")],
    sequential: Annotated[bool, typer.Option("--sequential", help="Run trials in this process, not on Ray.")] = False,
    database_url: DbOption = None,
    as_flow: FlowOption = False,
    as_json: JsonOption = False,
) -> None:
    """Train the model a spec describes: features, validation, search on Ray, evaluation, registration."""
    with user_errors():
        if as_flow:
            from flows.train import train_flow

            with registry_in_environment(database_url):
                result = train_flow(spec=spec, parallel=not sequential)
        else:
            from flows.train import train

            reporter = ProgressReporter()
            try:
                with open_registry(database_url) as registry:
                    result = train(spec, registry=registry, parallel=not sequential, actor="cli",
                                   reporter=reporter).to_dict()  # type: ignore[arg-type]
            finally:
                reporter.close()
    print_result(result, as_json, f"{result['model_name']} v{result['version']} -> {result['alias']}")


@train_app.command("check-spec")
def check_spec(spec: Annotated[str, typer.Argument(help="A spec of the project (by name) or a YAML path.")]) -> None:
    """Validate a spec (task, estimators, parameter names, metric) and list the trials it expands to."""
    with user_errors():
        from flows.spec import resolve_spec

        parsed = resolve_spec(spec)
        table = Table(title=f"{parsed.name} ({parsed.task}, {parsed.metric}): {len(parsed.trial_configs())} trials")
        table.add_column("#")
        table.add_column("family")
        table.add_column("params")
        for i, (family, params) in enumerate(parsed.trial_configs()):
            table.add_row(str(i), family, ", ".join(f"{k}={v}" for k, v in params.items()))
    console.print(table)


@train_app.command("reproduce")
def reproduce_cmd(
    ref: Annotated[str, typer.Argument(help="name:version or name@alias")],
    database_url: DbOption = None,
    as_flow: FlowOption = False,
    as_json: JsonOption = False,
) -> None:
    """Retrain a registered version from its lineage; exit 1 unless data, params and metrics match."""
    with user_errors():
        if as_flow:
            from flows.reproduce import reproduce_flow

            with registry_in_environment(database_url):
                result = reproduce_flow(ref=ref)
        else:
            from flows.reproduce import reproduce

            with open_registry(database_url) as registry:
                outcome = reproduce(ref, registry=registry)
            if not as_json:
                console.print(outcome.to_markdown(), highlight=False)
            result = outcome.to_dict()
            if not outcome.matches:
                raise typer.Exit(1)
    if as_json:
        print_result(result, True, "")


@score_app.command("batch")
def score_batch(
    model: Annotated[str, typer.Argument(help="name@alias or name:version")],
    entities: Annotated[str, typer.Option(help="Parquet or CSV of entity rows: a path relative to the project, or "
                                               "a URI. Default: the model spec's label source.")] = "",
    output: Annotated[str | None, typer.Option(help="Parquet path or fsspec URI (default under ESTEIRA_HOME).")] = None,
    mode: Annotated[str, typer.Option(help="offline (point-in-time) or online (latest values).")] = "offline",
    timestamp: Annotated[str, typer.Option(help="Column of the moment to read features as of (offline).")] = "",
    engine: Annotated[str, typer.Option(
        help="local (one process, one parquet file), ray (Ray Data on the configured cluster, a folder of parquet "
             "files) or auto (ray for large inputs).")] = "auto",
    batch_rows: Annotated[int | None, typer.Option(help="Ray engine: entity rows per batch.")] = None,
    actors: Annotated[int | None, typer.Option(
        help="Ray engine: scoring actors (default: one per CPU of the cluster but one).")] = None,
    database_url: DbOption = None,
    as_flow: FlowOption = False,
    as_json: JsonOption = False,
) -> None:
    """Score entities with a registered model; predictions name the model and version."""
    from esteira.commands.common import fail

    if mode not in ("offline", "online"):
        fail(f"--mode must be offline or online, not {mode!r}")
    if engine not in ("auto", "local", "ray"):
        fail(f"--engine must be auto, local or ray, not {engine!r}")
    if as_flow and (batch_rows is not None or actors is not None):
        fail("--batch-rows and --actors apply without --flow (the flow takes the engine's defaults)")
    with user_errors():
        if not entities or not timestamp:
            from flows.spec import resolve_spec
            from registry import ModelRef

            spec = resolve_spec(ModelRef.parse(model).name)
            entities = entities or spec.labels.source
            timestamp = timestamp or spec.labels.timestamp_column
        if as_flow:
            from flows.batch_score import batch_score_flow

            with registry_in_environment(database_url):
                result = batch_score_flow(model=model, entities=entities, output=output, mode=mode,
                                          timestamp=timestamp, engine=engine)
        else:
            from flows.batch_score import DEFAULT_BATCH_ROWS, batch_score

            with open_registry(database_url) as registry:
                result = batch_score(model, entities, output=output, mode=mode,  # type: ignore[arg-type]
                                     timestamp=timestamp, registry=registry, engine=engine,  # type: ignore[arg-type]
                                     batch_rows=batch_rows or DEFAULT_BATCH_ROWS, actors=actors).to_dict()
    print_result(result, as_json, f"{result['model_name']} v{result['version']}: {result['rows']} rows scored "
                                  f"({result.get('engine', 'local')} engine) -> {result['path']}")
