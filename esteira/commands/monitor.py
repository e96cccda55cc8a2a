"""``esteira monitor``: judge a model's traffic (or a batch) against its reference, decide, act."""

from __future__ import annotations

from typing import Annotated

import typer

from esteira.commands.common import console, open_registry, user_errors


def monitor_command(
    model: Annotated[str | None, typer.Argument(help="Model name (default: every model of the project with a "
                                                     "production version).")] = None,
    batch: Annotated[str | None, typer.Option(
        "--batch", help="Judge this parquet/CSV (path relative to the project, or a URI) instead of gateway "
        "traffic: entity rows with the spec's timestamp column (features are looked up as of each row's time), "
        "or rows that already hold every model input; the label column, when present, judges performance."
    )] = None,
    start: Annotated[str | None, typer.Option(help="Window start: ISO datetime or relative (-2h).")] = None,
    end: Annotated[str | None, typer.Option(help="Window end: ISO datetime or relative. Default: now.")] = None,
    trigger: Annotated[str | None, typer.Option(help="auto | event | direct | off")] = None,
) -> None:
    """Compare traffic (or a batch) with the production model's reference profile; decide; start retraining."""
    from core.project import current_project
    from flows.monitor import run_monitor
    from flows.spec import models_with_alias, parse_time

    with user_errors(), open_registry() as registry:
        if trigger not in (None, "auto", "event", "direct", "off"):
            raise ValueError(f"--trigger must be auto, event, direct or off, not {trigger!r}")
        names = [model] if model else models_with_alias(registry, current_project())
        if not names:
            raise ValueError("no model of this project has a production version yet")
        outcomes = {name: run_monitor(name, registry=registry, batch_uri=batch, trigger=trigger,  # type: ignore[arg-type]
                                      start=parse_time(start) if start else None,
                                      end=parse_time(end) if end else None).to_dict()
                    for name in names}
    console.print_json(data=outcomes[model] if model else outcomes, default=str)
