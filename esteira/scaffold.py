"""``esteira init DIR``: a new project that materializes, trains and serves as it is, on its own sample data.

The files come from ``esteira/templates/project/`` with three names filled in (the model, its feature
service, the Feast project); the sample data is written by the project's own ``sample_data.py``, the script
a user runs again to refresh it (it is relative to today) or replaces with their own data.
"""

from __future__ import annotations

import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "templates" / "project"
SPEC_TEMPLATE = "specs/model.yaml"


class ScaffoldError(ValueError):
    """The folder cannot become a project (already one, or a file would be overwritten)."""


@dataclass
class Scaffolded:
    root: Path
    model: str
    files: list[str] = field(default_factory=list)


def project_name(folder: Path, name: str | None) -> str:
    """A Feast project and model name: letters, digits and underscores, starting with a letter."""
    raw = name or folder.resolve().name
    cleaned = re.sub(r"[^a-z0-9_]", "_", raw.lower()).strip("_")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"project_{cleaned}".rstrip("_")
    return cleaned


def scaffold(folder: Path | str, *, name: str | None = None, sample_data: bool = True) -> Scaffolded:
    """Create the project in ``folder`` (new or empty of the template's files) and write its sample data."""
    root = Path(folder).expanduser().resolve()
    if (root / "feature_store.yaml").exists():
        raise ScaffoldError(f"{root} is already a project (it has a feature_store.yaml)")
    model = project_name(root, name)
    names = {"{model}": model, "{service}": f"{model}_v1", "{feast_project}": model}
    plan: list[tuple[Path, str]] = []
    for source in sorted(p for p in TEMPLATE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        relative = source.relative_to(TEMPLATE).as_posix()
        target = f"specs/{model}.yaml" if relative == SPEC_TEMPLATE else relative
        text = source.read_text()
        for token, value in names.items():
            text = text.replace(token, value)
        plan.append((root / target, text))
    clashes = [str(path) for path, _ in plan if path.exists()]
    if clashes:
        raise ScaffoldError(f"{root} already has {', '.join(clashes)}: not overwritten")
    created = Scaffolded(root, model)
    for path, text in plan:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        created.files.append(str(path.relative_to(root)))
    if sample_data:
        runpy.run_path(str(root / "sample_data.py"), run_name="esteira_init")["write"]()
        created.files.extend(str(p.relative_to(root)) for p in sorted((root / "data").rglob("*.parquet")))
    return created
