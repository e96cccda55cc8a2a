"""MLflow as a benchmark peer, kept out of esteira's environment.

MLflow is never a dependency of esteira. This script builds its own virtualenv, ``bench/.venv-mlflow``
(gitignored), with ``uv venv`` + ``uv pip install`` from PyPI, pinning scikit-learn, numpy, pandas,
scipy and skops to the versions esteira's environment runs (read from the running interpreter, which
``uv sync`` installed from ``uv.lock``), so both sides load the same artifact with the same code.

Then it turns the registry's skops artifact into an MLflow model directory (sklearn flavor,
``serialization_format="skops"`` with ``skops_trusted_types``), and starts
``mlflow models serve --env-manager local`` on 127.0.0.1.

Two model directories, because MLflow's two request formats need different signatures:

* ``columns``: the named model with a column signature (``f0..f19`` double). ``dataframe_split`` goes
  through it (per-column casting and schema checks on a DataFrame).
* ``tensor``: the model fitted on a bare array with a tensor signature ``float64 [-1, 20]``.
  ``instances`` (TF-serving style) goes through it; a column-signature model refuses
  ``instances`` lists with 400 SCHEMA_ENFORCEMENT_FAILED.

    uv run python bench/baselines/mlflow_setup.py venv              # build/refresh the venv only
    uv run python bench/baselines/mlflow_setup.py serve --artifact model.skops --kind columns --port 5001
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1]
VENV = BENCH_DIR / ".venv-mlflow"
MLFLOW_SPEC = "mlflow>=3.17,<3.19"
PINNED_FROM_ESTEIRA = ("scikit-learn", "numpy", "pandas", "scipy", "skops")
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.", "scipy.special.")


def venv_python() -> Path:
    return VENV / "bin" / "python"


def pins() -> list[str]:
    """``name==version`` for the libraries that must match esteira's (this interpreter's) environment."""
    return [f"{name}=={metadata.version(name)}" for name in PINNED_FROM_ESTEIRA]


def _venv_matches(wanted: list[str]) -> bool:
    if not venv_python().exists():
        return False
    check = ("import json, sys\nfrom importlib import metadata\nwanted = json.loads(sys.argv[1])\n"
             "ok = all(metadata.version(w.split('==')[0]) == w.split('==')[1] for w in wanted)\n"
             "metadata.version('mlflow')\nsys.exit(0 if ok else 1)")
    return subprocess.run([str(venv_python()), "-c", check, json.dumps(wanted)], capture_output=True).returncode == 0


def ensure_venv(*, quiet: bool = True) -> Path:
    """Create or refresh ``bench/.venv-mlflow``; returns its python. Seconds when uv's cache is warm."""
    wanted = pins()
    if _venv_matches(wanted):
        return venv_python()
    q = ["-q"] if quiet else []
    if not venv_python().exists():
        subprocess.run(["uv", "venv", *q, "--python", "3.11", str(VENV)], check=True)
    subprocess.run(["uv", "pip", "install", *q, "--python", str(venv_python()), MLFLOW_SPEC, *wanted], check=True)
    return venv_python()


def mlflow_version() -> str:
    out = subprocess.run([str(venv_python()), "-c", "import mlflow; print(mlflow.__version__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


# Runs inside the MLflow venv: skops artifact -> MLflow model directory.
_EXPORT = r'''
import json, sys
import numpy as np
import skops.io as sio
import mlflow.sklearn
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Schema, TensorSpec

artifact, out_dir, kind, features, prefixes = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), tuple(json.loads(sys.argv[5]))
data = open(artifact, "rb").read()
needed = sio.get_untrusted_types(data=data)
refused = [t for t in needed if not t.startswith(prefixes)]
if refused:
    sys.exit(f"artifact needs types outside the allow-list: {refused}")
model = sio.loads(data, trusted=needed)
if kind == "columns":
    inputs = Schema([ColSpec("double", name) for name in features])
else:
    inputs = Schema([TensorSpec(np.dtype(np.float64), (-1, len(features)))])
outputs = Schema([TensorSpec(np.dtype(np.int64), (-1,))])
mlflow.sklearn.save_model(model, out_dir, serialization_format="skops", skops_trusted_types=needed,
                          signature=ModelSignature(inputs=inputs, outputs=outputs))
print(json.dumps({"model_dir": out_dir, "kind": kind, "trusted_types": needed}))
'''


def export_model(artifact: str | Path, out_dir: str | Path, *, kind: str, features: list[str]) -> dict:
    """Save the registry's skops artifact as an MLflow sklearn model (``kind``: columns | tensor)."""
    if kind not in ("columns", "tensor"):
        raise ValueError(kind)
    out = subprocess.run([str(venv_python()), "-c", _EXPORT, str(artifact), str(out_dir), kind, json.dumps(features),
                          json.dumps(TRUSTED_PREFIXES)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"MLflow export failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve_command(model_dir: str | Path, port: int) -> list[str]:
    """``mlflow models serve`` on loopback with the venv's own packages (no conda/virtualenv per model)."""
    return [str(VENV / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "-w", "1"]


def serve_env(omp_threads: int = 1) -> dict[str, str]:
    """Same OpenMP setting as the floor and the gateway replicas; silence the per-request feature-name warning.

    ``mlflow models serve`` starts ``uvicorn`` from PATH: the venv's bin goes first, or ``uv run`` would hand
    it esteira's uvicorn (which cannot import mlflow).
    """
    path = os.pathsep.join([str(VENV / "bin"), os.environ.get("PATH", "")])
    return {"OMP_NUM_THREADS": str(omp_threads), "PYTHONWARNINGS": "ignore", "PATH": path,
            "VIRTUAL_ENV": str(VENV), "PYTHONPATH": ""}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("venv", help="build or refresh bench/.venv-mlflow")
    serve = sub.add_parser("serve", help="export an artifact and serve it (foreground)")
    serve.add_argument("--artifact", required=True)
    serve.add_argument("--kind", choices=("columns", "tensor"), default="columns")
    serve.add_argument("--model-dir", default=None)
    serve.add_argument("--port", type=int, default=5001)
    args = parser.parse_args(argv)
    ensure_venv(quiet=False)
    print(f"mlflow {mlflow_version()} in {VENV} with {' '.join(pins())}")
    if args.command == "venv":
        return
    import tempfile

    model_dir = args.model_dir or str(Path(tempfile.mkdtemp(prefix="mlflow-model-")) / "model")
    features = [f"f{i}" for i in range(20)]
    print(json.dumps(export_model(args.artifact, model_dir, kind=args.kind, features=features)))
    os.execvpe(serve_command(model_dir, args.port)[0], serve_command(model_dir, args.port),
               {**os.environ, **serve_env()})


if __name__ == "__main__":
    sys.exit(main())
