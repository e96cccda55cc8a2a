"""The batch half of the loop as one flow: (generate) -> materialize -> train -> batch score.

Each stage is the same flow a deployment runs on its own, called here as a subflow, so the Prefect UI
shows one pipeline run with the materialize, train and batch-score runs nested under it. The online
half (gateway, traffic, monitoring, drift-triggered retraining) is what ``esteira demo`` adds.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.batch_score import batch_score_flow
from flows.materialize import materialize_flow
from flows.train import train_flow


@flow(name="pipeline", log_prints=True)
def pipeline_flow(generate: bool = False, batch: str = "history", drift: bool = False, n_customers: int = 5_000,
                  spec: str = "churn", score: bool = True, parallel: bool = True) -> dict[str, Any]:
    """Materialize features (generating an example batch first if asked), train the spec's model, and
    score the label source with whatever is in production afterwards."""
    logger = get_run_logger()
    materialized = materialize_flow(generate=generate, batch=batch, drift=drift, n_customers=n_customers)
    trained = train_flow(spec=spec, parallel=parallel)
    logger.info("trained %s v%s -> %s (%s)", trained["model_name"], trained["version"], trained["alias"],
                trained["reason"])
    result: dict[str, Any] = {"materialize": materialized, "train": trained}
    if score:
        result["batch_score"] = batch_score_flow(model=f"{trained['model_name']}@production")
    return result
