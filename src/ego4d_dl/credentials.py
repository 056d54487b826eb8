"""The AWS credential chain: an aiobotocore session for the options, the keys it finds, and its
failures (of whatever type) as one ``CredentialsError``. Imports botocore only when used."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import Credentials
from .errors import ConfigError, CredentialsError, Ego4dDLError

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

__all__ = [
    "KeyInfo",
    "credential_errors",
    "make_session",
    "profile_errors",
    "profile_message",
    "resolve_keys",
    "session_region",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    """The keys the AWS credential chain found (never the secret) and where it found them."""

    access_key_id: str
    method: str  # botocore's name for the source: env, shared-credentials-file, ...
    has_session_token: bool
    profile_region: str | None  # the region configured for the profile, as written


@functools.cache
def _credential_exceptions() -> tuple[type[BaseException], ...]:
    """What botocore raises when a credential provider cannot produce keys: a
    credential_process that fails, an SSO token that expired or cannot be loaded, an
    assume-role refresh that needs MFA, the instance metadata service... (SSOError covers
    SSOTokenLoadError and UnauthorizedSSOTokenError)."""
    import botocore.exceptions as bx

    return (
        bx.CredentialRetrievalError,
        bx.TokenRetrievalError,
        bx.NoAuthTokenError,
        bx.RefreshWithMFAUnsupportedError,
        bx.SSOError,
        bx.UnknownCredentialError,
        bx.MetadataRetrievalError,
    )


# Operations credential providers call (STS for assume-role, SSO portal and OIDC); an error
# answer to one of them is about the keys, never about an object.
_CREDENTIAL_OPERATIONS = frozenset(
    {
        "AssumeRole",
        "AssumeRoleWithSAML",
        "AssumeRoleWithWebIdentity",
        "GetSessionToken",
        "GetFederationToken",
        "GetRoleCredentials",
        "CreateToken",
    }
)
# Where refreshing happens: whatever escapes from these (a RuntimeError "refreshed
# credentials are still expired", a credential_process printing no JSON) is a credentials
# failure, whatever its type.
_CREDENTIAL_MODULES = frozenset(
    {"botocore.credentials", "aiobotocore.credentials", "botocore.tokens", "aiobotocore.tokens"}
)


def _credential_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) comes from obtaining or refreshing credentials."""
    from botocore.exceptions import ClientError

    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, _credential_exceptions()):
            return True
        if (
            isinstance(current, ClientError)
            and getattr(current, "operation_name", None) in _CREDENTIAL_OPERATIONS
        ):
            return True
        tb = current.__traceback__
        while tb is not None:
            if tb.tb_frame.f_globals.get("__name__") in _CREDENTIAL_MODULES:
                return True
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
        seen += 1
    return False


@contextlib.contextmanager
def credential_errors() -> Iterator[None]:
    """Credential providers' failures, of any type, as one ``CredentialsError``."""
    try:
        yield
    except Ego4dDLError:
        raise
    except Exception as exc:
        if not _credential_failure(exc):
            raise
        detail = str(exc).strip() or type(exc).__name__
        raise CredentialsError(
            f"the AWS credentials could not be obtained or refreshed: {detail}",
            code="CredentialRefresh",
        ) from exc


def profile_message(profile: str | None) -> str:
    """What to say when the AWS profile named (or implied) does not exist."""
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    credentials = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    config = os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
    return (
        f"AWS profile {name!r} not found in {credentials} or {config}; add your "
        f"Ego4D / Ego-Exo4D keys with: aws configure --profile {name}"
    )


@contextlib.contextmanager
def profile_errors(profile: str | None) -> Iterator[None]:
    """A profile that does not exist as a ``ConfigError``."""
    from botocore.exceptions import ProfileNotFound

    try:
        yield
    except ProfileNotFound as exc:
        raise ConfigError(profile_message(profile)) from exc


def _session_class() -> Any:
    """aiobotocore's session class; the first import of the stack skips the system's CA
    certificates for the two TLS contexts aiohttp makes when it is imported.

    Those contexts (``ssl=True``'s default) serve no request of ours: aiobotocore hands its
    connectors a context of its own (certifi's CAs, botocore's settings) or ``False`` for
    plain HTTP. Loading the CAs into them cost ~55 ms of every run. Left without CAs, they
    verify nothing, so any use of them would fail closed, never pass unverified.
    """
    import ssl
    import sys

    first = "aiohttp.connector" not in sys.modules
    load = ssl.SSLContext.set_default_verify_paths
    if first:
        ssl.SSLContext.set_default_verify_paths = lambda self: None  # type: ignore[method-assign]
    try:
        from aiobotocore.session import AioSession
    finally:
        ssl.SSLContext.set_default_verify_paths = load  # type: ignore[method-assign]
    return AioSession


def make_session(credentials: Credentials) -> AioSession:
    """An aiobotocore session for the profile (or the default chain), profile errors
    translated. Not aioboto3's ``Session``: it adds nothing we use, and its S3 customisations
    import boto3's and s3transfer's modules into every client made (0.05-0.1 s of each run)."""
    session_class = _session_class()

    with profile_errors(credentials.profile):
        session = session_class()
        if credentials.access_key_id and credentials.secret_access_key:
            session.set_credentials(
                credentials.access_key_id,
                credentials.secret_access_key,
                credentials.session_token,
            )
        elif credentials.profile is not None:
            session.set_config_variable("profile", credentials.profile)
        # A profile (named, or by AWS_PROFILE) that does not exist is a ConfigError here, as
        # aioboto3's Session raised it, before the credential chain would make it a
        # CredentialsError.
        session.get_scoped_config()
        return session


def session_region(session: AioSession) -> str | None:
    """The region the session's configuration names (``AWS_REGION``, the profile's)."""
    region = session.get_config_variable("region")
    return str(region) if region else None


async def resolve_keys(credentials: Credentials) -> KeyInfo | None:
    """Run the AWS credential chain as a download would; ``None`` when it finds no keys.

    A missing profile is a ``ConfigError``; half-configured keys a ``CredentialsError``.
    """
    from botocore.exceptions import PartialCredentialsError

    session = make_session(credentials)
    found: Any
    try:
        with profile_errors(credentials.profile), credential_errors():
            found = await session.get_credentials()
            if found is None:
                return None
            frozen = await found.get_frozen_credentials()
    except PartialCredentialsError as exc:
        raise CredentialsError(f"incomplete AWS credentials: {exc}", code="Partial") from exc
    return KeyInfo(
        access_key_id=str(frozen.access_key),
        method=str(getattr(found, "method", "") or "unknown"),
        has_session_token=bool(frozen.token),
        profile_region=session_region(session),
    )
