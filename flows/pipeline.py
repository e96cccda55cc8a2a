"""The batch half of the loop as one flow: materialize -> train -> batch score.

Each stage is the same flow a deployment runs on its own, called here as a subflow, so the Prefect UI
shows one pipeline run with the materialize, train and batch-score runs nested under it. The online
half (gateway, traffic, monitoring, drift-triggered retraining) is what ``esteira demo`` adds.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from core.project import current_project
from flows.batch_score import batch_score_flow
from flows.materialize import materialize_flow
from flows.spec import resolve_spec
from flows.train import train_flow


@flow(name="pipeline", log_prints=True)
def pipeline_flow(project: str | None = None, spec: str | None = None, score: bool = True,
                  parallel: bool = True) -> dict[str, Any]:
    """Sync and materialize the project's features, train its specs (or the one named), and score each
    spec's label source with whatever is in production afterwards."""
    logger = get_run_logger()
    resolved = current_project(project)
    root = str(resolved.root)
    result: dict[str, Any] = {"materialize": materialize_flow(project=root)}
    names = [spec] if spec else resolved.spec_names()
    for name in names:
        trained = train_flow(spec=name, project=root, parallel=parallel)
        logger.info("trained %s v%s -> %s (%s)", trained["model_name"], trained["version"], trained["alias"],
                    trained["reason"])
        result[f"train:{name}"] = trained
        if score:
            model_spec = resolve_spec(name, resolved)
            result[f"batch_score:{name}"] = batch_score_flow(
                model=f"{model_spec.name}@production", entities=model_spec.labels.source,
                timestamp=model_spec.labels.timestamp_column, project=root)
    return result
