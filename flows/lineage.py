"""What a model version records about the software that made it.

The project's own code version (its git commit, or a hash of its definition and spec files) comes from
:meth:`core.project.Project.code_version`; this module records the packages: esteira itself (with the git
commit of a source checkout, since a checkout's package version does not change between commits) and the
libraries whose versions change a model's numbers.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

from core.settings import ESTEIRA_ROOT

PACKAGES: tuple[str, ...] = ("scikit-learn", "numpy", "pandas", "scipy", "pyarrow", "skops", "ray", "prefect",
                             "feast", "whylogs", "threadpoolctl")


@lru_cache(maxsize=1)
def esteira_version() -> str:
    """``<version>`` of the installed package, ``+g<sha>[.dirty]`` added for a git checkout of esteira."""
    try:
        base = version("esteira")
    except PackageNotFoundError:
        base = "0.0.0"
    try:
        done = subprocess.run(["git", "-C", str(ESTEIRA_ROOT), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return base
    if done.returncode != 0 or not (ESTEIRA_ROOT / "pyproject.toml").is_file():
        return base
    dirty = subprocess.run(["git", "-C", str(ESTEIRA_ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    return f"{base}+g{done.stdout.strip()}{'.dirty' if dirty else ''}"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out: dict[str, str] = {"esteira": esteira_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
