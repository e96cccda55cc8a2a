"""The boundaries the folders promise, checked on the source (no imports run):

* every import points down: ``core`` under the parts; ``registry`` and ``feature_repo`` over ``core`` only;
  ``flows`` and ``gateway`` beside each other, never importing one another; the web console (``console``) over
  the registry alone; the application shell
  (``esteira``) over everything;
* the library knows no domain: nothing outside ``examples/`` names an example's model, entities, keys or
  data (a team brings its own).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from core.settings import ESTEIRA_ROOT

PACKAGES = ("core", "registry", "feature_repo", "flows", "gateway", "console", "esteira")
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "registry": {"core"},
    "feature_repo": {"core"},
    "flows": {"core", "registry", "feature_repo"},
    "gateway": {"core", "registry", "feature_repo"},
    "console": {"core", "registry"},
    "esteira": {"core", "registry", "feature_repo", "flows", "gateway", "console"},
}

# What the examples are about: their model, service, entity, key and data names. Library code and its
# configuration must not mention them (English words such as "in flight" are not domain names).
DOMAIN = re.compile(r"churn|customer|days_until_renewal|tailnum|nycflights|departure_delay|flights_v1",
                    re.IGNORECASE)
LIBRARY = [*PACKAGES, "deployments.yaml"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(package: str) -> None:
    wrong = []
    for path in sorted((ESTEIRA_ROOT / package).rglob("*.py")):
        for target in _imports(path) & set(PACKAGES):
            if target != package and target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ESTEIRA_ROOT)} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_library_names_no_example_domain() -> None:
    hits = []
    for entry in LIBRARY:
        root = ESTEIRA_ROOT / entry
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                       and p.suffix in (".py", ".yaml", ".yml", ".md", ".toml"))
        for path in files:
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if DOMAIN.search(line):
                    hits.append(f"{path.relative_to(ESTEIRA_ROOT)}:{number}: {line.strip()}")
    assert not hits, "library code names an example's domain:\n" + "\n".join(hits)


def test_the_domain_pattern_finds_what_it_guards() -> None:
    """The check above is only worth something if it sees the examples' names where they belong."""
    churn = (ESTEIRA_ROOT / "examples" / "churn" / "features" / "churn.py").read_text()
    assert DOMAIN.search(churn)
    assert not DOMAIN.search("requests in flight finish on the old version")
