"""A project: the user's folder that esteira works over.

esteira is a tool over a team's own work, the way ``feast`` is a tool over a feature repository. A
project is a folder holding

* ``feature_store.yaml``: Feast's own configuration file (its presence is what makes a folder a project);
* Feast definition modules (``features/*.py`` by convention), found the way ``feast apply`` finds them:
  every ``.py`` file of the folder that ``.feastignore`` does not exclude;
* ``specs/*.yaml``: model specs (feature service, label source, task, candidates, rules);
* optionally data (sources are paths relative to the project, or any fsspec URI).

Every command, flow, deployment, the gateway and the monitor take the project from ``--project``,
``ESTEIRA_PROJECT``, or the current folder when it is one. Nothing here imports a project's code:
that is :mod:`feature_repo.definitions`' job, when definitions are applied.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

MARKER = "feature_store.yaml"
SPECS_DIR = "specs"
SPEC_SUFFIXES = (".yaml", ".yml")


class ProjectError(ValueError):
    """No project where one was needed, or a project file that is missing; the message says what to do."""


def is_project(path: Path | str) -> bool:
    return (Path(path) / MARKER).is_file()


def find_project_root(start: Path) -> Path | None:
    """``start`` if it is a project folder, else None (no search upwards: the folder a command runs in
    is the one it acts on, as with ``feast``)."""
    start = start.expanduser().resolve()
    return start if is_project(start) else None


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` locations (s3://, gs://, memory://, file://), which are never project-relative."""
    parts = urlsplit(location)
    return bool(parts.scheme) and len(parts.scheme) > 1 and "://" in location


@dataclass(frozen=True)
class Project:
    """A project folder, always absolute."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def feature_store_yaml(self) -> Path:
        return self.root / MARKER

    @property
    def specs_dir(self) -> Path:
        return self.root / SPECS_DIR

    def resolve(self, location: str | Path) -> str:
        """A data location as something readers take: URIs and absolute paths unchanged, a relative path
        joined to the project folder (Feast resolves a relative ``FileSource`` path the same way)."""
        text = str(location)
        if is_uri(text) or Path(text).expanduser().is_absolute():
            return str(Path(text).expanduser()) if not is_uri(text) else text
        return str(self.root / text)

    def spec_names(self) -> list[str]:
        """Names of the model specs in ``specs/`` (file stems), sorted."""
        if not self.specs_dir.is_dir():
            return []
        return sorted(p.stem for p in self.specs_dir.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())

    def spec_path(self, name_or_path: str) -> Path:
        """``specs/<name>.yaml`` for a spec name; a path (relative to the project or absolute) as given."""
        text = str(name_or_path)
        if text.endswith(SPEC_SUFFIXES) or "/" in text:
            path = Path(text).expanduser()
            path = path if path.is_absolute() else self.root / path
            if not path.is_file():
                raise ProjectError(f"model spec {path} does not exist")
            return path
        for suffix in SPEC_SUFFIXES:
            path = self.specs_dir / f"{text}{suffix}"
            if path.is_file():
                return path
        known = ", ".join(self.spec_names()) or "none"
        raise ProjectError(f"no model spec {text!r} in {self.specs_dir} (specs there: {known})")

    def load_module(self, name: str) -> ModuleType:
        """One of the project's own modules (``scenario``, a data generator) run from its file, with the
        project folder on ``sys.path`` while it loads, as Feast loads definition modules (so it may import
        its siblings). Registered under a name of its own: two projects never share a module."""
        path = self.root / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"esteira_project_{abs(hash(str(self.root)))}_{name}", path)
        if spec is None or spec.loader is None or not path.is_file():
            raise ProjectError(f"{path} does not exist")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        sys.path.insert(0, str(self.root))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(self.root))
        return module

    def code_version(self) -> str:
        """What a model version records as the code that made it: the project's git commit
        (``-dirty`` when tracked files changed), else a hash of its definition and spec files."""
        sha = _git(self.root, "rev-parse", "HEAD")
        if sha:
            dirty = _git(self.root, "status", "--porcelain", "--untracked-files=no", "--", ".")
            return f"git:{sha}-dirty" if dirty else f"git:{sha}"
        digest = hashlib.sha256()
        files = sorted([*self.root.rglob("*.py"), *self.specs_dir.glob("*.y*ml"), self.feature_store_yaml])
        for path in files:
            if path.is_file() and ".esteira" not in path.parts and ".venv" not in path.parts:
                digest.update(str(path.relative_to(self.root)).encode() + b"\0" + path.read_bytes())
        return f"files:{digest.hexdigest()[:16]}"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def current_project(project: Project | Path | str | None = None, settings: object | None = None) -> Project:
    """The project to act on: ``project`` if given, else the settings' (``ESTEIRA_PROJECT`` or the current
    folder). Raises :class:`ProjectError` with what to do when there is none."""
    if isinstance(project, Project):
        return project
    if project is not None:
        root = Path(project).expanduser().resolve()
        if not is_project(root):
            raise ProjectError(f"{root} is not an esteira project: it has no {MARKER} "
                               f"(`esteira init {project}` makes one)")
        return Project(root)
    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    root = getattr(settings, "project", None)
    if root is None:
        raise ProjectError(f"no project: run from a project folder (one with a {MARKER}), pass --project DIR or "
                           "set ESTEIRA_PROJECT (`esteira init DIR` makes one)")
    if not is_project(root):
        raise ProjectError(f"ESTEIRA_PROJECT={root} is not an esteira project: it has no {MARKER}")
    return Project(Path(root))


def optional_project(project: Project | Path | str | None = None, settings: object | None = None) -> Project | None:
    """The project when there is one (given, configured, or the current folder), else None. A project given
    explicitly must be one; only the defaults may be absent (work that needs no project: serving inline
    features, judging gateway traffic, training from a DataFrame)."""
    try:
        return current_project(project, settings)
    except ProjectError:
        if project is not None:
            raise
        return None
