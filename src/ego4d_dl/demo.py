"""``ego4d-dl demo``: a real download from a local S3 sandbox, no credentials needed."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import Credentials, EgoExoChoice, Options, parse_endpoint
from .egoexo_catalog import release_root
from .errors import ConfigError
from .sandbox import ACCESS_KEY_ID, SECRET_ACCESS_KEY, Sandbox, SandboxError

__all__ = ["DemoRelease", "demo_release", "mismatches"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoRelease:
    """A running sandbox's options and the truth to check a download against."""

    options: Options
    expected_md5: dict[str, str]  # relative path -> md5 hex
    endpoint_url: str
    # Stops the server and removes its folder now (idempotent), for a way out that skips
    # the context manager's exit (os._exit on a second Ctrl-C).
    stop: Callable[[], None]


_SANDBOX_KEYS = Credentials(access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)


def _ego4d(
    sandbox: Sandbox, output_directory: Path, concurrency: int
) -> tuple[Options, dict[str, str]]:
    release = sandbox.seed_release()
    options = Options(
        output_directory=output_directory,
        version=release.version,
        datasets=tuple(sorted({f.dataset for f in release.files})),
        credentials=_SANDBOX_KEYS,
        endpoint=parse_endpoint(sandbox.endpoint_url),
        concurrency=concurrency,
        assume_yes=True,
    )
    truth = {f.relpath: f.obj.md5_hex for f in release.files}
    truth["ego4d.json"] = release.metadata.md5_hex
    return options, truth


def _egoexo(
    sandbox: Sandbox, output_directory: Path, concurrency: int
) -> tuple[Options, dict[str, str]]:
    release = sandbox.seed_egoexo_release()
    root = release_root(release.release, release.base_dir)
    options = Options(
        output_directory=output_directory,
        version=release.release,
        datasets=release.parts,
        credentials=_SANDBOX_KEYS,
        endpoint=parse_endpoint(sandbox.endpoint_url),
        concurrency=concurrency,
        assume_yes=True,
        metadata=False,
        egoexo=EgoExoChoice(manifest_bucket=root.bucket, manifest_prefix=root.prefix),
    )
    return options, {f.relative_path: f.obj.md5_hex for f in release.files}


_FAMILIES = {"ego4d": _ego4d, "egoexo": _egoexo}


@contextmanager
def demo_release(
    output_directory: Path, *, concurrency: int, family: str = "ego4d"
) -> Iterator[DemoRelease]:
    """Start and seed a sandbox with a fake release of ``family`` (``ego4d``: about 110 MiB;
    ``egoexo``: Ego-Exo4D, every part, about 13 MiB); stop it (and delete its data) on exit."""
    try:
        sandbox = Sandbox().start()
    except SandboxError as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    try:
        options, truth = _FAMILIES[family](sandbox, output_directory, concurrency)
        yield DemoRelease(
            options=options,
            expected_md5=truth,
            endpoint_url=sandbox.endpoint_url,
            stop=sandbox.stop,
        )
    finally:
        _stop_uninterrupted(sandbox)


def _stop_uninterrupted(sandbox: Sandbox) -> None:
    """``sandbox.stop()`` with SIGINT and SIGTERM held until it is done: a second Ctrl-C
    while the first one unwinds must not cut the removal of its folder short. A signal that
    came meanwhile is raised again right after, as it would have been."""
    held = (signal.SIGINT, signal.SIGTERM)
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: caught.append(signum)) for sig in held}
    try:
        sandbox.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        signal.raise_signal(caught[0])


def mismatches(output_directory: Path, expected_md5: dict[str, str]) -> list[str]:
    """Relative paths whose bytes differ from what the sandbox served (or are missing)."""
    bad = []
    for rel, want in sorted(expected_md5.items()):
        path = output_directory / rel
        try:
            digest = hashlib.md5()
            with path.open("rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
        except OSError:
            bad.append(rel)
            continue
        if digest.hexdigest() != want:
            bad.append(rel)
    return bad
