"""Eight promotions racing for one alias: exactly one holder, eight audit events forming one chain."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from registry import Registry
from tests.test_registry import SIGNATURE, tiny_model

N = 8


def race_promotions(url: str, artifacts: str) -> Registry:
    setup = Registry.from_url(url, artifacts)
    model = tiny_model()
    for _ in range(N):
        setup.register_version("churn", model, signature=SIGNATURE)
    barrier = threading.Barrier(N)
    errors: list[BaseException] = []

    def promote(version: int) -> None:
        reg = Registry.from_url(url, artifacts, migrate=False)  # own engine, own connections
        try:
            barrier.wait(timeout=30)
            reg.promote("churn", version, reason=f"racer {version}", actor=f"worker-{version}")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)
        finally:
            reg.close()

    threads = [threading.Thread(target=promote, args=(v,)) for v in range(1, N + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return setup


def assert_one_holder_and_a_consistent_chain(reg: Registry) -> None:
    events = reg.history("churn", alias="production")
    assert len(events) == N
    assert sorted(e.to_version for e in events) == list(range(1, N + 1))
    assert events[0].from_version is None
    for before, after in zip(events, events[1:]):
        assert after.from_version == before.to_version, "an audit event disagrees with the one before it"
    assert reg.aliases("churn") == {"production": events[-1].to_version}


def test_concurrent_promotions_on_sqlite(tmp_path: Path) -> None:
    reg = race_promotions(f"sqlite:///{tmp_path / 'registry.db'}", str(tmp_path / "artifacts"))
    assert_one_holder_and_a_consistent_chain(reg)


@pytest.mark.postgres
def test_concurrent_promotions_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    reg = race_promotions(pg_url, str(tmp_path / "artifacts"))
    assert_one_holder_and_a_consistent_chain(reg)
