"""The original ``egoexo`` downloader (PyPI ``ego4d==1.7.3``) as an oracle for Ego-Exo4D.

Three ways to ask it, from the smallest to the whole:

- ``original_filter``: its own ``_manifest_ok`` and ``_path_ok`` over one manifest's text
  (parsed by its own ``manifest_loads``), with flags parsed by its own argument parser;
- ``original_plan``: its whole ``main`` in this process, up to the point where it would look
  at the output directory, with its two I/O seams replaced (the S3 path manager serves
  manifests from memory; ``map_all`` answers the HEADs from given sizes and stops the run when
  it is handed the files to check on disk): which parts it reads, which files it would fetch
  and which it drops for a zero size;
- ``run_original``: the ``egoexo`` command itself against the sandbox (``AWS_ENDPOINT_URL_S3``,
  honoured by botocore, points it there), recording every file it leaves in the output
  directory. ``ORIGINAL_COMMANDS`` are the command lines the tests record, for an end-to-end
  test of ``egoexo-dl`` to compare trees with.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import hashlib
import importlib
import io
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ego4d_dl.egoexo_catalog import DEFAULT_BASE_DIR, DEFAULT_RELEASE, expand_parts, release_root
from ego4d_dl.egoexo_manifest import parse_entries
from ego4d_dl.egoexo_select import EgoExoSelection, PartSelection, select_part
from ego4d_dl.sandbox import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    EgoExoSeededRelease,
    Sandbox,
)
from tests.support.cli import ORIGINAL_PYTHON

__all__ = [
    "ORIGINAL_COMMANDS",
    "ORIGINAL_PYTHON",
    "Flags",
    "OriginalCommand",
    "OriginalPlan",
    "OriginalRun",
    "original_filter",
    "original_manifest_loads",
    "original_plan",
    "ours",
    "run_original",
    "run_original_commands",
    "write_profile",
]

_MODULE = "ego4d.internal.download.cli"


@dataclass(frozen=True)
class Flags:
    """One selection, given both ways: as the original's command line and as our values.

    ``None`` is "flag not given"; a tuple is the values after the flag, in order.
    """

    parts: tuple[str, ...] | None = None
    uids: tuple[str, ...] | None = None
    benchmarks: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    views: tuple[str, ...] | None = None
    universities: tuple[str, ...] | None = None

    def argv(self) -> list[str]:
        """The original's flags (``-u`` for universities, as its README writes it)."""
        out: list[str] = []
        for flag, values in (
            ("--parts", self.parts),
            ("--uids", self.uids),
            ("--benchmarks", self.benchmarks),
            ("--splits", self.splits),
            ("--views", self.views),
            ("-u", self.universities),
        ):
            if values is not None:
                out += [flag, *values]
        return out

    def selection(self) -> EgoExoSelection:
        """Our selection for the same flags."""

        def given(values: tuple[str, ...] | None) -> frozenset[str] | None:
            return None if values is None else frozenset(values)

        return EgoExoSelection(
            uids=given(self.uids),
            benchmarks=given(self.benchmarks),
            splits=given(self.splits),
            views=given(self.views),
            universities=given(self.universities),
        )

    def __str__(self) -> str:
        return " ".join(self.argv()) or "(no flags)"


def ours(manifests: Mapping[str, bytes], flags: Flags) -> list[PartSelection]:
    """Our parts, parse and selection for ``flags`` over ``{part: manifest.json bytes}``."""
    selection = flags.selection()
    parts = expand_parts(flags.parts or ())
    out = []
    for part in parts.parts:
        text = io.TextIOWrapper(io.BytesIO(manifests[part]), encoding="utf-8-sig")
        out.append(select_part(part, parse_entries(text, source=part), selection))
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The original's dependencies (marshmallow via dataclasses-json, iopath) warn about
    # deprecations on import and on every schema they build; not ours to fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _original(name: str) -> Any:
    with _quiet():
        return importlib.import_module(name)


def _original_args(flags: Flags, out_dir: str = "unused") -> argparse.Namespace:
    """Flags parsed by the original's own parser, then turned into sets as its ``main`` does
    first thing (``args.uids = set(args.uids) if ...``, five lines we cannot call)."""
    module = _original(_MODULE)
    parser = module.create_arg_parse(
        script_name="egoexo", release_name=DEFAULT_RELEASE, base_dir=DEFAULT_BASE_DIR
    )
    args: argparse.Namespace = parser.parse_args(["-o", out_dir, *flags.argv()])
    for name in ("uids", "benchmarks", "splits", "views", "universities"):
        value = getattr(args, name)
        setattr(args, name, None if value is None else set(value))
    return args


def original_manifest_loads(manifest_json: str) -> list[Any]:
    """The original's ``manifest_loads``: its ``ManifestEntry`` values (or its exception)."""
    manifest = _original("ego4d.internal.download.manifest")
    with _quiet():
        return list(manifest.manifest_loads(manifest_json))


@functools.lru_cache(maxsize=64)
def _decoded(manifest_json: str) -> tuple[Any, ...]:
    return tuple(original_manifest_loads(manifest_json))


def _manifest_loads_once(manifest_json: str) -> list[Any]:
    """The original's ``manifest_loads``, decoding each text once (a tenth of a second a
    manifest, the most of what ``original_plan`` costs); its ``main`` only reads the values,
    which are copies all the same."""
    return copy.deepcopy(list(_decoded(manifest_json)))


def original_filter(manifest_json: str, flags: Flags) -> list[tuple[str, str]]:
    """``(source_path, relative_path)`` of every path the original's ``_manifest_ok`` and
    ``_path_ok`` admit in one manifest, in its order."""
    module = _original(_MODULE)
    args = _original_args(flags)
    entries = original_manifest_loads(manifest_json)
    return [
        (p.source_path, p.relative_path)
        for m in entries
        if module._manifest_ok(m, args)
        for p in m.paths
        if module._path_ok(p, args)
    ]


@dataclass(frozen=True)
class OriginalPlan:
    """What the original's ``main`` decided: ``parts_read`` (the manifests it asked for),
    ``fetch`` (``(source_path, relative_path, size)`` of every file it goes on to check on disk
    and download), ``zero_size`` (paths whose HEAD said 0 bytes: dropped with a warning),
    ``exit_code`` when it stopped by itself, and what it printed."""

    parts_read: frozenset[str]
    fetch: tuple[tuple[str, str, int], ...]
    zero_size: tuple[tuple[str, str], ...]
    exit_code: int | None
    printed: str


class _Stop(Exception):
    """Raised from the ``map_all`` seam once the original has decided what to fetch."""


@dataclass
class _Seams:
    """The original's I/O, answered from memory."""

    manifests: Mapping[str, str]  # manifest URL -> text
    sizes: Mapping[str, int]  # source_path -> size on "S3"
    asked: set[str] = field(default_factory=set)
    fetch: list[tuple[str, str, int]] = field(default_factory=list)
    zero_size: list[tuple[str, str]] = field(default_factory=list)

    def exists(self, path: str) -> bool:
        self.asked.add(path)
        return path in self.manifests

    def open(self, path: str) -> io.StringIO:
        return io.StringIO(self.manifests[path])

    def map_all(self, values: list[Any], map_fn: Callable[..., Any], **_: Any) -> Any:
        if map_fn.__name__ == "get_size":
            found = [(p, self.sizes[p.source_path]) for p in values]
            self.zero_size += [(p.source_path, p.relative_path) for p, n in found if n == 0]
            return found, []
        self.fetch = [(p.source_path, p.relative_path, n) for p, n in values]
        raise _Stop


def original_plan(
    manifests: Mapping[str, bytes],
    flags: Flags,
    *,
    sizes: Mapping[str, int],
    out_dir: Path,
    release: str = DEFAULT_RELEASE,
) -> OriginalPlan:
    """Run the original's ``main`` for ``flags`` over ``{part: manifest.json bytes}`` (parts
    not given do not exist), ``sizes`` answering its HEADs. ``out_dir`` is created by it."""
    module = _original(_MODULE)
    root = release_root(release)
    seams = _Seams(
        manifests={
            f"{root.url}{part}/manifest.json": data.decode() for part, data in manifests.items()
        },
        sizes=sizes,
    )
    args = _original_args(flags, str(out_dir))
    args.release = release
    printed = io.StringIO()
    exit_code: int | None = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(printed))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))  # tqdm's bars
        stack.enter_context(_quiet())
        patch = stack.enter_context(_patched(module))
        patch("_create_pathmgr", lambda _profile: seams)
        patch("map_all", seams.map_all)
        patch("manifest_loads", _manifest_loads_once)
        try:
            module.main(args)
        except _Stop:
            pass
        except SystemExit as exc:
            exit_code = int(exc.code or 0)
    prefix = root.url
    return OriginalPlan(
        parts_read=frozenset(
            p.removeprefix(prefix).removesuffix("/manifest.json") for p in seams.asked
        ),
        fetch=tuple(seams.fetch),
        zero_size=tuple(seams.zero_size),
        exit_code=exit_code,
        printed=printed.getvalue(),
    )


@contextlib.contextmanager
def _patched(module: Any) -> Iterator[Callable[[str, Any], None]]:
    saved: dict[str, Any] = {}

    def patch(name: str, value: Any) -> None:
        saved.setdefault(name, getattr(module, name))
        setattr(module, name, value)

    try:
        yield patch
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


# ---------------------------------------------------------------------------------------------
# The egoexo command itself, against the sandbox


@dataclass(frozen=True)
class OriginalCommand:
    """A command line for the original, and what to put in its output directory first:
    ``before`` maps relative paths to file contents (``None``: a symlink to ``outside.txt``,
    beside the output directory)."""

    flags: Flags
    extra: tuple[str, ...] = ("-y",)
    stdin: str | None = None
    before: Mapping[str, bytes | None] = field(default_factory=dict)


@dataclass(frozen=True)
class OriginalRun:
    """What one run of the original left: its exit code, what it printed (stdout then
    stderr), its output directory ``out`` and ``tree``: ``{relative path: md5}`` of every
    regular file there afterwards (symlinks as ``"-> target"``)."""

    command: OriginalCommand
    returncode: int
    output: str
    out: Path
    tree: dict[str, str]


# Command lines the tests run the original with; names are stable for other tests to use.
ORIGINAL_COMMANDS: dict[str, Callable[[EgoExoSeededRelease], OriginalCommand]] = {
    "default": lambda r: OriginalCommand(flags=Flags()),
    "all": lambda r: OriginalCommand(flags=Flags(parts=("all",))),
    "takes_captures_ego_cmu": lambda r: OriginalCommand(
        flags=Flags(parts=("takes", "captures"), views=("ego",), universities=("cmu",))
    ),
    "all_keystep_train": lambda r: OriginalCommand(
        flags=Flags(parts=("all",), benchmarks=("keystep",), splits=("train",))
    ),
    "uids": lambda r: OriginalCommand(
        flags=Flags(
            parts=("annotations", "expert_commentary", "takes"),
            uids=(r.for_part("takes")[0].uid, f"{r.for_part('takes')[0].uid}_expert_a", "keystep"),
        )
    ),
    "unknown_benchmark": lambda r: OriginalCommand(
        flags=Flags(parts=("default", "take_vrs"), benchmarks=("bogus", "relations"))
    ),
    "unknown_part": lambda r: OriginalCommand(flags=Flags(parts=("takes", "bogus_part"))),
    # Keys the server refuses (403 on every manifest): the original reads that as "missing".
    "refused_keys": lambda r: OriginalCommand(
        flags=Flags(parts=("takes",)), extra=("-y", "--s3_profile", "refused")
    ),
    # --delete with -dy: the original still asks (its answer is ignored), so stdin answers.
    "delete": lambda r: OriginalCommand(
        flags=Flags(parts=("annotations",)),
        extra=("-y", "-d", "-dy"),
        stdin="n\n",
        before={
            "notes.txt": b"mine",
            "takes/cmu_bike01_2/aria01.vrs": b"a file of another part",
            ".ego4d-dl/journal.sqlite": b"another tool's state",
            "annotations/keystep_train.json.F14eE010": b"a leftover temporary file",
            "annotations/link.json": None,
        },
    ),
}


def write_profile(home: Path) -> None:
    """A ``[default]`` profile with the sandbox's keys, as ``aws configure`` writes it, and a
    ``[refused]`` one whose secret is wrong."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "credentials").write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY_ID}\n"
        f"aws_secret_access_key = {SECRET_ACCESS_KEY}\n"
        f"[refused]\naws_access_key_id = {ACCESS_KEY_ID}\n"
        "aws_secret_access_key = not-the-secret\n",
        encoding="utf-8",
    )
    (home / "config").write_text(
        "[default]\nregion = us-east-1\n[profile refused]\nregion = us-east-1\n",
        encoding="utf-8",
    )


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = f"-> {path.readlink()}"
        elif path.is_file():
            out[rel] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def run_original(
    sandbox: Sandbox, home: Path, work: Path, command: OriginalCommand, *, timeout_s: float = 240
) -> OriginalRun:
    """Run ``egoexo`` (the original's console script, as a module) into ``work/out``."""
    out = work / "out"
    out.mkdir(parents=True)
    for rel, data in command.before.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            target = work / "outside.txt"
            target.write_bytes(b"outside the output directory")
            path.symlink_to(target)
        else:
            path.write_bytes(data)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_ENDPOINT_URL_S3": sandbox.endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    argv = ["-o", str(out), *command.flags.argv(), *command.extra]
    done = subprocess.run(
        [str(ORIGINAL_PYTHON), "-m", "ego4d.egoexo.download.cli", *argv],
        env=env, input=command.stdin, capture_output=True, text=True, timeout=timeout_s,
        check=False,
    )  # fmt: skip
    return OriginalRun(
        command=command,
        returncode=done.returncode,
        output=done.stdout + done.stderr,
        out=out,
        tree=_tree(out),
    )


def run_original_commands(
    sandbox: Sandbox,
    release: EgoExoSeededRelease,
    root: Path,
    names: Sequence[str] = tuple(ORIGINAL_COMMANDS),
) -> dict[str, OriginalRun]:
    """Every named command of ``ORIGINAL_COMMANDS``, run together (they mostly wait on the
    server), each in ``root/<name>``; the runs' folders are kept for inspection."""
    home = root / "home"
    write_profile(home)

    def run(name: str) -> tuple[str, OriginalRun]:
        work = root / name
        shutil.rmtree(work, ignore_errors=True)
        return name, run_original(sandbox, home, work, ORIGINAL_COMMANDS[name](release))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, names))
