"""Who can reach what: the gateway refuses to listen off loopback without its tokens, an empty token is an
error, and the local stack's Ray head takes only clients that hold its token, on loopback only."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from core.ray_runtime import stack_ray_token
from core.settings import ESTEIRA_ROOT, Settings
from esteira.cli import app
from esteira.stack import ray_temp_dir, read_stack, start_ray_head, stop_ray_head
from gateway.exposure import ExposureError, check_exposure, is_loopback
from tests.prefect_stack import free_port, wait_for

runner = CliRunner()
TOKEN_VARIABLES = ("ESTEIRA_GATEWAY_PREDICT_TOKEN", "ESTEIRA_GATEWAY_ADMIN_TOKEN", "ESTEIRA_GATEWAY_FEEDBACK_TOKEN",
                   "ESTEIRA_GATEWAY_INSECURE", "ESTEIRA_GATEWAY_HOST")


@pytest.fixture
def no_tokens(esteira_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in TOKEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return esteira_home


# -- the rule ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.20", False), ("gateway.internal", False),
])
def test_only_loopback_addresses_count_as_private(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_off_loopback_the_gateway_needs_both_tokens_or_an_explicit_insecure() -> None:
    assert check_exposure("127.0.0.1", predict_token=None, admin_token=None, insecure=False) is None
    assert check_exposure("0.0.0.0", predict_token="p", admin_token="a", insecure=False) is None
    with pytest.raises(ExposureError, match="on 0.0.0.0 with its predict and admin routes open") as refused:
        check_exposure("0.0.0.0", predict_token=None, admin_token=None, insecure=False)
    assert "ESTEIRA_GATEWAY_PREDICT_TOKEN" in str(refused.value) and "--insecure" in str(refused.value)
    with pytest.raises(ExposureError, match="its admin routes open"):
        check_exposure("10.0.0.5", predict_token="p", admin_token=None, insecure=False)
    warning = check_exposure("0.0.0.0", predict_token=None, admin_token=None, insecure=True)
    assert warning is not None and "anyone who reaches this port can predict" in warning


def test_an_empty_token_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, esteira_home: Path) -> None:
    with pytest.raises(ValidationError, match="ESTEIRA_GATEWAY_ADMIN_TOKEN is set but empty"):
        Settings(gateway_admin_token="  ")
    monkeypatch.setenv("ESTEIRA_GATEWAY_PREDICT_TOKEN", "")
    with pytest.raises(ValidationError, match="ESTEIRA_GATEWAY_PREDICT_TOKEN is set but empty"):
        Settings()
    monkeypatch.setenv("ESTEIRA_GATEWAY_PREDICT_TOKEN", " s3cret-token\n")
    token = Settings().gateway_predict_token
    assert token is not None and token.get_secret_value() == "s3cret-token"


# -- the commands check before anything starts -------------------------------------------------------------


def _ray_running() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def test_serve_off_loopback_without_tokens_refuses_before_ray_starts(no_tokens: Path) -> None:
    was_running = _ray_running()
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"], catch_exceptions=False)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "predict and admin routes open" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _ray_running() is was_running and "gateway on" not in result.stdout


def test_serve_with_an_empty_token_says_so(no_tokens: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTEIRA_GATEWAY_PREDICT_TOKEN", " ")
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"], catch_exceptions=False)
    assert result.exit_code == 1 and "ESTEIRA_GATEWAY_PREDICT_TOKEN is set but empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_with_an_exposed_gateway_and_no_tokens_starts_nothing(no_tokens: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTEIRA_GATEWAY_HOST", "0.0.0.0")
    result = runner.invoke(app, ["up"], catch_exceptions=False)
    assert result.exit_code == 1 and "ESTEIRA_GATEWAY_ADMIN_TOKEN" in result.stderr
    assert read_stack() is None and not (no_tokens / "prefect").exists()


# -- the stack's Ray head ----------------------------------------------------------------------------------

CLIENT = r"""
import sys
import ray
from core.ray_runtime import ensure_ray

try:
    ensure_ray(sys.argv[1]) if sys.argv[2] == "esteira" else ray.init(address=sys.argv[1], log_to_driver=False)
except ConnectionError as exc:
    print("REFUSED", exc)
    sys.exit(3)
print("CONNECTED", ray.get(ray.remote(lambda: 41 + 1).remote()))
"""


def _client(address: str, how: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLIENT, address, how], env=env, cwd=ESTEIRA_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def _listening(session: int) -> set[str]:
    """Addresses the processes of a session listen on (TCP)."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == session:
                found |= {c.laddr.ip for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        except (ProcessLookupError, psutil.Error):
            continue
    return found


@pytest.mark.slow
def test_the_stacks_ray_head_takes_only_clients_with_its_token_and_only_on_loopback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, stack_ray_port=free_port())
    address = f"127.0.0.1:{settings.stack_ray_port}"
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "ESTEIRA_", "RAY_ADDRESS"))}
    pid = start_ray_head(settings)
    try:
        def head_up() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", settings.stack_ray_port)) == 0

        wait_for(head_up, 90, "the stack's Ray head", interval=0.5)
        token = stack_ray_token(settings)
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
        assert wait_for(lambda: _listening(pid), 30, "listening sockets") <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

        # No token (and a home of its own, so no ~/.ray/auth_token): refused.
        stranger = _client(address, "ray", {**plain, "HOME": str(tmp_path), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        assert stranger.returncode == 3 and "REFUSED" in stranger.stdout, stranger.stderr[-2000:]
        assert "Authentication token is missing or incorrect" in stranger.stderr
        # esteira's own client, told only where the stack lives: ensure_ray finds the token under ESTEIRA_HOME.
        ours = _client(address, "esteira", {**plain, "HOME": str(tmp_path), "ESTEIRA_HOME": str(home),
                                            "ESTEIRA_STACK_RAY_PORT": str(settings.stack_ray_port)})
        assert ours.returncode == 0 and "CONNECTED 42" in ours.stdout, ours.stderr[-2000:]
    finally:
        stop_ray_head(pid)
        shutil.rmtree(ray_temp_dir(settings), ignore_errors=True)
    assert stack_ray_token(settings).read_text() == token.read_text()  # kept for the next start


REPLICA = r"""
import sys
import ray
from ray import serve
from gateway.deployment import build

ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "0.0.0.0", "port": int(sys.argv[1])})
try:
    serve.run(build({"log_inference": False, "feast_lookup": False}), name="esteira", route_prefix="/")
    print("DEPLOYED")
except RuntimeError:
    print("REFUSED", serve.status().applications["esteira"].deployments["esteira-gateway"].message)
finally:
    serve.shutdown()
    ray.shutdown()
"""


@pytest.mark.slow
def test_a_replica_behind_a_wildcard_host_without_tokens_refuses_to_serve(tmp_path: Path) -> None:
    """The ``serve deploy gateway/serve_config.yaml`` path: the builder, Serve on 0.0.0.0, nodes without tokens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESTEIRA_", "RAY_ADDRESS"))}
    env.update({"ESTEIRA_HOME": str(tmp_path / "home"), "HOME": str(tmp_path), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"})
    done = subprocess.run([sys.executable, "-c", REPLICA, str(free_port())], env=env, cwd=ESTEIRA_ROOT,
                          capture_output=True, text=True, timeout=240, check=False)
    assert "REFUSED" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert "would listen on 0.0.0.0 with its predict and admin routes open" in done.stdout
