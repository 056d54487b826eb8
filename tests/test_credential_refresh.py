"""Credentials that cannot be obtained or refreshed end the run with exit 3 and one clear
message, never a traceback, and botocore's own WARNING tracebacks stay off stderr.

The keys come from a real ``credential_process`` (in an AWS config the test writes) that
returns the sandbox's keys with an Expiration five minutes ahead, inside botocore's
mandatory-refresh window, so every request makes botocore run it again; it starts failing
when a flag file appears, which the fault proxy creates as the first object GET arrives.
With one request at a time, that GET was signed before (and completes), the next needs a
refresh that fails. SSO without a token and a process that prints no JSON go the same way.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import botocore.exceptions
import pytest

from ego4d_dl.credentials import credential_errors as _credential_errors
from ego4d_dl.errors import CredentialsError
from ego4d_dl.sandbox import ACCESS_KEY_ID, SECRET_ACCESS_KEY, Sandbox, SeededRelease
from tests.support.cli import cli_process
from tests.support.faultproxy import Delay, FaultProxy, Match, Rule
from tests.support.seed import MIB, Dataset, blobs, check_download, seed_dataset

_RENEW = "renew them and run the same command to resume"


@pytest.fixture(scope="module")
def dataset(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    return seed_dataset(
        sandbox,
        "credential_refresh_test",
        blobs("credential_refresh_test", [2 * MIB, MIB, MIB, 300_000]),
    )


def _write_credential_process(folder: Path, *, expires_in_s: float, body: str = "") -> Path:
    """A credential_process script: the sandbox's keys (or ``body``), unless ``revoked``
    exists in ``folder``."""
    expiration = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in_s)
    answer = folder / "answer.json"
    answer.write_text(
        body
        or json.dumps(
            {
                "Version": 1,
                "AccessKeyId": ACCESS_KEY_ID,
                "SecretAccessKey": SECRET_ACCESS_KEY,
                "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ),
        encoding="utf-8",
    )
    script = folder / "credentials.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{folder}/revoked" ]; then\n'
        '  echo "the session has expired; sign in again" >&2\n'
        "  exit 1\n"
        "fi\n"
        f'cat "{answer}"\n',
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def process_env(
    aws_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """No keys in the environment: the default profile's credential_process gives them."""
    folder = tmp_path_factory.mktemp("credential-process")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    script = _write_credential_process(folder, expires_in_s=300)
    Path(aws_env["AWS_CONFIG_FILE"]).write_text(
        f"[default]\nregion = us-east-1\ncredential_process = {script}\n", encoding="utf-8"
    )
    return folder


def _args(out: Path, dataset: Dataset, endpoint: str) -> list[str]:
    # fmt: off
    return [
        "download", "-o", str(out), "--datasets", dataset.name, "--no-metadata",
        "--endpoint-url", endpoint, "--yes", "--json", "--concurrency", "1",
    ]
    # fmt: on


def _one_clear_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert "WARNING" not in stderr and "Refreshing temporary credentials" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_a_credential_process_that_fails_mid_run_exits_3_and_the_run_resumes(
    process_env: Path, sandbox: Sandbox, dataset: Dataset, tmp_path: Path
) -> None:
    def revoke() -> None:
        (process_env / "revoked").touch()

    with FaultProxy(sandbox.endpoint_url) as proxy:
        first_get = Rule(
            match=Match(method="GET", key=f"public/v2/{dataset.name}/*"),
            fault=Delay(seconds=0),
            on_fire=revoke,
        )
        proxy.add(first_get)
        ran = cli_process(*_args(tmp_path, dataset, proxy.url))
        assert first_get.fired == 1

    assert ran.code == 3, ran.stderr
    line = _one_clear_error(ran.stderr)
    assert "the AWS credentials could not be obtained or refreshed" in line
    assert "the session has expired; sign in again" in line  # what the process said
    assert _RENEW in line
    events = [json.loads(x) for x in ran.stdout.splitlines()]
    verified = {e["key"] for e in events if e["event"] == "FileVerified"}
    assert len(verified) == 1  # the GET signed before the flag; the next one could not be
    assert events[-1]["event"] == "RunFinished"
    assert events[-1]["summary"]["stop_kind"] == "credentials"

    # Renewed: the same command finishes, without fetching the verified file again.
    (process_env / "revoked").unlink()
    again = cli_process(*_args(tmp_path, dataset, sandbox.endpoint_url))
    assert again.code == 0, again.stderr
    skipped = {
        e["key"] for e in map(json.loads, again.stdout.splitlines()) if e["event"] == "FileSkipped"
    }
    assert verified <= skipped
    assert check_download(tmp_path, dataset) == []


def test_refreshed_credentials_that_are_still_expired_exit_3(
    process_env: Path, sandbox: Sandbox, dataset: Dataset, tmp_path: Path
) -> None:
    # botocore raises a bare RuntimeError for this one, from inside its refresh code.
    _write_credential_process(process_env, expires_in_s=-60)
    ran = cli_process(*_args(tmp_path, dataset, sandbox.endpoint_url))
    assert ran.code == 3, ran.stderr
    line = _one_clear_error(ran.stderr)
    assert "refreshed credentials are still expired" in line
    assert _RENEW in line or "renew" in line


def test_a_credential_process_that_prints_no_json_exits_3(
    process_env: Path, sandbox: Sandbox, dataset: Dataset, tmp_path: Path
) -> None:
    _write_credential_process(process_env, expires_in_s=300, body="Please sign in first.\n")
    ran = cli_process(*_args(tmp_path, dataset, sandbox.endpoint_url))
    assert ran.code == 3, ran.stderr
    assert "the AWS credentials could not be obtained or refreshed" in _one_clear_error(ran.stderr)


def test_an_sso_profile_without_a_token_exits_3(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty SSO token cache
    Path(aws_env["AWS_CONFIG_FILE"]).write_text(
        "[profile ego4d]\nregion = us-east-1\n"
        "sso_start_url = https://ego4d-example.awsapps.com/start\nsso_region = us-east-1\n"
        "sso_account_id = 123456789012\nsso_role_name = Researcher\n",
        encoding="utf-8",
    )
    args = _args(tmp_path / "out", dataset, sandbox.endpoint_url)
    ran = cli_process(*args, "--aws_profile_name", "ego4d", env=dict(os.environ))
    assert ran.code == 3, ran.stderr
    line = _one_clear_error(ran.stderr)
    assert "the AWS credentials could not be obtained or refreshed" in line
    assert "profile 'ego4d'" in line


@pytest.mark.parametrize(
    "exc",
    [
        botocore.exceptions.CredentialRetrievalError(provider="custom-process", error_msg="no"),
        botocore.exceptions.TokenRetrievalError(provider="sso", error_msg="expired"),
        botocore.exceptions.RefreshWithMFAUnsupportedError(),
        botocore.exceptions.SSOTokenLoadError(error_msg="no token"),
        botocore.exceptions.UnauthorizedSSOTokenError(),
        botocore.exceptions.ClientError(
            {"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "AssumeRole"
        ),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_every_credential_source_failure_is_a_credentials_error(exc: Exception) -> None:
    expected = pytest.raises(CredentialsError, match="could not be obtained or refreshed")
    with expected, _credential_errors():
        raise exc
    # Wrapped in another exception, it is still recognised.
    with pytest.raises(CredentialsError), _credential_errors():
        try:
            raise exc
        except Exception as inner:
            raise RuntimeError("while signing") from inner


def test_other_failures_are_left_alone() -> None:
    with pytest.raises(ValueError, match="not about keys"), _credential_errors():
        raise ValueError("not about keys")
    s3_denied = botocore.exceptions.ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject"
    )
    with pytest.raises(botocore.exceptions.ClientError), _credential_errors():
        raise s3_denied


@pytest.mark.parametrize("via_environment", [False, True])
def test_a_missing_profile_is_a_config_error_before_any_key_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via_environment: bool
) -> None:
    from ego4d_dl.config import Credentials
    from ego4d_dl.credentials import make_session
    from ego4d_dl.errors import ConfigError

    (tmp_path / "config").write_text("[default]\n", encoding="utf-8")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    if via_environment:
        monkeypatch.setenv("AWS_PROFILE", "ego4d")
    else:
        monkeypatch.delenv("AWS_PROFILE", raising=False)
    with pytest.raises(ConfigError, match="profile 'ego4d' not found"):
        make_session(Credentials(profile=None if via_environment else "ego4d"))
