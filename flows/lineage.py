"""What a model version records about the code and packages that made it.

The code version is the git commit of the project (with ``-dirty`` when tracked files changed
since), or the installed package version when there is no git checkout (a wheel, a container).
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES: tuple[str, ...] = ("esteira", "scikit-learn", "numpy", "pandas", "scipy", "pyarrow", "skops",
                             "ray", "prefect", "feast", "whylogs", "threadpoolctl")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<git sha>[-dirty]``, else ``esteira==<version>``."""
    sha = _git("rev-parse", "HEAD")
    if sha:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return f"{sha}-dirty" if dirty else sha
    try:
        return f"esteira=={version('esteira')}"
    except PackageNotFoundError:
        return "unknown"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
