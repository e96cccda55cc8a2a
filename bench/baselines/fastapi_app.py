"""The practical floor: a bare FastAPI + uvicorn app serving the registry's artifact, same JSON as the gateway.

What it does per request, and nothing more: parse the JSON body, take the signature's features in
order into a ``float64`` array (no pandas: a one-row DataFrame doubles the model's own cost), call
``predict_proba`` inline on the event loop (0.6 ms; a thread-pool hop costs more than it saves for
one row), answer the gateway's response shape. One uvicorn worker with uvloop and httptools, access
log off. No auth, no validation beyond a missing feature, no inference log, no metrics.

OpenMP: ``OMP_NUM_THREADS`` is set to 1 before scikit-learn is imported unless the environment sets
it (``--omp-threads`` overrides). HistGradientBoosting otherwise spreads each one-row call over every
core, which on 2 cores fights the other requests and the load generator (measured on this 2-core machine: 313 -> 583
requests/s at concurrency 32 with arrays). Ray Serve gives each replica ``OMP_NUM_THREADS=1`` too.

Entity keys (``--feature-service churn_v1``): the route takes the gateway's entity-key body
(``{"entities": {...}, "request_data": {...}}``), reads the feature service from the Feast online store
of the project ``$ESTEIRA_PROJECT`` (its ``feature_store.yaml`` with esteira's overrides, the stores the
gateway reads) with Feast's own ``get_online_features`` (inline, as a bare app would), builds the one-row
DataFrame the pipeline was fitted on and scores it. No 404 for an unknown entity, no checks.

    uv run python bench/baselines/fastapi_app.py --artifact PATH --name bench-hgb --version 1 --port 8010
"""

import argparse
import json
import os
import sys
import uuid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", required=True, help="the skops file the registry stored")
    parser.add_argument("--name", default="bench-hgb")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--features", default=",".join(f"f{i}" for i in range(20)),
                        help="comma-separated signature order")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--omp-threads", type=int, default=None, help="default: $OMP_NUM_THREADS or 1")
    parser.add_argument("--input", choices=("numpy", "pandas"), default="numpy",
                        help="what predict_proba gets; pandas shows what a DataFrame per request costs")
    parser.add_argument("--feature-service", default=None,
                        help="answer entity-key bodies by reading this Feast feature service (implies pandas input)")
    return parser.parse_args(argv)


def build_app(args: argparse.Namespace):
    import warnings

    import numpy as np
    import pandas as pd
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from registry.flavors.sklearn import SklearnFlavor

    with open(args.artifact, "rb") as fh:
        model = SklearnFlavor().load_model(fh.read())  # the same allow-listed skops load as the registry
    # Fitted on named columns, fed an array in the same order: same numbers, no per-call name check.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    features = args.features.split(",")
    classes = model.classes_.tolist()
    name, version = args.name, args.version
    use_pandas = args.input == "pandas" or args.feature_service is not None
    lookup = _feast_lookup(args.feature_service) if args.feature_service else None
    if lookup is None:
        model.predict_proba(np.zeros((1, len(features))))  # warm-up

    try:
        import orjson

        dumps, loads = orjson.dumps, orjson.loads
    except ImportError:  # pragma: no cover
        dumps, loads = (lambda o: json.dumps(o).encode()), json.loads

    app = FastAPI(title="bare floor", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/models/{model_name}/predict")
    async def predict(model_name: str, request: Request) -> Response:
        if model_name != name:
            return JSONResponse({"error": {"code": "model_not_found", "message": model_name}}, status_code=404)
        try:
            body = loads(await request.body())
            rows = lookup(body["entities"], body.get("request_data")) if lookup else body["inputs"]
            if use_pandas:
                X = pd.DataFrame({f: [row[f] for row in rows] for f in features})
            else:
                X = np.array([[row[f] for f in features] for row in rows], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": {"code": "invalid_input", "message": str(exc)}}, status_code=422)
        proba = model.predict_proba(X)
        labels = proba.argmax(axis=1)
        preds = [{"label": classes[k], "probability": p} for k, p in zip(labels.tolist(), proba[:, 1].tolist(),
                                                                          strict=True)]
        return Response(dumps({"model": name, "version": version, "request_id": uuid.uuid4().hex,
                               "predictions": preds}),
                        media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _feast_lookup(feature_service: str):
    """Entity rows in, feature rows out, through Feast's public API on the current project's stores."""
    from feast import FeatureStore

    from core.project import current_project
    from feature_repo.config import repo_config

    project = current_project()  # ESTEIRA_PROJECT
    store = FeatureStore(repo_path=str(project.root), config=repo_config(project))
    service = store.get_feature_service(feature_service)

    def lookup(entities: dict | list, request_data: dict | None) -> list[dict]:
        entities = [entities] if isinstance(entities, dict) else entities
        rows = [{**entity, **(request_data or {})} for entity in entities]
        result = store.get_online_features(features=service, entity_rows=rows).to_dict()
        return [{name: values[i] for name, values in result.items()} for i in range(len(rows))]

    return lookup


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.omp_threads or os.environ.get("OMP_NUM_THREADS") or 1)
    import uvicorn

    app = build_app(args)
    print(f"floor: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} input={args.input}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
