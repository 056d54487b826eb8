"""``ego4d-dl doctor``: check everything that stops downloads, and say in plain words what to do."""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from .catalog import CONSORTIUM_BUCKET
from .config import Options
from .credentials import KeyInfo, resolve_keys
from .downloading import free_bytes, plan_readonly
from .errors import (
    ConfigError,
    CredentialsError,
    Ego4dDLError,
    ManifestError,
    NetworkError,
    PlanError,
)
from .events import discard
from .formatting import human_bytes, plural
from .planned import Action, Plan
from .regions import usable_region
from .results import Blame, Diagnosis, Finding, Severity
from .session import open_store
from .store import S3Store, proxy_for

__all__ = ["Blame", "Diagnosis", "Finding", "Severity", "diagnose", "mask_key_id"]

# S3 rejects a request signed more than 15 minutes away from its own clock.
_SKEW_FAIL_S = 15 * 60
_SKEW_WARN_S = 60


def mask_key_id(key_id: str) -> str:
    """``AKIAEGO4DSANDBOXUSER`` -> ``AKIA...XUSER``: enough to tell keys apart, not to use them."""
    return key_id if len(key_id) <= 9 else f"{key_id[:4]}...{key_id[-5:]}"


_SOURCES = {
    "env": "the environment (AWS_ACCESS_KEY_ID)",
    "shared-credentials-file": "the credentials file",
    "config-file": "the AWS config file",
    "explicit": "the command line",
    "assume-role": "an assumed role",
    "sso": "AWS SSO",
    "iam-role": "the instance's IAM role",
    "container-role": "the container's role",
    "process": "a credential_process",
}


def _credentials_file() -> str:
    return os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"


def _check_output(out: Path) -> Finding:
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return Finding(
            check="output directory",
            severity=Severity.FAIL,
            detail=f"{probe} is a file, not a directory; choose another --output_directory",
            blame=Blame.CONFIG,
        )
    try:
        fd, name = tempfile.mkstemp(prefix=".ego4d-dl-doctor-", dir=probe)
        os.close(fd)
        Path(name).unlink()
    except OSError as exc:
        return Finding(
            check="output directory",
            severity=Severity.FAIL,
            detail=f"cannot write in {probe} ({exc.strerror}); choose a folder you own, or fix "
            "its permissions",
            blame=Blame.CONFIG,
        )
    where = f"{out} is writable" if probe == out else f"{out} will be created in {probe}"
    return Finding(check="output directory", severity=Severity.OK, detail=where)


def _describe_keys(keys: KeyInfo, options: Options) -> list[Finding]:
    source = _SOURCES.get(keys.method, keys.method)
    profile = options.credentials.profile or os.environ.get("AWS_PROFILE")
    if keys.method in ("shared-credentials-file", "config-file"):
        source = f"{source} {_credentials_file()}, profile {profile or 'default'!r}"
    temp = "; temporary keys (session token)" if keys.has_session_token else ""
    found = [
        Finding(
            check="credentials",
            severity=Severity.OK,
            detail=f"key id {mask_key_id(keys.access_key_id)} from {source}{temp}",
        )
    ]
    if keys.profile_region and usable_region(keys.profile_region) is None:
        found.append(
            Finding(
                check="profile region",
                severity=Severity.WARN,
                detail=f"the profile's region {keys.profile_region!r} is not a region (the "
                "original CLI would call s3.none.amazonaws.com); ignored: each bucket's region "
                "is asked from S3",
            )
        )
    return found


def _explain_credentials(exc: CredentialsError, key_id: str) -> Finding:
    masked = mask_key_id(key_id)
    code = exc.code
    if code == "InvalidAccessKeyId":
        detail = (
            f"S3 does not know key id {masked}: it is mistyped, or was replaced by newer keys; "
            "copy both keys from your latest Ego4D licence e-mail into `aws configure`"
        )
    elif code == "SignatureDoesNotMatch":
        detail = (
            f"the secret key does not belong to key id {masked} (a typo, a stray space, or the "
            "secret of other keys); enter it again with `aws configure`"
        )
    elif code in ("ExpiredToken", "TokenRefreshRequired", "InvalidToken"):
        detail = (
            "the keys have expired: Ego4D and Ego-Exo4D keys last 14 days; renew them from "
            "your licence e-mail and run `aws configure` again"
        )
    elif code == "RequestTimeTooSkewed":
        detail = "S3 rejects the requests because this machine's clock is off; fix the clock"
    elif code == "AccessDenied":
        detail = (
            f"key id {masked} cannot read the Ego4D manifests: are these the keys from your "
            "approved Ego4D licence (not another AWS account's)?"
        )
    else:
        detail = str(exc)
    return Finding(check="keys", severity=Severity.FAIL, detail=detail, blame=Blame.CREDENTIALS)


def _check_clock(server_date: float | None, now: float) -> Finding:
    if server_date is None:
        return Finding(check="clock", severity=Severity.WARN, detail="the server sent no Date")
    skew = now - server_date
    direction = "ahead of" if skew > 0 else "behind"
    if abs(skew) >= _SKEW_FAIL_S:
        return Finding(
            check="clock",
            severity=Severity.FAIL,
            detail=f"this machine's clock is {abs(skew) / 60:.0f} minutes {direction} the "
            "server's; S3 rejects requests more than 15 minutes off: set the clock "
            "(e.g. `timedatectl set-ntp true`)",
            blame=Blame.CREDENTIALS,
        )
    if abs(skew) >= _SKEW_WARN_S:
        return Finding(
            check="clock",
            severity=Severity.WARN,
            detail=f"this machine's clock is {abs(skew):.0f} s {direction} the server's; S3 "
            "allows 15 minutes, but keep it synchronised",
        )
    return Finding(check="clock", severity=Severity.OK, detail="within a minute of the server's")


def _check_proxy(options: Options) -> Finding:
    url = options.endpoint.url or "https://s3.amazonaws.com"
    proxy = proxy_for(url)
    variables = [
        name
        for name in (
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy",
        )
        if os.environ.get(name)
    ]
    if proxy:
        detail = f"requests to {url} go through the proxy {proxy}"
    elif variables:
        detail = f"{url} is reached directly ({', '.join(variables)} set, but not for it)"
    else:
        detail = f"no proxy: {url} is reached directly (HTTPS_PROXY and HTTP_PROXY are unset)"
    return Finding(check="proxy", severity=Severity.OK, detail=detail)


async def _plan(options: Options, store: S3Store) -> Plan:
    return await plan_readonly(options, store, sink=discard, running_ok=True)


async def _check_buckets(plan: Plan, store: S3Store) -> list[Finding]:
    by_bucket: dict[str, Counter[Action]] = defaultdict(Counter)
    for f in plan.files:
        by_bucket[f.bucket][f.action] += 1
    found = []
    for bucket, actions in sorted(by_bucket.items()):
        region = await store.bucket_region(bucket)
        total = sum(actions.values())
        denied, missing, failed = (
            actions[a] for a in (Action.DENIED, Action.MISSING, Action.FAILED)
        )
        where = f"region {region}, {plural(total)}"
        if failed:
            found.append(
                Finding(
                    check=f"bucket {bucket}",
                    severity=Severity.FAIL,
                    detail=f"{where}: {failed:,} could not be looked up (network trouble); try "
                    "again, or check the proxy settings",
                    blame=Blame.NETWORK,
                )
            )
        elif denied == total:
            found.append(
                Finding(
                    check=f"bucket {bucket}",
                    severity=Severity.FAIL,
                    detail=f"{where}: access denied to every one; your licence may not cover "
                    "this bucket (leave it out with --universities)",
                    blame=Blame.ACCESS,
                )
            )
        elif denied or missing:
            found.append(
                Finding(
                    check=f"bucket {bucket}",
                    severity=Severity.WARN,
                    detail=f"{where}: {denied:,} denied (403), {missing:,} missing (404); the "
                    "others can be downloaded",
                )
            )
        else:
            found.append(
                Finding(check=f"bucket {bucket}", severity=Severity.OK, detail=f"{where} readable")
            )
    return found


def _check_space(plan: Plan | None, out: Path) -> Finding:
    free = free_bytes(out)
    if free is None:
        return Finding(
            check="disk space", severity=Severity.WARN, detail=f"cannot tell free space in {out}"
        )
    if plan is None:
        return Finding(
            check="disk space",
            severity=Severity.SKIP,
            detail=f"{human_bytes(free)} free; the space needed is unknown without a plan",
        )
    need = plan.totals.fetch_bytes
    if need > free:
        return Finding(
            check="disk space",
            severity=Severity.FAIL,
            detail=f"the plan fetches {human_bytes(need)} but only {human_bytes(free)} are free "
            f"in {out}: free some space, choose a bigger disk, or narrow the selection",
            blame=Blame.DISK,
        )
    return Finding(
        check="disk space",
        severity=Severity.OK,
        detail=f"the plan fetches {human_bytes(need)}; {human_bytes(free)} free",
    )


def _skipped(*checks: str, why: str) -> list[Finding]:
    return [Finding(check=c, severity=Severity.SKIP, detail=why) for c in checks]


def _fail(check: str, detail: str, blame: Blame) -> Finding:
    return Finding(check=check, severity=Severity.FAIL, detail=detail, blame=blame)


async def _check_keys(options: Options) -> tuple[list[Finding], KeyInfo | None]:
    """Which keys the AWS chain finds, and where from (no request)."""
    try:
        keys = await resolve_keys(options.credentials)
    except ConfigError as exc:
        return [_fail("credentials", str(exc), Blame.CONFIG)], None
    except CredentialsError as exc:
        return [_fail("credentials", str(exc), Blame.CREDENTIALS)], None
    if keys is None:
        detail = (
            "no AWS keys found (not in AWS_ACCESS_KEY_ID, AWS_PROFILE or "
            f"{_credentials_file()}); add the keys from your Ego4D licence e-mail with "
            "`aws configure --profile ego4d` and pass --aws_profile_name ego4d"
        )
        return [_fail("credentials", detail, Blame.CREDENTIALS)], None
    return _describe_keys(keys, options), keys


async def _plan_findings(
    options: Options, store: S3Store, keys: KeyInfo
) -> tuple[list[Finding], Plan | None]:
    """The keys against the manifests (a plan made as a download would), then the buckets."""
    try:
        plan = await _plan(options, store)
    except CredentialsError as exc:
        return [_explain_credentials(exc, keys.access_key_id)], None
    except (ConfigError, ManifestError, PlanError) as exc:
        return [_fail("selection", str(exc), Blame.CONFIG)], None
    except Ego4dDLError as exc:  # network trouble and the like
        return [_fail("keys", str(exc), Blame.NETWORK)], None
    accepted = Finding(
        check="keys",
        severity=Severity.OK,
        detail=f"accepted: read the manifests of {len(options.datasets)} dataset(s) and looked "
        f"up {plural(plan.totals.files)}",
    )
    return [accepted, *await _check_buckets(plan, store)], plan


async def diagnose(options: Options, *, now: Callable[[], float] = time.time) -> Diagnosis:
    """Run every check that applies; later checks are skipped when an earlier one fails."""
    out = options.output_directory
    findings = [_check_output(out)]
    key_findings, keys = await _check_keys(options)
    findings.extend(key_findings)
    findings.append(_check_proxy(options))
    if keys is None:
        findings.extend(_skipped("endpoint", "clock", "keys", why="needs working credentials"))
        findings.append(_check_space(None, out))
        return Diagnosis(findings=tuple(findings))
    plan: Plan | None = None
    async with open_store(options, lookups=True) as store:
        try:
            probe = await store.probe_bucket(CONSORTIUM_BUCKET)
        except NetworkError as exc:
            detail = f"{exc}; check the network, the proxy settings or --endpoint-url"
            findings.append(_fail("endpoint", detail, Blame.NETWORK))
            findings.extend(_skipped("clock", "keys", why="needs the endpoint"))
            findings.append(_check_space(None, out))
            return Diagnosis(findings=tuple(findings))
        answered = f"{store.endpoint_label} answered (HTTP {probe.status})"
        findings.append(Finding(check="endpoint", severity=Severity.OK, detail=answered))
        findings.append(_check_clock(probe.server_date, now()))
        plan_findings, plan = await _plan_findings(options, store, keys)
        findings.extend(plan_findings)
    findings.append(_check_space(plan, out))
    return Diagnosis(findings=tuple(findings), plan=plan)
