"""The flavor plugin contract.

A flavor turns a trained model into bytes at registration and bytes back into a predictor at load.
Flavors are found through the ``esteira.flavors`` entry-point group, so a third-party package adds
a model type with one class and one entry point, and neither the registry nor the gateway changes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from registry.errors import FlavorNotFound

if TYPE_CHECKING:
    import numpy as np

ENTRY_POINT_GROUP = "esteira.flavors"


@runtime_checkable
class Predictor(Protocol):
    """What a loaded model offers the gateway and batch scoring.

    ``columns`` maps each input feature name to a 1-D array (all the same length). Returning plain
    arrays keeps pandas off the serving hot path where the flavor can avoid it.
    """

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Flavor(Protocol):
    """``save`` and ``load``, and optionally ``check(data) -> None``: raise
    :class:`~registry.errors.UntrustedArtifact` for bytes the flavor would refuse to load. The registry
    calls ``check`` before it stores an artifact, so a refused artifact never becomes a version; ``load``
    must check again (the bytes may come from an older list or another writer)."""

    name: str
    file_name: str

    def save(self, model: Any) -> bytes: ...

    def load(self, data: bytes, signature: dict[str, Any]) -> Predictor: ...


def check_artifact(flavor: Flavor, data: bytes) -> None:
    """Run the flavor's own ``check`` on ``data`` if it has one."""
    check = getattr(flavor, "check", None)
    if callable(check):
        check(data)


@lru_cache(maxsize=None)
def _flavor_classes() -> dict[str, Any]:
    from importlib.metadata import entry_points  # 0.1 s: only when a flavor is first needed

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_flavors() -> list[str]:
    return sorted(_flavor_classes())


def get_flavor(name: str) -> Flavor:
    """The flavor plugin called ``name``; fails with the list of installed ones."""
    eps = _flavor_classes()
    if name not in eps:
        _flavor_classes.cache_clear()  # a plugin may have been installed since the first lookup
        eps = _flavor_classes()
    if name not in eps:
        raise FlavorNotFound(f"no flavor plugin {name!r} installed (have: {', '.join(sorted(eps)) or 'none'})")
    return eps[name].load()()
