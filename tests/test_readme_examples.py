"""Every gateway ``curl`` example of README.md works as written.

The examples are read from README.md itself: every command of a ```bash block that starts with ``curl`` and
targets the gateway (``127.0.0.1:8000`` or ``localhost:8000``), a command going on over lines (a backslash,
or a quoted body spanning lines) taken whole, as the shell would. Each runs with the real ``curl`` (so
``-d`` sends ``application/x-www-form-urlencoded``, exactly what a reader's shell sends), against a gateway
served by uvicorn on a free 127.0.0.1 port, and must answer 2xx. The commands of one block run in order
against one gateway, so an example may use what an earlier one of its block did (a request id).

The gateway serves what the README's own steps build, entity-key lookups included: the project of the
model a block names is set up on real Feast stores (``esteira init``'s template for ``my_project``, a copy of
``examples/churn`` for ``churn``), materialized, and trained by the training flow itself (one small
candidate, in-process, instead of the spec's full search on Ray). A block naming a model not in
``PROJECTS`` fails and says so: add how to build it there.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.settings import ESTEIRA_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

README = ESTEIRA_ROOT / "README.md"
GATEWAY = re.compile(r"\b(?:127\.0\.0\.1|localhost):8000\b")
MODEL_IN_PATH = re.compile(r"/v[12]/models/([A-Za-z0-9][A-Za-z0-9_.-]*)")


@dataclass(frozen=True)
class Example:
    line: int  # where the command starts in README.md
    argv: tuple[str, ...]  # the arguments the shell would pass to curl

    @property
    def model(self) -> str | None:
        found = MODEL_IN_PATH.search(" ".join(self.argv))
        return found.group(1) if found else None


def bash_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """Each ```bash block: the line number of its first line and its lines."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```bash":
            start, index = index + 2, index + 1
            body = []
            while index < len(lines) and lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            yield start, body
        index += 1


def gateway_examples(lines: list[str], first_line: int) -> list[Example]:
    """The block's commands that call the gateway with curl. A command ends at a newline outside quotes not
    preceded by a backslash; comments are dropped as the shell drops them."""
    examples, pending, start = [], "", first_line
    for number, line in enumerate(lines, first_line):
        if not pending:
            start = number
        pending += line + "\n"
        if line.endswith("\\"):
            continue
        try:
            argv = shlex.split(pending.replace("\\\n", " "), comments=True)
        except ValueError:  # a quote still open: the command goes on on the next line
            continue
        pending = ""
        if argv and argv[0] == "curl" and any(GATEWAY.search(arg) for arg in argv):
            examples.append(Example(start, tuple(argv)))
    return examples


def readme_blocks() -> list[tuple[int, list[Example]]]:
    blocks = [(start, gateway_examples(lines, start)) for start, lines in bash_blocks(README.read_text())]
    return [(start, examples) for start, examples in blocks if examples]


def run_curl(example: Example, base: str) -> tuple[int, str]:
    """The example with the real curl, pointed at ``base`` (host:port); its HTTP status and body."""
    argv = [GATEWAY.sub(base, arg) for arg in example.argv[1:]]
    done = subprocess.run(["curl", *argv, "--show-error", "--max-time", "30", "--write-out", "\n%{http_code}"],
                          capture_output=True, text=True, timeout=60, check=False)
    body, _, status = done.stdout.rpartition("\n")
    assert done.returncode == 0, f"README line {example.line}: curl failed: {done.stderr}"
    return int(status), body


# -- the projects the README's examples serve ----------------------------------------------------------------


def small_training(spec: Any) -> Any:
    """The spec with one small candidate and two folds: the flow as it is, a fraction of the search."""
    from flows.spec import Candidate, CrossValidation

    return spec.model_copy(update={"candidates": [Candidate(family="logistic_regression",
                                                            params={"max_iter": 500})],
                                   "cv": CrossValidation(folds=2)})


def train_served(root: Path, model: str, registry: Any) -> None:
    """Materialize the project's stores, train ``model`` with the training flow, serve it in production."""
    from core.project import Project
    from flows.materialize import run_materialize
    from flows.spec import resolve_spec
    from flows.train import train

    project = Project(root)
    run_materialize(project)
    result = train(small_training(resolve_spec(model, project)), project=project, registry=registry,
                   parallel=False)
    if not result.promoted:
        registry.promote(model, result.version, reason="README examples")


def init_project(base: Path, registry: Any) -> Path:
    """``esteira init my-project``: the template with its sample data."""
    from esteira.scaffold import scaffold

    root = scaffold(base / "my-project").root
    train_served(root, "my_project", registry)
    return root


def churn_project(base: Path, registry: Any) -> Path:
    """``examples/churn`` with data from its own generator (customers 100000 and up)."""
    from tests.projects import copy_example, project_module

    root = copy_example("churn", base / "churn")
    project_module(root, "generator").generate_batch(root / "data", n_customers=300, seed=5)
    train_served(root, "churn", registry)
    return root


PROJECTS: dict[str, Callable[[Path, Any], Path]] = {"my_project": init_project, "churn": churn_project}


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Model name -> ``host:port`` of a gateway serving it from its project's stores (one per project: a
    gateway reads one project's Feast configuration)."""
    from core.settings import get_settings
    from feature_repo.store import clear_store_cache
    from gateway.app import build_app
    from gateway.config import GatewayConfig
    from gateway.service import ModelService
    from gateway.testing import serve_app
    from registry import Registry

    base = tmp_path_factory.mktemp("readme")
    needed = {example.model for _, examples in readme_blocks() for example in examples} & set(PROJECTS)
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        patch.setenv("ESTEIRA_HOME", str(base / "home"))
        for var in ("ESTEIRA_DATABASE_URL", "ESTEIRA_ARTIFACT_ROOT", "ESTEIRA_PROJECT", "ESTEIRA_FEAST_ONLINE_STORE",
                    "ESTEIRA_FEAST_REGISTRY", "ESTEIRA_FEAST_PROJECT"):
            patch.delenv(var, raising=False)
        get_settings.cache_clear()
        clear_store_cache()
        registry = Registry.from_url()
        stack.callback(registry.close)
        served = {}
        for model in sorted(needed):
            root = PROJECTS[model](base, registry)
            config = GatewayConfig(database_url=registry.url, artifact_root=registry.artifacts.root,
                                   project=str(root), models=[model], log_inference=False)
            url = stack.enter_context(serve_app(build_app(ModelService.from_config(config))))
            served[model] = url.removeprefix("http://")
        yield served
        get_settings.cache_clear()
        clear_store_cache()


def test_the_readme_has_gateway_examples() -> None:
    """The extraction itself: a change of the README's format must not turn the test below into no test."""
    examples = [example for _, block in readme_blocks() for example in block]
    assert len(examples) >= 5 and any("-d" in example.argv for example in examples)
    assert {example.model for example in examples} >= {"churn"}


@pytest.mark.parametrize("block", readme_blocks(), ids=lambda block: f"README-line-{block[0]}")
def test_readme_gateway_examples_answer_2xx(block: tuple[int, list[Example]], gateways: dict[str, str]) -> None:
    _, examples = block
    models = {example.model for example in examples} - {None}
    unknown = models - set(gateways)
    assert not unknown, f"README examples use models {sorted(unknown)}: say how to build them in PROJECTS"
    base = gateways[min(models)] if models else next(iter(gateways.values()))
    failures = []
    for example in examples:
        status, body = run_curl(example, gateways.get(example.model or "", base))
        if not 200 <= status < 300:
            failures.append(f"README line {example.line}: {status} {body[:300]}")
    assert not failures, "\n".join(failures)
