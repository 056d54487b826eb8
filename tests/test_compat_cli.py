"""Both CLIs, the same command lines, the sandbox: the original ``ego4d`` (1.7.3) beside ego4d-dl.

Every case is one command line, run once by each CLI into a directory of its own, with the same
environment: a ``[default]`` profile holding the sandbox's keys and ``AWS_ENDPOINT_URL_S3``
pointing at it (botocore honours it, so the original needs no change). The original runs as a
subprocess of its own Python; all its runs start together in a small thread pool when the
module starts (they mostly wait on the server). ego4d-dl runs in this process (a subprocess
where a real pipe on stdin matters).

Where the two are meant to agree (issue 14: the ten cases and a matrix of every selection
flag), the exit codes, the files written (ego4d-dl's journal and manifest.ver aside), the
entries of manifest.ver and the messages both print must match. Where ego4d-dl differs on
purpose (README, "Differences from the original CLI"), the test pins the difference, the note
that names it and, where there is one, the flag that gives the original's way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ego4d_dl.journal import JOURNAL_DIR
from ego4d_dl.sandbox import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    Sandbox,
    SeededRelease,
    later_release_spec,
)
from ego4d_dl.versionfile import read_entries
from tests.support.cli import ORIGINAL_PYTHON, cli, cli_process
from tests.support.seed import put_manifest


@dataclass(frozen=True)
class Releases:
    """The two seeded releases: the default v2_1 and the later v3_1 (versioned buckets)."""

    default: SeededRelease
    later: SeededRelease

    def uid(self, dataset: str, index: int, *, later: bool = False) -> str:
        return (self.later if later else self.default).for_dataset(dataset)[index].uid


@dataclass(frozen=True)
class Place:
    """Where one CLI runs a case: ``out`` is its output directory, ``work`` holds its inputs."""

    work: Path
    releases: Releases

    @property
    def out(self) -> Path:
        return self.work / "out"

    def write(self, name: str, text: str) -> str:
        path = self.work / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    def config(self, **options: object) -> str:
        """A config file of the original's format, its output directory this place's."""
        return self.write("config.json", json.dumps({"output_directory": str(self.out), **options}))


@dataclass(frozen=True)
class Case:
    """One command line (built per place), what is piped to it, extra environment."""

    argv: Callable[[Place], list[str]]
    stdin: str = ""
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """One case's run by either CLI, for comparing them."""

    code: int
    output: str  # stdout and stderr: the original prints most of it on stdout, we on stderr
    out: Path


def _o(p: Place) -> list[str]:
    return ["--output_directory", str(p.out)]


# Small datasets and filters throughout: each case moves a few hundred KiB at most (clips
# 11 MiB once), so the whole module stays well under a minute on two cores.
CASES: dict[str, Case] = {
    # --- the selection matrix, every flag of the original: both must agree ---
    "datasets": Case(lambda p: [*_o(p), "--datasets", "viz", "annotations", "-y"]),
    "video_uids": Case(
        lambda p: [
            *_o(p),
            "--datasets",
            "full_scale",
            "--video_uids",
            p.releases.uid("full_scale", 3),
            p.releases.uid("full_scale", 4),
            "--no-metadata",
            "-y",
        ]
    ),
    "video_uid_file": Case(
        lambda p: [
            *_o(p),
            "--datasets",
            "full_scale",
            "--no-metadata",
            "-y",
            "--video_uid_file",
            p.write(
                "uids.txt",
                f"{p.releases.uid('full_scale', 3)}\n {p.releases.uid('full_scale', 4)} ",
            ),
        ]
    ),
    "universities": Case(
        lambda p: [
            *_o(p),
            "--datasets",
            "full_scale",
            "clips",
            "--universities",
            "bristol",
            "nus",
            "--no-metadata",
            "-y",
        ]
    ),
    "benchmarks": Case(
        lambda p: [
            *_o(p),
            "--datasets",
            "clips",
            "annotations",
            "--benchmarks",
            "EM",
            "AV",
            "--no-metadata",
            "--yes",
        ]
    ),
    "config_file": Case(
        lambda p: [
            "--config_path",
            p.config(
                datasets=["viz", "annotations"],
                benchmarks=["FHO"],
                version="v2_1",
                assume_yes=True,
                metadata=False,
            ),
        ]
    ),
    "config_file_with_flags": Case(
        lambda p: [
            "--config_path",
            p.config(datasets=["annotations"], assume_yes=True),
            "--datasets",
            "viz",
            "--no-metadata",
        ]
    ),
    # case 3: the original's own keys in its config file
    "config_original_keys": Case(
        lambda p: [
            "--config_path",
            p.config(
                datasets=["viz"],
                assume_yes=True,
                bypass_version_check=True,
                annotations=["fho"],
                list_datasets=False,
                manifest_override_path=None,
            ),
        ]
    ),
    # case 4: a release that is neither v1, v2 nor v2_1, found in the bucket; it lands in v3
    # case 5: components/videos is a video dataset: --video_uids applies
    "later_release": Case(
        lambda p: [
            *_o(p),
            "--version",
            "v3_1",
            "--datasets",
            "components/videos",
            "annotations",
            "-y",
        ]
    ),
    "components_videos_uids": Case(
        lambda p: [
            *_o(p),
            "--version",
            "v3_1",
            "--datasets",
            "components/videos",
            "--video_uids",
            p.releases.uid("components/videos", 0, later=True),
            p.releases.uid("components/videos", 2, later=True),
            "-y",
        ]
    ),
    # case 6: --manifest keeps the full_scale manifest as <out>/manifest.csv and goes on
    "manifest": Case(lambda p: [*_o(p), "--datasets", "viz", "--manifest", "-y"]),
    # case 7: --manifest-override-path is read, never written over the release's manifest.csv
    "manifest_override": Case(
        lambda p: [
            *_o(p),
            "--datasets",
            "clips",
            "--no-metadata",
            "-y",
            "--manifest-override-path",
            p.write("mine.csv", _one_clip(p)),
        ]
    ),
    # case 2: --benchmarks with no value is no filter
    "benchmarks_without_value": Case(
        lambda p: [*_o(p), "--datasets", "vq2d_models", "--benchmarks", "-y", "--no-metadata"]
    ),
    # case 9: argparse's abbreviations and the no-op --annotations
    "abbreviations": Case(
        lambda p: [
            "--output",
            str(p.out),
            "--data",
            "clips",
            "--bench",
            "FHO",
            "--univ",
            "utokyo",
            "--ver",
            "v2_1",
            "--aws",
            "default",
            "--annotations",
            "x",
            "--y",
        ]
    ),
    # case 8: answers on a pipe
    "pipe_yes": Case(lambda p: [*_o(p), "--datasets", "viz"], stdin="y\n" * 20),
    "pipe_retry": Case(lambda p: [*_o(p), "--datasets", "viz"], stdin="maybe\n\n"),
    "pipe_no": Case(lambda p: [*_o(p), "--datasets", "viz"], stdin="n\n"),
    "pipe_empty": Case(lambda p: [*_o(p), "--datasets", "viz"], stdin=""),
    # case 1: unknown and filtered-out --video_uids stop both with exit 1
    "unknown_uid": Case(
        lambda p: [*_o(p), "--datasets", "clips", "--video_uids", "not-a-uid", "-y"]
    ),
    "filtered_out_uid": Case(
        lambda p: [
            *_o(p),
            "--datasets",
            "clips",
            "--universities",
            "bristol",
            "--video_uids",
            p.releases.uid("clips", 0),
            "-y",
        ]
    ),
    # --video_uids on file datasets only: ignored by both, with a word
    "uids_on_files": Case(
        lambda p: [*_o(p), "--datasets", "viz", "--video_uids", "abc", "--no-metadata", "-y"]
    ),
    # usage errors of argparse: both exit 2
    "datasets_without_value": Case(lambda p: [*_o(p), "--datasets", "-y"]),
    "ambiguous_abbreviation": Case(lambda p: [*_o(p), "--vid", "x", "-y"]),
    "unknown_university": Case(lambda p: [*_o(p), "--universities", "mit", "-y"]),
    # --list-datasets, from the command line and from a config file
    "list_datasets": Case(lambda p: ["--list-datasets"]),
    "list_datasets_config": Case(lambda p: ["--config_path", p.config(list_datasets=True)]),
    # --- deliberate differences (README table): each is pinned below ---
    "uid_in_one_video_dataset": Case(
        lambda p: [
            *_o(p),
            "--datasets",
            "clips",
            "full_scale",
            "--video_uids",
            p.releases.uid("clips", 1),
            "--no-metadata",
            "-y",
        ]
    ),
    "unknown_release": Case(lambda p: [*_o(p), "--version", "v9", "--datasets", "clips", "-y"]),
    "repeated_list_option": Case(
        lambda p: [*_o(p), "--datasets", "viz", "--datasets", "vq2d_models", "--no-metadata", "-y"]
    ),
    "skip_s3_checks_and_yes": Case(
        lambda p: [
            "--config_path",
            p.config(datasets=["viz"], skip_s3_checks=True, assume_yes=True, metadata=False),
        ]
    ),
    "upper_case_uid": Case(
        lambda p: [
            *_o(p),
            "--datasets",
            "clips",
            "--no-metadata",
            "-y",
            "--video_uids",
            p.releases.uid("clips", 1).upper(),
        ]
    ),
    "no_output_directory": Case(lambda p: ["--datasets", "viz", "-y"]),
    "upper_case_university": Case(
        lambda p: [*_o(p), "--datasets", "clips", "--universities", "UTOKYO", "--no-metadata", "-y"]
    ),
    "override_several_datasets": Case(
        lambda p: [
            *_o(p),
            "--datasets",
            "clips",
            "viz",
            "--no-metadata",
            "-y",
            "--manifest-override-path",
            p.write("mine.csv", _one_clip(p)),
        ]
    ),
    "dataset_not_in_release": Case(lambda p: [*_o(p), "--datasets", "nonexist", "-y"]),
    "missing_object": Case(
        lambda p: [*_o(p), "--datasets", MISSING_DATASET, "--no-metadata", "-y"]
    ),
    # case 10: a stray key in the environment; the [default] profile holds the right one
    "stray_environment_keys": Case(
        lambda p: [*_o(p), "--datasets", "viz", "--no-metadata", "-y"],
        env={"AWS_ACCESS_KEY_ID": "AKIASTRAYKEY00000000", "AWS_SECRET_ACCESS_KEY": "stray"},
    ),
}

# Both must agree on exit code, files and manifest.ver entries.
AGREE = [
    "datasets", "video_uids", "video_uid_file", "universities", "benchmarks", "config_file",
    "config_file_with_flags", "config_original_keys", "later_release", "components_videos_uids",
    "manifest", "manifest_override", "benchmarks_without_value", "abbreviations", "pipe_yes",
    "pipe_retry", "pipe_no", "pipe_empty", "unknown_uid", "filtered_out_uid", "uids_on_files",
    "datasets_without_value", "ambiguous_abbreviation", "unknown_university",
]  # fmt: skip


def _one_clip(p: Place) -> str:
    clip = p.releases.default.for_dataset("clips")[2]
    return (
        "video_uid,canonical_s3_location,type,benchmarks\n"
        f"{clip.uid},s3://{clip.obj.bucket}/{clip.obj.key},mp4,[AV]\n"
    )


def _environment(sandbox: Sandbox, home: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """What both CLIs see: a user's [default] profile and the sandbox as the S3 endpoint."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_ENDPOINT_URL_S3": sandbox.endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "COLUMNS": "120",
        **extra,
    }


def _run_original(case: Case, place: Place, env: dict[str, str]) -> Outcome:
    place.work.mkdir(parents=True)
    done = subprocess.run(
        [str(ORIGINAL_PYTHON), "-m", "ego4d.cli.cli", *case.argv(place)],
        env=env, input=case.stdin, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    return Outcome(done.returncode, done.stdout + done.stderr, place.out)


def _run_ours(case: Case, place: Place, env: dict[str, str]) -> Outcome:
    place.work.mkdir(parents=True)
    argv = case.argv(place)
    if case.stdin:
        # A real pipe on stdin, as the shell gives one.
        ran = cli_process(*argv, env=env, clean_env=True, stdin=case.stdin, timeout_s=240)
        return Outcome(ran.code, ran.stdout + ran.stderr, place.out)
    # In this process: the same code path, without an interpreter start-up per case. The
    # developer's own AWS and proxy settings are hidden, as from the subprocesses.
    hidden: dict[str, str | None] = {
        name: None
        for name in os.environ
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy")
    }
    ran = cli(*argv, env={**hidden, **env}, input="")
    return Outcome(ran.code, ran.stdout + ran.stderr, place.out)


# A dataset of the default release whose manifest names one object the server lacks.
MISSING_DATASET = "t_compat_missing"


@pytest.fixture(scope="module")
def releases(sandbox: Sandbox, release: SeededRelease) -> Releases:
    (viz,) = release.for_dataset("viz")
    put_manifest(
        sandbox,
        MISSING_DATASET,
        "file_uid,s3_path,type",
        [
            f"{viz.uid},s3://{viz.obj.bucket}/{viz.obj.key},file",
            f"gone,s3://{viz.obj.bucket}/public/v2/{MISSING_DATASET}/gone.json,file",
        ],
    )
    return Releases(default=release, later=sandbox.seed_release(later_release_spec()))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's home: the sandbox keys in [default], as `aws configure` writes them."""
    folder = tmp_path_factory.mktemp("home")
    (folder / "credentials").write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY_ID}\n"
        f"aws_secret_access_key = {SECRET_ACCESS_KEY}\n",
        encoding="utf-8",
    )
    (folder / "config").write_text("[default]\nregion = us-east-1\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def originals(
    sandbox: Sandbox, releases: Releases, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    """Every case run by the original CLI, all started together."""
    if not ORIGINAL_PYTHON.exists():
        pytest.skip(f"the original CLI's Python is not at {ORIGINAL_PYTHON}")
    root = tmp_path_factory.mktemp("original")

    def run(name: str) -> tuple[str, Outcome]:
        case = CASES[name]
        env = _environment(sandbox, home, case.env)
        return name, _run_original(case, Place(root / name, releases), env)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(run, CASES))


@pytest.fixture
def ours(
    sandbox: Sandbox, releases: Releases, home: Path, tmp_path: Path
) -> Callable[..., Outcome]:
    """Run a case with ego4d-dl, in a directory of the test's own."""

    runs = iter(range(1000))

    def run(name: str, *more: str) -> Outcome:
        case = CASES[name]
        if more:
            case = Case(lambda p: [*CASES[name].argv(p), *more], case.stdin, case.env)
        env = _environment(sandbox, home, case.env)
        return _run_ours(case, Place(tmp_path / f"ours{next(runs)}", releases), env)

    return run


def tree(out: Path) -> dict[str, str]:
    """``{relative path: md5}`` of what a run left, without ego4d-dl's journal and manifest.ver
    (the original writes the latter into one folder only)."""
    found = {}
    for path in sorted(out.rglob("*")) if out.exists() else []:
        rel = path.relative_to(out)
        if path.is_file() and rel.parts[0] != JOURNAL_DIR and path.name != "manifest.ver":
            found[str(rel)] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def data(out: Path) -> dict[str, str]:
    """The downloaded files only: no manifests, no ego4d.json (the original fetches those
    before it stops on a bad request; ego4d-dl stops first)."""
    return {
        rel: md5
        for rel, md5 in tree(out).items()
        if Path(rel).name not in ("manifest.csv", "ego4d.json")
    }


def version_entries(out: Path) -> set[tuple[str, str, str]]:
    """Every (uid, version, file name) of every manifest.ver under ``out``."""
    return {
        (e.uid, e.version, e.filename)
        for path in out.rglob("manifest.ver")
        for e in read_entries(path.parent)
    }


@pytest.mark.parametrize("name", AGREE)
def test_both_clis_agree(
    name: str, originals: dict[str, Outcome], ours: Callable[..., Outcome]
) -> None:
    theirs = originals[name]
    mine = ours(name)
    assert "Traceback" not in mine.output, mine.output
    assert mine.code == theirs.code, f"ours: {mine.output}\n\noriginal: {theirs.output}"
    if name == "pipe_no":
        # Declined: nothing downloaded; ego4d-dl wrote nothing at all (the original had
        # written ego4d.json and the manifests before asking).
        assert data(mine.out) == data(theirs.out) == {}
        assert tree(mine.out) == {}
    elif theirs.code == 0:
        assert tree(mine.out) == tree(theirs.out)
        # The original's manifest.ver entries, version ids included, are in ours: going back
        # to it after ego4d-dl refetches nothing the original itself would not.
        assert version_entries(theirs.out) <= version_entries(mine.out)
    else:
        assert data(mine.out) == data(theirs.out) == {}
    for both in _SAME_MESSAGES.get(name, ()):
        text = both.format(out=mine.out)
        assert text in mine.output
        assert both.format(out=theirs.out) in theirs.output


# Lines the two print alike, at the moment they matter.
_SAME_MESSAGES: dict[str, tuple[str, ...]] = {
    "manifest": ("Manifest downloaded: {out}/manifest.csv",),
    "pipe_no": ("Aborting the download operation.",),
    "unknown_uid": ("not-a-uid",),
    "datasets_without_value": ("argument --datasets: expected at least one argument",),
    "ambiguous_abbreviation": (
        "ambiguous option: --vid could match --video_uids, --video_uid_file",
    ),
}


def test_the_selection_matrix_selects_what_the_filters_say(
    originals: dict[str, Outcome], releases: Releases
) -> None:
    """The matrix is not vacuous: what both selected is what each filter asks for."""
    default = releases.default

    def names(ran: Outcome) -> set[str]:
        return set(data(ran.out))

    def relpaths(dataset: str, keep: Callable[[int], bool]) -> set[str]:
        return {f.relpath for i, f in enumerate(default.for_dataset(dataset)) if keep(i)}

    assert names(originals["video_uids"]) == relpaths("full_scale", lambda i: i in (3, 4))
    assert names(originals["video_uid_file"]) == names(originals["video_uids"])
    assert names(originals["universities"]) == {
        f.relpath
        for f in default.files
        if f.dataset in ("full_scale", "clips") and f.university in ("bristol", "nus")
    }
    assert names(originals["benchmarks"]) == {
        f.relpath
        for f in default.files
        if f.dataset in ("clips", "annotations") and {"EM", "AV"} & set(f.benchmarks)
    }
    assert names(originals["abbreviations"]) == {
        f.relpath
        for f in default.for_dataset("clips")
        if f.university == "utokyo" and "FHO" in f.benchmarks
    }
    later = releases.later.for_dataset("components/videos")
    assert names(originals["components_videos_uids"]) == {later[0].relpath, later[2].relpath}
    assert {f.relpath for f in releases.later.files} <= names(originals["later_release"])
    assert all(p.startswith("v3/") for p in names(originals["later_release"]))
    assert names(originals["manifest_override"]) == {default.for_dataset("clips")[2].relpath}
    assert names(originals["pipe_no"]) == names(originals["pipe_empty"]) == set()


def test_list_datasets_names_the_same_datasets(
    originals: dict[str, Outcome], ours: Callable[..., Outcome], releases: Releases
) -> None:
    names = {f.dataset for f in releases.default.files}
    assert len(names) == 6
    for case in ("list_datasets", "list_datasets_config"):
        theirs, mine = originals[case], ours(case)
        assert (theirs.code, mine.code) == (0, 0), mine.output
        listed = [line.split()[0] for line in theirs.output.splitlines() if line[:3] == "   "]
        assert set(listed) == names
        assert all(f" {name} " in mine.output for name in names), mine.output


# --- deliberate differences: each pinned, with its note and the flag that restores the original's


def test_a_uid_held_by_another_requested_video_dataset_is_fetched_from_there(
    originals: dict[str, Outcome], ours: Callable[..., Outcome], releases: Releases
) -> None:
    theirs, mine = originals["uid_in_one_video_dataset"], ours("uid_in_one_video_dataset")
    assert theirs.code == 1  # the original wants every UID in every requested video dataset
    assert mine.code == 0, mine.output
    assert set(data(mine.out)) == {releases.default.for_dataset("clips")[1].relpath}
    assert "full_scale: 1 requested UIDs are only in other datasets, fetched from there" in (
        mine.output
    )
    assert "ask for one dataset per run to have that check" in mine.output


def test_an_unknown_release_is_one_error_naming_the_releases_the_bucket_holds(
    originals: dict[str, Outcome], ours: Callable[..., Outcome]
) -> None:
    theirs, mine = originals["unknown_release"], ours("unknown_release")
    assert theirs.code == 1 and "Traceback" in theirs.output  # botocore's 404
    assert mine.code == 2
    (line,) = [line for line in mine.output.splitlines() if line.startswith("error:")]
    assert line.startswith(
        "error: unknown release 'v9': not in s3://ego4d-consortium-sharing/public/; it holds "
    )
    assert "v2_1" in line and "v3_1" in line
    assert tree(mine.out) == {}


def test_a_list_option_given_twice_takes_every_value_and_says_so(
    originals: dict[str, Outcome], ours: Callable[..., Outcome], releases: Releases
) -> None:
    theirs, mine = originals["repeated_list_option"], ours("repeated_list_option")
    assert (theirs.code, mine.code) == (0, 0)
    viz = {f.relpath for f in releases.default.for_dataset("viz")}
    models = {f.relpath for f in releases.default.for_dataset("vq2d_models")}
    assert set(data(theirs.out)) == models  # argparse kept the last --datasets only
    assert set(data(mine.out)) == viz | models
    assert (
        "note: --datasets given 2 times: ego4d-dl takes every value (viz vq2d_models); the "
        "original CLI took only the last (vq2d_models): give --datasets once for that"
    ) in mine.output


def test_skip_s3_checks_with_yes_no_longer_crashes(
    originals: dict[str, Outcome], ours: Callable[..., Outcome], releases: Releases
) -> None:
    theirs, mine = originals["skip_s3_checks_and_yes"], ours("skip_s3_checks_and_yes")
    assert theirs.code == 1 and "expected_gb" in theirs.output  # PR #370's unbound variable
    assert mine.code == 0, mine.output
    assert "--skip-s3-checks is ignored" in mine.output
    assert set(data(mine.out)) == {f.relpath for f in releases.default.for_dataset("viz")}


def test_upper_case_uids_are_read_in_lower_case(
    originals: dict[str, Outcome], ours: Callable[..., Outcome], releases: Releases
) -> None:
    theirs, mine = originals["upper_case_uid"], ours("upper_case_uid")
    assert theirs.code == 1 and "Upper case uids invalid" in theirs.output
    assert mine.code == 0, mine.output
    assert "Ego4D UIDs are lower case; read 1 as lower case" in mine.output
    assert "(the original CLI stops on them)" in mine.output
    assert set(data(mine.out)) == {releases.default.for_dataset("clips")[1].relpath}


def test_a_missing_output_directory_is_a_usage_error(
    originals: dict[str, Outcome], ours: Callable[..., Outcome]
) -> None:
    theirs, mine = originals["no_output_directory"], ours("no_output_directory")
    assert theirs.code == 1 and "Missing required flags: {'output_directory'}" in theirs.output
    assert mine.code == 2
    assert "error: missing --output_directory" in mine.output
    assert "Traceback" not in mine.output


def test_upper_case_university_ids_are_read_in_lower_case(
    originals: dict[str, Outcome], ours: Callable[..., Outcome], releases: Releases
) -> None:
    theirs, mine = originals["upper_case_university"], ours("upper_case_university")
    assert theirs.code == 2 and "invalid choice: 'UTOKYO'" in theirs.output
    assert mine.code == 0, mine.output
    assert "warning: universities read as utokyo" in mine.output
    assert set(data(mine.out)) == {
        f.relpath for f in releases.default.for_dataset("clips") if f.university == "utokyo"
    }


def test_one_override_for_several_datasets_is_refused(
    originals: dict[str, Outcome], ours: Callable[..., Outcome], releases: Releases
) -> None:
    theirs, mine = originals["override_several_datasets"], ours("override_several_datasets")
    # The original reads the one file as each dataset's manifest: the clip lands twice.
    clip = Path(releases.default.for_dataset("clips")[2].relpath).name
    assert theirs.code == 0
    assert set(data(theirs.out)) == {f"v2/clips/{clip}", f"v2/viz/{clip}"}
    assert mine.code == 2
    assert "error: --manifest-override-path needs exactly one dataset" in mine.output


def test_a_dataset_the_release_lacks_is_one_error(
    originals: dict[str, Outcome], ours: Callable[..., Outcome]
) -> None:
    theirs, mine = originals["dataset_not_in_release"], ours("dataset_not_in_release")
    assert theirs.code == 1 and "Traceback" in theirs.output
    assert mine.code == 2
    assert "error: dataset 'nonexist' has no manifest in release v2_1" in mine.output


def test_a_missing_object_is_listed_and_the_exit_code_says_so(
    originals: dict[str, Outcome], ours: Callable[..., Outcome], releases: Releases
) -> None:
    theirs, mine = originals["missing_object"], ours("missing_object")
    assert theirs.code == 0  # "1/2 missing S3 downloads will be ignored", and exit 0
    assert "missing S3 downloads will be ignored" in theirs.output
    assert mine.code == 1
    assert f"missing: {MISSING_DATASET}/gone.json" in mine.output
    assert tree(mine.out) == tree(theirs.out)


def test_stray_environment_keys_are_used_and_named_and_the_profile_flag_restores(
    originals: dict[str, Outcome], ours: Callable[..., Outcome], releases: Releases
) -> None:
    theirs = originals["stray_environment_keys"]
    assert theirs.code == 0  # the original reads [default] only
    mine = ours("stray_environment_keys")
    assert mine.code == 3
    assert (
        "note: using key AKIA...0000 from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
        "environment, as the standard AWS chain does; the original ego4d CLI ignores those and "
        f"reads the [default] profile (key {ACCESS_KEY_ID[:4]}...{ACCESS_KEY_ID[-4:]}): pass "
        "--aws_profile_name default for its keys"
    ) in mine.output
    restored = ours("stray_environment_keys", "--aws_profile_name", "default")
    assert restored.code == 0, restored.output
    assert "note: using" not in restored.output
    assert tree(restored.out) == tree(theirs.out)


def test_going_back_to_the_original_refetches_nothing(
    sandbox: Sandbox, releases: Releases, home: Path, tmp_path: Path
) -> None:
    """ego4d-dl downloads; the original, run next on the same folder, finds every file current
    (manifest.ver names each with its S3 version id) and downloads nothing."""
    if not ORIGINAL_PYTHON.exists():
        pytest.skip(f"the original CLI's Python is not at {ORIGINAL_PYTHON}")
    case = CASES["later_release"]
    place = Place(tmp_path / "shared", releases)
    env = _environment(sandbox, home, {})
    first = _run_ours(case, place, env)
    assert first.code == 0, first.output
    files = {rel: (place.out / rel).stat() for rel in data(place.out)}
    versions = {(f.uid, f.obj.version_id, Path(f.relpath).name) for f in releases.later.files}
    assert all(v for _, v, _ in versions), "the later release's buckets are versioned"
    assert versions <= version_entries(place.out)
    assert (place.out / "v3/annotations/manifest.csv").stat().st_mode & 0o077 == 0o044 & ~_umask()

    again = subprocess.run(
        [str(ORIGINAL_PYTHON), "-m", "ego4d.cli.cli", *case.argv(place)],
        env=env, input="", capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    output = again.stdout + again.stderr
    assert again.returncode == 0, output
    assert f"Filtered {len(versions)}/{len(versions)} existing videos" in output
    # Not one file was replaced: same inode, same modification time.
    for rel, before in files.items():
        after = (place.out / rel).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), rel


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
