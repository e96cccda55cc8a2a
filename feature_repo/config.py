"""The Feast configuration of a project: its own ``feature_store.yaml``, then esteira's overrides.

The file is read the way Feast reads it (``${VAR}`` substitution, then ``RepoConfig``), so ``feast plan``
run in the project folder and esteira see the same stores. Deployment may override three things without
editing the file, through settings: the online store (``ESTEIRA_FEAST_ONLINE_STORE``: ``sqlite`` or a Redis
URL), the registry (``ESTEIRA_FEAST_REGISTRY``: a file or a PostgreSQL URL for Feast's SQL registry) and the
project name (``ESTEIRA_FEAST_PROJECT``, which namespaces online-store keys). A test points a copy of a
project at Redis this way; production points the same definitions at its stores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import yaml

from core.project import Project

if TYPE_CHECKING:
    from feast.repo_config import RepoConfig

    from core.settings import Settings


class FeastConfigError(ValueError):
    """The project's feature_store.yaml cannot be used; the message names the file and the field."""


def redis_connection_string(url: str) -> str:
    """Translate ``redis://[:password@]host:port[/db]`` (or ``rediss://``) to Feast's format.

    Feast wants ``host:port,db=N,password=...,ssl=true``; a string already in that form is
    returned unchanged, so both spellings work in ``ESTEIRA_FEAST_ONLINE_STORE``.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise FeastConfigError(f"not a redis URL: {url!r}")
    out = [f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"]
    db = parts.path.strip("/")
    if db:
        out.append(f"db={int(db)}")
    if parts.password:
        out.append(f"password={unquote(parts.password)}")
    if parts.username and parts.username != "default":
        out.append(f"username={unquote(parts.username)}")
    if parts.scheme == "rediss":
        out.append("ssl=true")
    return ",".join(out)


def _overrides(raw: dict[str, Any], settings: Settings) -> dict[str, Any]:
    out = dict(raw)
    if settings.feast_project:
        out["project"] = settings.feast_project
    online = (settings.feast_online_store or "").strip()
    if online.lower() == "sqlite":
        out["online_store"] = {"type": "sqlite", "path": str(settings.home / "feast" / "online.db")}
    elif online:
        out["online_store"] = {"type": "redis", "connection_string": redis_connection_string(online)}
    registry = (settings.feast_registry or "").strip()
    if registry.startswith("sqlite"):
        raise FeastConfigError("Feast's SQL registry on SQLite is broken (feast-dev/feast 5565): use a file registry")
    if "://" in registry:
        out["registry"] = {"registry_type": "sql", "path": registry, "cache_ttl_seconds": 60,
                           "sqlalchemy_config_kwargs": {"pool_pre_ping": True}}
    elif registry:
        out["registry"] = {"registry_type": "file", "path": registry, "cache_ttl_seconds": 60}
    return out


def repo_config(project: Project, settings: Settings | None = None) -> RepoConfig:
    """The project's ``RepoConfig`` (``repo_path`` = the project folder, so relative source paths resolve)."""
    from feast.repo_config import RepoConfig

    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    path = project.feature_store_yaml
    try:
        raw = yaml.safe_load(os.path.expandvars(path.read_text()))  # what feast.repo_config.load_repo_config does
    except (OSError, yaml.YAMLError) as exc:
        raise FeastConfigError(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise FeastConfigError(f"{path}: expected a mapping of Feast settings")
    try:
        config = RepoConfig(**_overrides(raw, settings))
    except Exception as exc:  # pydantic's ValidationError, Feast's own config errors
        first = str(exc).strip().splitlines()
        raise FeastConfigError(f"{path}: {' '.join(first[:3])}") from None
    config.repo_path = project.root
    return config


def local_state_paths(config: RepoConfig) -> list[Path]:
    """Files Feast writes on this machine (file registry, SQLite online store), absolute.

    Feast creates the file but not its folders (``file_dir.mkdir`` without ``parents``): whoever opens
    the store creates them first.
    """
    root = Path(config.repo_path or ".")
    paths: list[Path] = []
    registry = config.registry
    registry_path = getattr(registry, "path", None)
    if getattr(registry, "registry_type", "file") == "file" and registry_path and "://" not in str(registry_path):
        paths.append(Path(registry_path) if Path(registry_path).is_absolute() else root / registry_path)
    online = config.online_store
    if getattr(online, "type", "") == "sqlite" and getattr(online, "path", None):
        paths.append(Path(online.path) if Path(online.path).is_absolute() else root / online.path)
    return paths
