"""The output folder is ours alone, against the real sandbox: two runs never write one file,
links are never written through, "verified" is about the bytes on disk, nothing changes before
"yes", and a damaged journal is one clear error that ``verify --repair`` mends.

Every test asserts the bytes: the object's at each final path, and the untouched bytes of
whatever lay outside the output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ego4d_dl.events import Event, IntegrityFailed
from ego4d_dl.sandbox import Sandbox, SeededRelease, fake_bytes
from tests.support.cli import COMMAND, cli_process
from tests.support.scenario import download_args, journal_state
from tests.support.seed import MIB, Dataset, SourceFile, md5_hex, seed_dataset, unique_name

__all__: list[str] = []


def tree_hash(root: Path) -> dict[str, tuple[str, int, str]]:
    """Everything under ``root``: kind, mode and content (or link target) of every entry."""
    out: dict[str, tuple[str, int, str]] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", st.st_mode, str(path.readlink()))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, "")
            else:
                out[rel] = ("file", st.st_mode, md5_hex(path.read_bytes()))
    return out


@pytest.fixture
def dataset(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    return seed_dataset(
        sandbox,
        unique_name("own"),
        [
            SourceFile(
                name="big.bin",
                data=fake_bytes(unique_name("big"), 12 * MIB + 7),
                parts=(5 * MIB, 5 * MIB, 2 * MIB + 7),
            ),
            SourceFile(name="mid.bin", data=fake_bytes(unique_name("mid"), 2 * MIB + 1)),
            SourceFile(name="a.json", data=fake_bytes(unique_name("a"), 4000)),
            SourceFile(name="b.json", data=fake_bytes(unique_name("b"), 300)),
        ],
    )


def _sources(out: Path, dataset: Dataset) -> dict[str, bytes]:
    return {str(dataset.dest(out, n).relative_to(out)): f.data for n, f in dataset.files.items()}


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_part(dest: Path, min_bytes: int = 1, timeout_s: float = 30) -> None:
    """Until the download of ``dest`` is under way (its part file exists)."""
    part = dest.with_name(dest.name + ".part")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if part.exists() and part.stat().st_blocks * 512 >= min_bytes:
            return
        time.sleep(0.02)
    raise AssertionError(f"{part} never appeared")


# --- two runs, one folder -------------------------------------------------------------------


def test_overlapping_runs_are_refused_and_the_first_ends_byte_exact(
    sandbox: Sandbox, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """An unsharded run, then ``--shard 1/1`` and ``--shard 1/2`` on the same folder while it
    is mid-transfer: both refused with a message that says what runs and what to do; what the
    first run journaled is the object's bytes, and it finishes byte-exact."""
    out = tmp_path / "out"
    args = download_args(out, dataset.name, sandbox.endpoint_url, "--json")
    first = _start([*args, "--max-bandwidth", "200KB/s"], aws_env)
    try:
        _wait_for_part(dataset.dest(out, "big.bin"))
        for shard in ("1/1", "1/2"):
            late = cli_process(
                *download_args(out, dataset.name, sandbox.endpoint_url, "--shard", shard),
                env=aws_env,
                clean_env=True,
            )
            assert first.poll() is None, "the first run ended too soon to test anything"
            assert late.code == 2, late.stderr
            line = late.error_line()
            assert "without --shard is writing into" in line and f"pid {first.pid}" in line
            assert "split the work" in line  # how to do it right next time
        plan = cli_process(*args, "--dry-run", env=aws_env, clean_env=True)
        assert plan.code == 0, plan.stderr  # looking is always allowed
        assert "its latest progress may not be shown yet" in plan.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr
    journal_state(out, _sources(out, dataset))  # every journaled byte is the object's
    finish = cli_process(*args, env=aws_env, clean_env=True)
    assert finish.code == 0, finish.stderr
    dataset.check_complete(out)
    state = journal_state(out, _sources(out, dataset))
    assert sorted(state.complete) == sorted(_sources(out, dataset))


def test_same_n_shards_run_side_by_side_other_runs_wait(
    sandbox: Sandbox, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = download_args(out, dataset.name, sandbox.endpoint_url)
    shard_of_big = next(
        k for k in (1, 2)
        if cli_process(
            *args, "--shard", f"{k}/2", "--dry-run", "--json", env=aws_env, clean_env=True
        ).stdout.count("big.bin") > 0
    )  # fmt: skip
    running = _start([*args, "--shard", f"{shard_of_big}/2", "--max-bandwidth", "200KB/s"], aws_env)
    try:
        _wait_for_part(dataset.dest(out, "big.bin"))
        refused = cli_process(*args, "--shard", f"{shard_of_big}/2", env=aws_env, clean_env=True)
        assert refused.code == 2 and "already running" in refused.error_line()
        for other in (["--shard", "1/3"], ["--shard", "1/1"], []):
            refused = cli_process(*args, *other, env=aws_env, clean_env=True)
            assert refused.code == 2 and "--shard K/2" in refused.error_line()
        beside = cli_process(*args, "--shard", f"{3 - shard_of_big}/2", env=aws_env, clean_env=True)
        assert beside.code == 0, beside.stderr
        assert running.poll() is None, "the first shard ended too soon to test anything"
    finally:
        running.send_signal(signal.SIGINT)
        _, stderr = running.communicate(timeout=60)
    assert running.returncode == 130, stderr
    finish = cli_process(*args, "--shard", f"{shard_of_big}/2", env=aws_env, clean_env=True)
    assert finish.code == 0, finish.stderr
    dataset.check_complete(out)


# --- links are never written through --------------------------------------------------------


def test_planted_links_are_replaced_and_their_targets_untouched(
    sandbox: Sandbox, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {
        name: outside / name for name in ("part-sym", "part-hard", "final-sym", "final-hard")
    }
    for name, path in victims.items():
        # The hard-linked one has the object's size: a size check alone would adopt it.
        size = len(dataset.files["mid.bin"].data) if name == "final-hard" else 1000
        path.write_bytes(fake_bytes(f"victim/{name}", size))
    before = {p: p.read_bytes() for p in victims.values()}
    folder = dataset.folder(out)
    folder.mkdir(parents=True)
    (folder / "big.bin.part").symlink_to(victims["part-sym"])
    os.link(victims["part-hard"], folder / "a.json.part")
    (folder / "b.json").symlink_to(victims["final-sym"])
    os.link(victims["final-hard"], folder / "mid.bin")
    journal = out / ".ego4d-dl"
    journal.mkdir()
    (journal / "journal.sqlite").symlink_to(outside / "not-a-journal")
    (outside / "not-a-journal").write_bytes(b"keep me")
    (journal / "runs.lock").symlink_to(outside / "not-a-lock")
    (outside / "not-a-lock").write_bytes(b"keep me too")

    plan = cli_process(
        *download_args(out, dataset.name, sandbox.endpoint_url),
        "--dry-run",
        "--json",
        env=aws_env,
        clean_env=True,
    )
    assert plan.code == 0, plan.stderr
    notes = {
        Path(f["destination"]).name: f["note"]
        for f in json.loads(plan.stdout)["datasets"][0]["files"]
    }
    assert "never written through" in notes["b.json"]
    assert "hard link" in notes["mid.bin"]

    ran = cli_process(
        *download_args(out, dataset.name, sandbox.endpoint_url), env=aws_env, clean_env=True
    )
    assert ran.code == 0, ran.stderr
    assert "replaced by a file of ego4d-dl's own" in ran.stderr
    dataset.check_complete(out)
    for path in (folder / "b.json", folder / "mid.bin"):
        assert not path.is_symlink() and path.stat().st_nlink == 1
    assert {p: p.read_bytes() for p in victims.values()} == before
    assert (outside / "not-a-journal").read_bytes() == b"keep me"
    assert (outside / "not-a-lock").read_bytes() == b"keep me too"
    assert not (journal / "journal.sqlite").is_symlink()


def test_a_dataset_folder_linked_to_another_disk_keeps_working(
    sandbox: Sandbox, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    elsewhere = tmp_path / "bigdisk" / dataset.name
    elsewhere.mkdir(parents=True)
    dataset.folder(out).parent.mkdir(parents=True)
    dataset.folder(out).symlink_to(elsewhere)
    ran = cli_process(
        *download_args(out, dataset.name, sandbox.endpoint_url, "--json"),
        env=aws_env,
        clean_env=True,
    )
    assert ran.code == 0, ran.stderr
    dataset.check_complete(out)
    assert {p.name for p in elsewhere.iterdir()} >= set(dataset.files)
    again = cli_process(
        *download_args(out, dataset.name, sandbox.endpoint_url, "--json"),
        env=aws_env,
        clean_env=True,
    )
    assert again.code == 0 and again.summary["bytes_fetched"] == 0


# --- verified means on disk -----------------------------------------------------------------


def test_a_part_replaced_while_it_is_written_is_never_renamed_into_place(
    sandbox: Sandbox, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """Another process swaps the .part for a file of zeros mid-transfer (as an unlocked rival
    would): the run's digests came from the network, so they prove nothing about that file;
    it is read back from disk, fails, and the file is fetched again, right."""
    out = tmp_path / "out"
    dest = dataset.dest(out, "big.bin")
    swapped: list[bool] = []

    def swap(event: Event) -> None:
        if swapped or getattr(event, "key", "") != dataset.key("big.bin"):
            return
        part = dest.with_name(dest.name + ".part")
        if type(event).__name__ == "BytesReceived" and part.exists():
            part.rename(part.with_name("stolen"))
            part.write_bytes(b"\0" * len(dataset.files["big.bin"].data))
            swapped.append(True)

    from ego4d_dl.config import Endpoint, Options
    from ego4d_dl.downloading import run_download
    from ego4d_dl.engine import EngineSettings

    events: list[Event] = []

    def sink(event: Event) -> None:
        events.append(event)
        swap(event)

    async def yes(_: object) -> bool:
        return True

    import asyncio

    options = Options(
        output_directory=out,
        version="v2_1",
        datasets=(dataset.name,),
        endpoint=Endpoint(url=sandbox.endpoint_url, region="us-east-1"),
        metadata=False,
        assume_yes=True,
    )
    result = asyncio.run(
        run_download(options, sink=sink, confirm=yes, settings=EngineSettings(concurrency=4))
    )
    assert swapped and result.summary is not None and result.summary.ok, result.summary
    assert any(isinstance(e, IntegrityFailed) and "reading it back" in e.reason for e in events)
    assert result.summary.restarts == 1
    dataset.check_complete(out)
    assert md5_hex((dest.with_name("stolen")).read_bytes()) != md5_hex(b"\0")  # left alone


# --- nothing changes before "yes" -----------------------------------------------------------


def _interrupted_download(
    out: Path, dataset: Dataset, sandbox: Sandbox, env: dict[str, str]
) -> None:
    """A run stopped mid-transfer: part files, a journal, saved manifests."""
    run = _start(
        download_args(out, dataset.name, sandbox.endpoint_url, "--max-bandwidth", "4MB/s"), env
    )
    _wait_for_part(dataset.dest(out, "big.bin"), min_bytes=2 * MIB)
    time.sleep(0.6)  # past a journal commit
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=60)
    assert run.returncode == 130


def _answer_prompt(args: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """Run ``args`` with a terminal on stdin; answer its question with ``answer``."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*COMMAND, *args], env={**os.environ, **env}, stdin=secondary, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, close_fds=True,
    )  # fmt: skip
    os.close(secondary)
    try:
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 60
        while b"[Y/n]" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stderr.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
        assert b"[Y/n]" in seen, seen.decode(errors="replace")
        os.write(main, answer)
        _, rest = proc.communicate(timeout=60)
        return proc.returncode, (seen + rest).decode(errors="replace")
    finally:
        os.close(main)


def test_a_declined_prompt_and_a_dry_run_change_nothing(
    sandbox: Sandbox, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    _interrupted_download(out, dataset, sandbox, aws_env)
    folder = dataset.folder(out)
    # What a run would clean up, rewrite or adopt if it went ahead.
    (folder / "a.json.0123abcd").write_bytes(b"the original CLI's leftover")
    (folder / "manifest.csv").write_bytes(b"an old manifest")
    adoptable = dataset.dest(out, "mid.bin")
    adoptable.write_bytes(dataset.files["mid.bin"].data)
    before = tree_hash(out)
    assert any(name.endswith(".part") for name in before)

    args = [a for a in download_args(out, dataset.name, sandbox.endpoint_url) if a != "--yes"]
    code, text = _answer_prompt(args, aws_env, b"n\n")
    assert "Start the download?" in text and code in (0, 1), text
    assert tree_hash(out) == before
    dry = cli_process(*args, "--dry-run", env=aws_env, clean_env=True)
    assert dry.code == 0, dry.stderr
    assert tree_hash(out) == before
    # A folder that does not exist yet is not created by a "no" either.
    fresh = tmp_path / "fresh"
    args = [a for a in download_args(fresh, dataset.name, sandbox.endpoint_url) if a != "--yes"]
    code, text = _answer_prompt(args, aws_env, b"n\n")
    assert not fresh.exists(), text

    # And a "yes" then does all of it.
    ran = cli_process(
        *download_args(out, dataset.name, sandbox.endpoint_url, "--json"),
        env=aws_env,
        clean_env=True,
    )
    assert ran.code == 0, ran.stderr
    dataset.check_complete(out)
    assert not (folder / "a.json.0123abcd").exists()
    assert (folder / "manifest.csv").read_bytes() != b"an old manifest"
    adopted = [
        e for e in ran.events if e["event"] == "FileSkipped" and e["reason"].startswith("adopted")
    ]
    assert [Path(e["dest"]).name for e in adopted] == ["mid.bin"]


def test_in_process_decline_changes_nothing(
    sandbox: Sandbox, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """The library's own contract: ``run_download`` touches nothing when ``confirm`` says no."""
    out = tmp_path / "out"
    _interrupted_download(out, dataset, sandbox, aws_env)
    before = tree_hash(out)
    import asyncio

    from ego4d_dl.downloading import run_download
    from tests.support.scenario import options_for

    async def no(_: object) -> bool:
        return False

    result = asyncio.run(
        run_download(
            options_for(out, dataset.name, sandbox.endpoint_url), sink=lambda e: None, confirm=no
        )
    )
    assert result.declined and result.summary is None
    assert tree_hash(out) == before


# --- a damaged journal ----------------------------------------------------------------------


def _damage_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_garbage(path: Path) -> None:
    path.write_bytes(hashlib.sha256(b"not sqlite").digest() * 512)


def _damage_newer(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_garbage, _damage_newer])
def test_a_damaged_journal_is_one_clear_error_and_verify_repair_rebuilds_it(
    sandbox: Sandbox, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path, damage: object
) -> None:
    out = tmp_path / "out"
    args = download_args(out, dataset.name, sandbox.endpoint_url, "--json")
    assert cli_process(*args, env=aws_env, clean_env=True).code == 0
    journal = out / ".ego4d-dl" / "journal.sqlite"
    damage(journal)  # type: ignore[operator]
    before = tree_hash(out)

    broken = cli_process(*args, env=aws_env, clean_env=True)
    assert broken.code == 2, broken.stderr
    line = broken.error_line()
    assert str(journal) in line and "verify --repair" in line
    assert tree_hash(out) == before  # refused before touching anything

    repair = cli_process(
        "verify", "--repair", "-o", str(out), "--datasets", dataset.name,
        "--endpoint-url", sandbox.endpoint_url, "--no-metadata", env=aws_env, clean_env=True,
    )  # fmt: skip
    assert repair.code == 0, repair.stdout + repair.stderr
    assert "rebuilt" in repair.stderr
    assert list((out / ".ego4d-dl").glob("journal.sqlite.damaged-*"))  # kept, not deleted
    again = cli_process(*args, env=aws_env, clean_env=True)
    assert again.code == 0, again.stderr
    assert again.summary["bytes_fetched"] == 0 and again.summary["skipped"] == len(dataset.files)
    dataset.check_complete(out)
