"""Names end where they end: a model or alias name is checked whole wherever it comes in (a spec, the registry
API, a reference such as ``name:3``), and the artifact store refuses any key that would leave its root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from flows.snapshot import write_snapshot
from flows.spec import load_spec
from registry import InvalidName, ModelRef, Registry
from registry.artifacts import ArtifactStore

SIGNATURE = {"inputs": [{"name": "a", "dtype": "float64"}], "task": "binary_classification", "classes": [0, 1]}
SPEC: dict[str, Any] = {"name": "m", "task": "binary", "feature_service": "service_v1", "label": "y",
                        "labels": {"source": "labels.csv"}, "candidates": [{"family": "logistic_regression"}]}


def tiny_model() -> LogisticRegression:
    return LogisticRegression().fit(pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]}), [0, 0, 1, 1])


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("bad", ["m\n", "m\r\n", " m", "m/x", "../../x", "..", ".hidden", "m\\x", "ｍ"])
def test_the_registry_refuses_a_model_name_that_is_not_a_name_as_a_whole(registry: Registry, bad: str) -> None:
    with pytest.raises(InvalidName, match="invalid model name"):
        registry.register_version(bad, tiny_model(), signature=SIGNATURE)
    assert registry.list_models() == []


@pytest.mark.parametrize("bad", ["production\n", "prod/x", "Production", "1", "staging "])
def test_the_registry_refuses_an_alias_that_is_not_a_name_as_a_whole(registry: Registry, bad: str) -> None:
    mv = registry.register_version("m", tiny_model(), signature=SIGNATURE)
    with pytest.raises(InvalidName, match="invalid alias"):
        registry.promote("m", mv.version, alias=bad)
    assert registry.aliases("m") == {}


@pytest.mark.parametrize("bad", ["m\n", "m:1\n", "m@production\n", "m:\uff11", "m:\u0661"])
def test_a_model_reference_is_parsed_whole(bad: str) -> None:
    with pytest.raises(InvalidName):
        ModelRef.parse(bad)


@pytest.mark.parametrize(("field", "value"), [("name", "m\n"), ("name", "../../x"),
                                              ("promotion", {"alias": "Production"}),
                                              ("promotion", {"otherwise_alias": "staging\n"})])
def test_a_spec_with_a_bad_model_or_alias_name_is_refused_when_loaded(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match="invalid (model name|alias)"):
        load_spec({**SPEC, field: value})


@pytest.mark.parametrize(("namespace", "file_name"), [("../../escaped", "x.bin"), ("m/../../..", "x.bin"),
                                                      ("m", "../x.bin"), ("/abs", "x.bin"), ("m//x", "x.bin"),
                                                      ("m", "")])
def test_the_artifact_store_refuses_keys_that_leave_its_root(tmp_path: Path, namespace: str, file_name: str) -> None:
    root = tmp_path / "store" / "root"
    store = ArtifactStore(str(root))
    with pytest.raises(InvalidName, match="artifact key"):
        store.put(namespace, file_name, b"bytes")
    assert files_under(tmp_path) == set()


def test_a_training_snapshot_under_a_bad_model_name_writes_nothing(registry: Registry, esteira_home: Path) -> None:
    before = files_under(esteira_home.parent)
    frame = pd.DataFrame({"a": np.arange(3.0), "y": [0, 1, 0]})
    with pytest.raises(InvalidName):
        write_snapshot(registry, "../../x", frame)
    assert files_under(esteira_home.parent) == before


def test_good_names_still_pass_everywhere(registry: Registry) -> None:
    spec = load_spec({**SPEC, "name": "Churn.v2-eu_1", "promotion": {"alias": "prod-eu", "otherwise_alias": "s_1"}})
    mv = registry.register_version(spec.name, tiny_model(), signature=SIGNATURE)
    registry.promote(spec.name, mv.version, alias=spec.promotion.alias)
    assert registry.get(f"{spec.name}@prod-eu").version == mv.version
    assert ModelRef.parse(f"{spec.name}:{mv.version}") == ModelRef(spec.name, version=mv.version)
