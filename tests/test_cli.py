"""`esteira models ...`: tables for people, one clear line and a non-zero exit for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from esteira import __version__
from esteira.cli import app
from registry import Registry
from tests.test_registry import register

runner = CliRunner()


@pytest.fixture
def populated(registry: Registry) -> Registry:
    register(registry)
    register(registry)
    registry.promote("churn", 1, reason="first")
    return registry


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_list_show_history(populated: Registry) -> None:
    listing = invoke("models", "list")
    assert listing.exit_code == 0 and "churn" in listing.stdout and "production→v1" in listing.stdout
    versions = invoke("models", "show", "churn")
    assert versions.exit_code == 0 and "production" in versions.stdout
    one = invoke("models", "show", "churn@production")
    assert one.exit_code == 0 and "artifact_sha256" in one.stdout and "churn_v1" in one.stdout
    history = invoke("models", "history", "churn")
    assert history.exit_code == 0 and "promote" in history.stdout and "register" in history.stdout


def test_promote_and_rollback(populated: Registry) -> None:
    result = invoke("models", "promote", "churn", "2", "--alias", "production", "--reason", "better auc")
    assert result.exit_code == 0 and "v1 → v2" in result.stdout
    assert populated.resolve_alias("churn", "production") == 2
    result = invoke("models", "rollback", "churn", "--alias", "production")
    assert result.exit_code == 0 and "v2 → v1" in result.stdout
    assert populated.history("churn")[-1].action == "rollback"


def test_a_canary_is_started_widened_and_ended_from_the_cli(populated: Registry) -> None:
    started = invoke("canary", "start", "churn", "2", "--share", "0.2", "--reason", "retrained")
    assert started.exit_code == 0 and "v2" in started.stdout and "20%" in started.stdout
    assert populated.aliases("churn") == {"canary": 2, "production": 1} and populated.canary_share("churn") == 0.2
    widened = invoke("canary", "share", "churn", "0.5", "--reason", "looks fine")
    assert widened.exit_code == 0 and "20% → 50%" in widened.stdout
    ended = invoke("canary", "end", "churn", "--promote", "--reason", "by hand")
    assert ended.exit_code == 0 and "promoted to production" in ended.stdout
    assert populated.aliases("churn") == {"production": 2}
    assert [e.action for e in populated.history("churn")[-5:]] == [
        "promote", "canary_share", "canary_verdict", "promote", "delete_alias"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("canary", "start", "churn", "1"), "already production"),
        (("canary", "start", "churn", "2", "--share", "1.5"), "canary share must be in (0, 1]"),
        (("canary", "end", "churn", "--rollback"), "has no canary to conclude"),
        (("models", "show", "nope"), "model 'nope' not found"),
        (("models", "show", "churn:7"), "version 7 of model 'churn' not found"),
        (("models", "promote", "churn", "7"), "version 7 of model 'churn' not found"),
        (("models", "promote", "churn", "2", "--alias", "Bad Alias"), "invalid alias"),
        (("models", "rollback", "churn", "--alias", "staging"), "no earlier version"),
        (("models", "history", "nope"), "model 'nope' not found"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(populated: Registry, args: tuple[str, ...], message: str) -> None:
    before = (populated.aliases("churn"), len(populated.history("churn")))
    result = invoke(*args)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (populated.aliases("churn"), len(populated.history("churn"))) == before


def test_unreachable_database(tmp_path: Path, esteira_home: Path) -> None:
    result = invoke("models", "list", "--database-url", "postgresql://nobody@127.0.0.1:1/x?connect_timeout=2")
    assert result.exit_code == 1 and "unreachable" in result.stderr


def test_init_makes_a_project_and_refuses_to_overwrite_one(tmp_path: Path) -> None:
    created = invoke("init", str(tmp_path / "My Shop"))
    assert created.exit_code == 0, created.stderr
    root = tmp_path / "My Shop"
    assert (root / "feature_store.yaml").read_text().count("project: my_shop") == 1
    assert (root / "specs" / "my_shop.yaml").is_file() and (root / "data" / "labels.parquet").is_file()
    assert "my_shop_v1" in (root / "features" / "items.py").read_text()
    again = invoke("init", str(root))
    assert again.exit_code == 1 and "already a project" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_commands_that_need_a_project_say_how_to_give_one(tmp_path: Path, esteira_home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a project folder
    result = invoke("features", "plan")
    assert result.exit_code == 1 and "no project" in result.stderr and "--project" in result.stderr
    result = invoke("--project", str(tmp_path), "train", "run", "anything")
    assert result.exit_code == 1 and "is not an esteira project" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_spec_names_the_ones_there_are(churn_project: Path) -> None:
    result = invoke("train", "check-spec", "nope")
    assert result.exit_code == 1 and "no model spec 'nope'" in result.stderr and "churn" in result.stderr
    listed = invoke("train", "check-spec", "churn")
    assert listed.exit_code == 0 and "11 trials" in listed.stdout
