"""Shared fixtures: one SeaweedFS sandbox and fake release per session, a clean AWS environment
per test, and a guard that fails any connection beyond loopback.

Every test that uses the sandbox (directly or through a fixture that does) is marked
``sandbox`` here, so ``pytest -m "not sandbox"`` runs the pure tests alone; an unmarked test
that starts SeaweedFS anyway fails."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from ego4d_dl.sandbox import EgoExoSeededRelease, Sandbox, SeededRelease
from tests.support.examples import fast_loop, use_fast_loop

__all__ = ["NonLoopbackConnectionError", "aws_env", "egoexo_release", "release", "sandbox"]

SANDBOX_FIXTURE = "sandbox"

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})


class NonLoopbackConnectionError(RuntimeError):
    """A test tried to reach beyond this machine."""


def _check_loopback(sock: socket.socket, address: Any) -> None:
    if sock.family == socket.AF_UNIX:
        return
    host = address[0] if isinstance(address, tuple) else address
    if host not in _LOOPBACK_HOSTS:
        # Callers such as socket.create_connection only close their socket on OSError.
        sock.close()
        raise NonLoopbackConnectionError(f"tests may only connect to loopback, not {address!r}")


def pytest_configure(config: pytest.Config) -> None:
    """``-m "not sandbox"`` is the fast inner loop: property tests draw a tenth of their
    examples there (tests/support/examples.py); the full suite draws them all."""
    if "not sandbox" in " ".join(str(config.option.markexpr).split()):
        use_fast_loop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``sandbox`` every test whose fixture closure reaches the session's server."""
    for item in items:
        if SANDBOX_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.sandbox)


@pytest.fixture(autouse=True)
def _seaweedfs_only_when_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test not marked ``sandbox`` must not start SeaweedFS (``-m "not sandbox"`` promises a
    run without a server): starting one fails the test. The session's sandbox, set up before
    this fixture, is reached only by marked tests, and refuses to start at all in that run."""
    if request.node.get_closest_marker("sandbox") is not None:
        yield
        return

    def refuse(self: Sandbox, *args: object, **kwargs: object) -> None:
        pytest.fail(f"{request.node.nodeid} starts SeaweedFS but is not marked sandbox")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Sandbox, "_launch", refuse)
        yield


@pytest.fixture(scope="session", autouse=True)
def _loopback_only() -> Iterator[None]:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        _check_loopback(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check_loopback(self, address)
        return real_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        yield


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A running sandbox shared by the session; stopped at its end, pass or fail."""
    if fast_loop():
        pytest.fail('the sandbox was asked for in a -m "not sandbox" run: mark the test sandbox')
    with Sandbox() as running:
        yield running


@pytest.fixture(scope="session")
def release(sandbox: Sandbox) -> SeededRelease:
    """The default fake release, seeded once into the session's sandbox."""
    return sandbox.seed_release()


@pytest.fixture(scope="session")
def egoexo_release(sandbox: Sandbox) -> EgoExoSeededRelease:
    """The fake Ego-Exo4D release, seeded into the session's sandbox only if a test asks."""
    return sandbox.seed_egoexo_release()


@pytest.fixture
def aws_env(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The researcher's credentials and nothing else from the developer's AWS or proxy setup.

    The AWS files live in a folder of their own, so ``tmp_path`` stays empty for the test.
    """
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in _PROXY_VARIABLES:
            monkeypatch.delenv(name)
    folder = tmp_path_factory.mktemp("aws")
    credentials = folder / "credentials"
    config = folder / "config"
    credentials.write_text("", encoding="utf-8")
    config.write_text("[default]\n", encoding="utf-8")
    env = {
        **sandbox.env(),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(config),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
