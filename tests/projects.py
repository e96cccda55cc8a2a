"""Helpers for tests that work on a project: a copy of an example in a temporary folder, its modules.

Tests never write into ``examples/``: each copies the example it needs (without generated data or local
state) and points ``ESTEIRA_PROJECT`` at the copy, as a user points esteira at their own folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from core.project import Project
from core.settings import ESTEIRA_ROOT, get_settings

EXAMPLES = ESTEIRA_ROOT / "examples"


def copy_example(name: str, dest: Path) -> Path:
    """``examples/<name>`` copied to ``dest`` (no data, no ``.esteira``), returned absolute."""
    shutil.copytree(EXAMPLES / name, dest, ignore=shutil.ignore_patterns(".esteira", "data", "__pycache__"))
    return dest.resolve()


def project_module(root: Path, name: str) -> ModuleType:
    """A project's own module (``generator``, ``scenario``...) imported from its file, the project folder on
    ``sys.path`` while it loads (as the demo and Feast load project code)."""
    return Project(root).load_module(name)


def use_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point settings (and every cached Feast store) at ``root``."""
    from feature_repo.store import clear_store_cache

    monkeypatch.setenv("ESTEIRA_PROJECT", str(root))
    get_settings.cache_clear()
    clear_store_cache()


def use_project_alone(root: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`use_project`, with the project's own state under ``home``: no registry, artifact root or Ray
    address from the environment leaks in."""
    monkeypatch.setenv("ESTEIRA_HOME", str(home))
    for var in ("ESTEIRA_DATABASE_URL", "ESTEIRA_ARTIFACT_ROOT", "ESTEIRA_RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    use_project(root, monkeypatch)


class FrameFetcher:
    """A feature fetcher over one in-memory frame of features by key, for tests of what comes after the join
    (training, monitoring): the point-in-time join itself is tested on real Feast in test_features."""

    def __init__(self, features: Any, schema: dict[str, str], key: str, key_dtype: str = "int64") -> None:
        self.features, self._schema, self._key, self._key_dtype = features, schema, key, key_dtype

    def schema(self, feature_service: str) -> dict[str, str]:
        return dict(self._schema)

    def service(self, feature_service: str) -> Any:
        from flows.features import ServiceInfo

        return ServiceInfo(keys={self._key: self._key_dtype}, request={})

    def historical(self, feature_service: str, entity_df: Any, timestamp: str) -> Any:
        return entity_df.merge(self.features, on=self._key, how="left")

    def online(self, feature_service: str, entity_rows: Any) -> Any:
        raise NotImplementedError("in-memory fetcher: no online store")
