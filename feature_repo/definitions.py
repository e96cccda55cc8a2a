"""A project's Feast definitions, found exactly the way ``feast apply`` finds them.

Feast's own ``parse_repo`` imports every ``.py`` file of the repository that ``.feastignore`` does not
exclude and collects the Feast objects defined at module level. It names each module by its path relative
to the working folder, which is why ``feast apply`` first changes into the repository. esteira calls the
same function, so the rules a Feast user knows hold, with what a long-lived process needs around it:

* the working folder is changed only for the parse, under a lock, and put back;
* the project folder is first on ``sys.path`` only for the parse (definition modules may import each
  other, ``from features.entities import device``, as with the ``feast`` CLI), and esteira's own package
  folders are off it meanwhile: Prefect's flow loader leaves an entrypoint's folder (``flows/``) on
  ``sys.path``, where ``flows/features.py`` would shadow a project's ``features`` folder;
* the project's modules are dropped from ``sys.modules`` afterwards, so the next parse sees edited files
  and another project with the same module names gets its own.

Definitions are imported only where they are applied or planned (``esteira features``, materialization,
training); the gateway reads what was applied from Feast's registry and never imports a project's code.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from core.project import Project
from core.settings import ESTEIRA_ROOT

if TYPE_CHECKING:
    from feast.repo_contents import RepoContents

_PARSE_LOCK = threading.Lock()


class DefinitionsError(ValueError):
    """A definition module failed to import; the message names the file and the error."""


def _esteira_package_folder(entry: str) -> bool:
    path = Path(entry or ".").resolve()
    return path.parent == ESTEIRA_ROOT and (path / "__init__.py").is_file()


@contextlib.contextmanager
def _inside(root: Path) -> Iterator[None]:
    previous, saved_path = os.getcwd(), list(sys.path)
    os.chdir(root)
    sys.path[:] = [str(root), *(p for p in saved_path if not _esteira_package_folder(p))]
    try:
        yield
    finally:
        os.chdir(previous)
        sys.path[:] = saved_path
        prefix = str(root) + os.sep
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if path.startswith(prefix) or _namespace_in(module, prefix):
                sys.modules.pop(name, None)


def _namespace_in(module: object, prefix: str) -> bool:
    """A namespace package (a folder without ``__init__.py``, such as ``features/``) of the project."""
    paths = getattr(module, "__path__", None)
    return getattr(module, "__file__", None) is None and paths is not None and any(
        str(p).startswith(prefix) for p in list(paths))


def load_definitions(project: Project, project_name: str) -> RepoContents:
    """The Feast objects the project defines, as Feast's ``RepoContents`` (with its ``Project`` object).

    ``project_name`` is the Feast project (from ``feature_store.yaml`` or its override); like ``feast
    apply``, a repository without a ``Project`` object gets one of that name.
    """
    from feast.project import Project as FeastProject
    from feast.repo_operations import parse_repo

    with _PARSE_LOCK, _inside(project.root):
        try:
            # parse_repo prints nothing itself, but definition modules may; keep it out of command output.
            with contextlib.redirect_stdout(io.StringIO()):
                contents = parse_repo(project.root)
        except Exception as exc:
            raise DefinitionsError(f"feature definitions of {project.root} failed to import: "
                                   f"{type(exc).__name__}: {exc}") from exc
    if not contents.projects:
        contents.projects.append(FeastProject(name=project_name, description=""))
    elif len(contents.projects) > 1 or contents.projects[0].name != project_name:
        names = ", ".join(p.name for p in contents.projects)
        raise DefinitionsError(f"the definitions declare Feast project(s) {names}; feature_store.yaml says "
                               f"{project_name!r} (one project per folder, as with feast apply)")
    return contents
