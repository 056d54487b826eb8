"""The pieces that make the original CLI's command lines and files work, one by one (issue 14):
argparse habits, the credentials note, the prompt on a pipe, manifest.ver, release names."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ego4d_dl.catalog import release_names
from ego4d_dl.cli.console import credentials_note
from ego4d_dl.cli.prompt import LineReader
from ego4d_dl.cli.seed import seed_args
from ego4d_dl.config import Credentials, profile_key_id
from ego4d_dl.versionfile import VersionEntry, format_entries, merge_entries, read_entries

# What the download command knows (its own spellings): enough to judge abbreviations.
KNOWN = frozenset(
    {
        "--output-directory", "--output_directory", "-o", "--datasets", "--dataset",
        "--benchmarks", "--version", "--verify", "--aws_profile_name", "--aws-profile-name",
        "--universities", "--video_uids", "--video-uids", "--video_uid_file", "--config",
        "--config_path", "--concurrency", "--yes", "-y", "--metadata", "--no-metadata",
        "--manifest", "--manifest-override-path", "--list-datasets", "--skip-s3-checks",
        "--bypass-existing", "--dry-run", "--no-space-check", "--help",
    }
)  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # argparse's unambiguous abbreviations of the original's options (case 9)
        (
            ["--output", "o", "--data", "clips", "--bench", "EM", "--univ", "cmu", "--ver", "v2",
             "--aws", "p", "--y"],
            ["--output_directory", "o", "--datasets", "clips", "--benchmarks", "EM",
             "--universities", "cmu", "--version", "v2", "--aws_profile_name", "p", "--yes"],
        ),
        (["--con=c.json", "--list"], ["--config_path=c.json", "--list-datasets"]),
        (["--skip", "--bypass", "--no"],
         ["--skip-s3-checks", "--bypass-existing", "--no-metadata"]),
        # ours stay as they are, even where they are prefixes of the original's
        (["--dataset", "a", "b", "--verify", "size", "--config", "c"],
         ["--dataset", "a", "--dataset", "b", "--verify", "size", "--config", "c"]),
        # --benchmarks with no value is no filter (case 2); so is --annotations, always
        (["--benchmarks", "-y", "--datasets", "a"], ["-y", "--datasets", "a"]),
        (["--datasets", "a", "--benchmarks"], ["--datasets", "a"]),
        (["--annotations", "x", "y", "-y"], ["-y"]),
        (["--annotations=x", "-y"], ["-y"]),
        # after "--" nothing is an option
        (["--datasets", "a", "--", "--bench"], ["--datasets", "a", "--", "--bench"]),
    ],
)  # fmt: skip
def test_argparse_habits(argv: list[str], expected: list[str]) -> None:
    assert seed_args(argv, KNOWN)[0] == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--datasets", "-y"], "argument --datasets: expected at least one argument"),
        (["--universities"], "argument --universities: expected at least one argument"),
        (["--video_uids", "--yes"], "argument --video_uids: expected at least one argument"),
        (["--vid", "x"], "ambiguous option: --vid could match --video_uids, --video_uid_file"),
        (["--m"], "ambiguous option: --m could match --metadata, --manifest, --manifest-over"),
    ],
)
def test_what_argparse_refused_is_refused_in_its_words(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seed_args(argv, KNOWN)


def test_notes_for_the_harmless_differences() -> None:
    out, notes = seed_args(["--datasets", "a", "b", "--datasets", "c", "--annotations"], KNOWN)
    assert out == ["--datasets", "a", "--datasets", "b", "--datasets", "c"]
    assert notes == [
        "--annotations does nothing, as in the original CLI; annotations are a dataset: "
        "--datasets annotations",
        "--datasets given 2 times: ego4d-dl takes every value (a b c); the original CLI took "
        "only the last (c): give --datasets once for that",
    ]
    assert seed_args(["--datasets", "a", "b"], KNOWN)[1] == []


def _aws_files(tmp_path: Path, credentials: str, config: str = "") -> dict[str, str]:
    (tmp_path / "credentials").write_text(credentials)
    (tmp_path / "config").write_text(config)
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
    }


def test_the_keys_of_a_profile_are_read_from_the_files(tmp_path: Path) -> None:
    env = _aws_files(
        tmp_path,
        "[default]\naws_access_key_id = AKIADEFAULT000000001\naws_secret_access_key = s\n",
        "[profile ego4d]\naws_access_key_id = AKIAEGO4D00000000002\n",
    )
    assert profile_key_id("default", env) == "AKIADEFAULT000000001"
    assert profile_key_id("ego4d", env) == "AKIAEGO4D00000000002"
    assert profile_key_id("nobody", env) is None
    (tmp_path / "credentials").write_bytes(b"\xff\xfe not ini")
    assert profile_key_id("default", env) is None


def test_credentials_note_says_which_keys_and_why_when_they_differ(tmp_path: Path) -> None:
    files = _aws_files(
        tmp_path,
        "[default]\naws_access_key_id = AKIADEFAULT000000001\naws_secret_access_key = s\n"
        "[other]\naws_access_key_id = AKIAOTHER0000000003\naws_secret_access_key = s\n",
    )
    chain = Credentials()
    stray = {**files, "AWS_ACCESS_KEY_ID": "AKIASTRAY0000000009", "AWS_SECRET_ACCESS_KEY": "x"}
    assert credentials_note(chain, stray) == (
        "using key AKIA...0009 from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
        "environment, as the standard AWS chain does; the original ego4d CLI ignores those and "
        "reads the [default] profile (key AKIA...0001): pass --aws_profile_name default for "
        "its keys"
    )
    note = credentials_note(chain, {**files, "AWS_PROFILE": "other"})
    assert note is not None and note.startswith("using key AKIA...0003 from profile 'other'")
    # Silent where both tools use the same keys, or a profile is named (both read it alike),
    # or [default] has no keys (the original could not run at all).
    same = {**files, "AWS_ACCESS_KEY_ID": "AKIADEFAULT000000001", "AWS_SECRET_ACCESS_KEY": "s"}
    assert credentials_note(chain, same) is None
    assert credentials_note(chain, files) is None
    assert credentials_note(chain, {**files, "AWS_PROFILE": "default"}) is None
    assert credentials_note(Credentials(profile="other"), stray) is None
    (tmp_path / "empty").mkdir()
    empty = _aws_files(tmp_path / "empty", "")
    assert credentials_note(chain, {**stray, **empty}) is None


def _lines(fd: int, n: int) -> list[str | None]:
    async def go() -> list[str | None]:
        reader = LineReader(fd)
        return [await reader.readline() for _ in range(n)]

    return asyncio.run(go())


def test_answers_come_line_by_line_from_a_pipe_a_file_or_nothing(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"maybe\r\ny\nrest")
    os.close(write_end)
    try:
        assert _lines(read_end, 4) == ["maybe\r", "y", "rest", None]
    finally:
        os.close(read_end)
    answers = tmp_path / "answers"
    answers.write_bytes(b"n\n")
    with answers.open("rb") as f:  # epoll cannot wait on a regular file: read directly
        assert _lines(f.fileno(), 2) == ["n", None]
    with Path(os.devnull).open("rb") as f:
        assert _lines(f.fileno(), 1) == [None]


def test_manifest_ver_is_written_as_the_original_writes_it(tmp_path: Path) -> None:
    old = [VersionEntry("u1", "", "u1.mp4"), VersionEntry("u2", "v-old", "b.json")]
    merged = merge_entries(
        old, [VersionEntry("u2", "v-new", "b.json"), VersionEntry("u3", "", "c")]
    )
    # One entry per uid, the newest; sorted by file name, so any split of the work agrees.
    assert merged == [
        VersionEntry("u2", "v-new", "b.json"),
        VersionEntry("u3", "", "c"),
        VersionEntry("u1", "", "u1.mp4"),
    ]
    assert merge_entries(reversed(merged), []) == merged
    assert format_entries(merged) == (
        b"uid,version,filename\r\nu2,v-new,b.json\r\nu3,,c\r\nu1,,u1.mp4\r\n"
    )
    (tmp_path / "manifest.ver").write_bytes(format_entries(merged))
    assert read_entries(tmp_path) == merged
    assert read_entries(tmp_path / "nowhere") == []


def test_release_names_sort_by_number() -> None:
    assert release_names(["public/v2_1/", "public/v10/", "public/v9_10/", "public/v9_2/"]) == (
        "v2_1",
        "v9_2",
        "v9_10",
        "v10",
    )
