"""``ego4d-dl plan`` against the sandbox: seed-compatible flags, filters, safety, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ego4d_dl.sandbox import RESTRICTED_BUCKET, Sandbox, SeededRelease
from tests.support.cli import cli, plan_json
from tests.support.seed import put_manifest

ALL = ("full_scale", "clips", "annotations", "viz", "av_models", "vq2d_models")


def planned(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    """Planned files by destination, without the release's ego4d.json."""
    out: dict[str, dict[str, object]] = {}
    for ds in doc["datasets"]:  # type: ignore[attr-defined]
        if ds["name"] == "metadata":
            continue
        for f in ds["files"]:
            out[f["destination"]] = f
    return out


def test_plan_totals_equal_the_seeded_truth(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    doc = plan_json(sandbox, tmp_path, "--datasets", *ALL)
    files = planned(doc)
    assert len(files) == len(release.files)
    for f in release.files:
        p = files[str(tmp_path / f.relpath)]
        assert (p["bucket"], p["key"]) == (f.obj.bucket, f.obj.key)
        assert p["size_bytes"] == f.obj.size_bytes
        assert p["etag"] == f.obj.etag
        assert p["action"] == "fetch"
    truth_bytes = sum(f.obj.size_bytes for f in release.files) + release.metadata.size_bytes
    assert doc["totals"]["size_bytes"] == truth_bytes
    assert doc["totals"]["fetch_bytes"] == truth_bytes
    assert doc["totals"]["files"] == len(release.files) + 1
    assert not list(tmp_path.iterdir()), "a dry run must not write anything"


def uids(doc: dict[str, object]) -> set[str]:
    return {str(f["uid"]) for f in planned(doc).values()}


@pytest.mark.parametrize(
    "spelling",
    [
        ["--output_directory", "{out}", "--datasets", "clips", "annotations"],
        ["--output-directory", "{out}", "--datasets", "clips", "--datasets", "annotations"],
        ["-o", "{out}", "--dataset", "clips", "annotations"],
        ["-o", "{out}", "--datasets=clips", "--datasets=annotations"],
    ],
)
def test_output_and_dataset_spellings(
    sandbox: Sandbox,
    release: SeededRelease,
    aws_env: dict[str, str],
    tmp_path: Path,
    spelling: list[str],
) -> None:
    args = [a.replace("{out}", str(tmp_path)) for a in spelling]
    ran = cli("plan", "--json", "--endpoint_url", sandbox.endpoint_url, *args)
    assert ran.code == 0, ran.stderr
    want = {f.uid for f in release.files if f.dataset in ("clips", "annotations")}
    assert uids(json.loads(ran.stdout)) == want


@pytest.mark.parametrize("flag", ["--aws_profile_name", "--aws-profile-name"])
def test_profile_flag_spellings(
    sandbox: Sandbox,
    release: SeededRelease,
    aws_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
) -> None:
    Path(aws_env["AWS_SHARED_CREDENTIALS_FILE"]).write_text(
        f"[ego4d]\naws_access_key_id = {aws_env['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {aws_env['AWS_SECRET_ACCESS_KEY']}\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    doc = plan_json(sandbox, tmp_path, flag, "ego4d", "--datasets", "clips")
    assert uids(doc) == {f.uid for f in release.for_dataset("clips")}


@pytest.mark.parametrize("flag", ["--video_uids", "--video-uids"])
def test_uid_flags(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path, flag: str
) -> None:
    a, b = (f.uid for f in release.for_dataset("full_scale")[:2])
    doc = plan_json(sandbox, tmp_path, "--datasets", "full_scale", flag, a, b.upper())
    assert uids(doc) == {a, b}


@pytest.mark.parametrize("flag", ["--video_uid_file", "--video-uid-file"])
def test_uid_file(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path, flag: str
) -> None:
    chosen = [f.uid for f in release.for_dataset("full_scale")[2:5]]
    uid_file = tmp_path / "uids.txt"
    uid_file.write_text(" ".join(chosen[:2]) + "\n" + chosen[2] + "\n")
    doc = plan_json(sandbox, tmp_path / "out", "--datasets", "full_scale", flag, uid_file)
    assert uids(doc) == set(chosen)


def test_unknown_uids_are_listed_per_dataset(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    known = release.for_dataset("clips")[0].uid
    ran = cli(
        "plan",
        "-o",
        tmp_path,
        "--endpoint-url",
        sandbox.endpoint_url,
        "--datasets",
        "clips",
        "--video_uids",
        known,
        "not-a-uid",
    )
    # As in the original CLI: a UID that no requested video dataset holds stops the run.
    assert ran.code == 1
    assert ran.error_line() == (
        "error: 1 requested UIDs are in no requested video dataset (clips); not in the "
        "manifest: not-a-uid. Nothing was downloaded (the original ego4d CLI stops here too)."
    )


def test_benchmark_and_university_filters(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    doc = plan_json(sandbox, tmp_path, "--datasets", "full_scale", "clips", "--benchmarks", "fho")
    want = {
        f.uid
        for f in release.files
        if f.dataset in ("full_scale", "clips") and "FHO" in f.benchmarks
    }
    assert uids(doc) == want and want
    doc = plan_json(sandbox, tmp_path, "--datasets", "full_scale", "--universities", "unict")
    want = {f.uid for f in release.for_dataset("full_scale") if f.university == "unict"}
    assert uids(doc) == want and want


@pytest.mark.parametrize("flag", ["--config", "--config_path", "--config-path"])
def test_config_file_and_command_line_override(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path, flag: str
) -> None:
    config = tmp_path / "ego4d.json"
    config.write_text(
        json.dumps(
            {
                "output_directory": str(tmp_path / "from-config"),
                "datasets": ["clips"],
                "benchmarks": ["EM"],
                "endpoint_url": sandbox.endpoint_url,
            }
        )
    )
    ran = cli("plan", "--json", flag, config)
    assert ran.code == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["output_directory"] == str(tmp_path / "from-config")
    assert uids(doc) == {f.uid for f in release.for_dataset("clips") if "EM" in f.benchmarks}
    ran = cli("plan", "--json", flag, config, "--datasets", "full_scale")
    doc = json.loads(ran.stdout)
    assert uids(doc) == {f.uid for f in release.for_dataset("full_scale") if "EM" in f.benchmarks}


def test_malformed_rows_are_counted_by_line_and_traversal_refused(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    good = release.for_dataset("annotations")[0].obj
    put_manifest(
        sandbox,
        "t_malformed",
        "file_uid,s3_path,type",
        [
            f"ok,s3://{good.bucket}/{good.key},file",
            ",s3://ego4d-cmu/x.json,file",
            "bad,https://example.com/x.json,file",
            "up,s3://ego4d-cmu/a/../../../../etc/passwd,file",
            "abs,s3://ego4d-cmu//etc/passwd,file",
        ],
    )
    out = tmp_path / "out"
    ran = cli(
        "plan",
        "--json",
        "-o",
        out,
        "--endpoint-url",
        sandbox.endpoint_url,
        "--datasets",
        "t_malformed",
    )
    assert ran.code == 0, ran.stderr
    doc = json.loads(ran.stdout)
    (ds,) = [d for d in doc["datasets"] if d["name"] == "t_malformed"]
    assert [m["line"] for m in ds["malformed_rows"]] == [3, 4, 5, 6]
    assert [f["uid"] for f in ds["files"]] == ["ok"]
    assert "4 malformed manifest rows skipped (lines 3, 4, 5, 6)" in ran.stderr
    assert "not a dataset this tool knows" in ran.stderr
    ran = cli(
        "download",
        "-y",
        "-o",
        out,
        "--endpoint-url",
        sandbox.endpoint_url,
        "--datasets",
        "t_malformed",
        "--no-metadata",
    )
    # The good row downloads; the skipped ones make the run say so in its exit code.
    assert ran.code == 1, ran.stderr
    written = sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and ".ego4d-dl" not in p.parts
    )
    assert written == sorted(
        [
            "v2/t_malformed/manifest.csv",
            "v2/t_malformed/manifest.ver",
            f"v2/t_malformed/{Path(good.key).name}",
        ]
    )
    assert list(tmp_path.iterdir()) == [out]


def test_duplicate_destinations_are_refused(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    a, b = release.for_dataset("full_scale")[:2]
    put_manifest(
        sandbox,
        "t_duplicates",
        "video_uid,canonical_s3_location",
        [f"same,s3://{a.obj.bucket}/{a.obj.key}", f"same,s3://{b.obj.bucket}/{b.obj.key}"],
    )
    ran = cli(
        "plan", "-o", tmp_path, "--endpoint-url", sandbox.endpoint_url, "--datasets", "t_duplicates"
    )
    assert ran.code == 2
    assert "lines 2 and 3 would both write 'same.mp4'" in ran.error_line()


def test_403_and_404_are_told_apart(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    sandbox.put_object(RESTRICTED_BUCKET, "public/v2/secret.mp4", b"not for you")
    good = release.for_dataset("clips")[1].obj
    put_manifest(
        sandbox,
        "t_forbidden",
        "video_uid,canonical_s3_location",
        [
            f"good,s3://{good.bucket}/{good.key}",
            "gone,s3://ego4d-cmu/public/v2/never-uploaded.mp4",
            f"secret,s3://{RESTRICTED_BUCKET}/public/v2/secret.mp4",
        ],
    )
    doc = plan_json(sandbox, tmp_path, "--datasets", "t_forbidden")
    actions = {f["uid"]: f["action"] for f in planned(doc).values()}
    assert actions == {"good": "fetch", "gone": "missing", "secret": "denied"}
    ran = cli(
        "download",
        "-y",
        "-o",
        tmp_path,
        "--endpoint-url",
        sandbox.endpoint_url,
        "--datasets",
        "t_forbidden",
        "--no-metadata",
    )
    assert ran.code == 1
    assert "1 downloaded and verified" in ran.stdout
    assert "missing: t_forbidden/gone" in ran.stdout and "(404)" in ran.stdout
    assert "denied: t_forbidden/secret" in ran.stdout and "403" in ran.stdout
    assert (tmp_path / "v2/t_forbidden/good.mp4").read_bytes() == sandbox.admin_client().get_object(
        Bucket=good.bucket, Key=good.key
    )["Body"].read()


def no_traceback(ran: object) -> None:
    text = f"{getattr(ran, 'stdout', '')}{getattr(ran, 'stderr', '')}"
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--datasets", "vq2s_models"], 2, "did you mean vq2d_models"),
        (
            ["--datasets", "full_scale", "--aws_profile_name", "nobody"],
            2,
            "AWS profile 'nobody' not found",
        ),
        (
            ["--datasets", "clips", "--video_uid_file", "/nonexistent/uids.txt"],
            2,
            "uid file /nonexistent/uids.txt does not exist",
        ),
        (
            ["--datasets", "clips", "--video_uids", "a", "--video_uid_file", "x"],
            2,
            "mutually exclusive",
        ),
        (["--datasets", "clips", "--universities", "mit"], 2, "unknown university 'mit'"),
        (["--datasets", "clips", "--version", "v9"], 2, "unknown release 'v9'"),
        (["--datasets", "../../etc"], 2, "invalid dataset name"),
        (["--datasets", "clips", "--concurrency", "0"], 2, "--concurrency must be between"),
    ],
)
def test_bad_input_is_one_line_and_exit_code(
    sandbox: Sandbox,
    release: SeededRelease,
    aws_env: dict[str, str],
    tmp_path: Path,
    args: list[str],
    code: int,
    message: str,
) -> None:
    ran = cli("plan", "-o", tmp_path, "--endpoint-url", sandbox.endpoint_url, *args)
    assert ran.code == code, ran.stderr
    assert message in ran.error_line()
    no_traceback(ran)


def test_output_directory_that_is_a_file(
    aws_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ran = cli("download", "-y", "-o", blocker / "sub", "--endpoint-url", sandbox.endpoint_url)
    assert ran.code == 2
    assert "is a file, not a directory" in ran.error_line()


def test_bad_config_and_endpoint(aws_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text("{broken")
    ran = cli("plan", "--config", config)
    assert (ran.code, "not valid JSON" in ran.error_line()) == (2, True)
    config.write_text('{"datasets": 5, "output_directory": "x"}')
    ran = cli("plan", "--config", config)
    assert (ran.code, "must be a list of strings" in ran.error_line()) == (2, True)
    ran = cli("plan", "-o", tmp_path, "--endpoint-url", "localhost:8333")
    assert (ran.code, "invalid --endpoint-url" in ran.error_line()) == (2, True)
    ran = cli("plan")
    assert (ran.code, "missing --output_directory" in ran.error_line()) == (2, True)


def test_unreachable_server(aws_env: dict[str, str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    ran = cli("plan", "-o", tmp_path, "--endpoint-url", f"http://127.0.0.1:{port}")
    assert ran.code == 1
    assert f"cannot reach http://127.0.0.1:{port}" in ran.error_line()
    no_traceback(ran)


def test_wrong_secret_is_a_credentials_error(
    sandbox: Sandbox,
    release: SeededRelease,
    aws_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    ran = cli("plan", "-o", tmp_path, "--endpoint-url", sandbox.endpoint_url, "--datasets", "clips")
    assert ran.code == 3
    assert "SignatureDoesNotMatch" in ran.error_line()
    assert "expire after 14 days" in ran.error_line()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
    ran = cli("plan", "-o", tmp_path, "--endpoint-url", sandbox.endpoint_url, "--datasets", "clips")
    assert (ran.code, "InvalidAccessKeyId" in ran.error_line()) == (3, True)


def test_datasets_command_lists_datasets_csv(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str]
) -> None:
    ran = cli("datasets", "--json", "--endpoint-url", sandbox.endpoint_url)
    assert ran.code == 0, ran.stderr
    assert {d["dataset"] for d in json.loads(ran.stdout)} == set(ALL)


def test_the_original_command_line_with_its_own_switches_works(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """The original's switches (-y with --skip-s3-checks crashed it, PR #370) are accepted."""
    ran = cli(
        "--output_directory", tmp_path, "--datasets", "viz", "-y", "--skip-s3-checks",
        "--bypass-existing", "--endpoint-url", sandbox.endpoint_url, "--no-metadata",
    )  # fmt: skip
    assert ran.code == 0, ran.stderr
    assert "--skip-s3-checks is ignored" in ran.stderr
    (viz,) = release.for_dataset("viz")
    assert (tmp_path / viz.relpath).stat().st_size == viz.obj.size_bytes
    listed = cli("--list-datasets", "--json", "--endpoint-url", sandbox.endpoint_url)
    assert listed.code == 0, listed.stderr
    assert {d["dataset"] for d in json.loads(listed.stdout)} == set(ALL)
