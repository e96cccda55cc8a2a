"""esteira: a self-hosted MLOps loop (Feast, Ray, a SQLModel registry, Ray Serve, whylogs, Prefect 3)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("esteira")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
