"""esteira: a self-hosted MLOps loop (Feast, Ray, a SQLModel registry, Ray Serve, whylogs, Prefect 3)."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """``__version__`` read on first use: importlib.metadata costs about 0.1 s, which every CLI command would
    pay before doing anything."""
    if name != "__version__":
        raise AttributeError(name)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("esteira")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+unknown"
