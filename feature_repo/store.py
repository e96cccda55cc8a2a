"""One ``FeatureStore`` per process and project: opening one per request costs registry loads and connections.

The package map of ``feature_repo`` (esteira's library over Feast; the definitions belong to a project):

``config``       the project's ``feature_store.yaml`` read as Feast reads it, plus deployment overrides;
``definitions``  the project's Feast objects, found the way ``feast apply`` finds them;
``sync``         ``plan`` and ``sync`` (apply that also removes what the definitions dropped);
``sources``      where file sources are, whether they exist, what they hold;
``services``     a feature service's features, join keys and request fields;
``offline``      point-in-time correct training sets (training);
``online``       latest values from the online store (serving);
``materialize``  online store loads per view and time range;
``store``        this module: the process-wide store of a project.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from core.project import Project, current_project
from feature_repo.config import local_state_paths, repo_config

if TYPE_CHECKING:
    from feast import FeatureStore

    from core.settings import Settings

_STORES: dict[tuple[str, ...], FeatureStore] = {}
_LOCK = threading.Lock()


def _key(project: Project, settings: Settings) -> tuple[str, ...]:
    return (str(project.root), str(settings.home), str(settings.feast_project), str(settings.feast_online_store),
            str(settings.feast_registry))


def open_store(project: Project | str | None = None, settings: Settings | None = None) -> FeatureStore:
    """The process-wide ``FeatureStore`` of ``project`` (default: the current project), created on first use.

    Opening reads; it never applies definitions (that is :func:`feature_repo.sync.sync`, run by
    ``esteira features apply``, materialization and training).
    """
    from feast import FeatureStore

    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    resolved = current_project(project, settings)
    key = _key(resolved, settings)
    with _LOCK:
        store = _STORES.get(key)
        if store is None:
            config = repo_config(resolved, settings)
            for path in local_state_paths(config):
                path.parent.mkdir(parents=True, exist_ok=True)
            store = FeatureStore(repo_path=str(resolved.root), config=config)
            _STORES[key] = store
    return store


def clear_store_cache() -> None:
    """Forget cached stores (tests switch projects and homes between cases)."""
    from feature_repo.services import forget_plans

    with _LOCK:
        _STORES.clear()
    forget_plans()
