"""The one exception tree of ego4d-dl; only ``cli`` turns these into messages and exit codes.

Imports nothing from the package. Every message is a complete sentence a user can act on::

    Ego4dDLError                      anything ego4d-dl raises on purpose
    ├── ConfigError                   bad flags, config file, profile, endpoint (exit 2)
    │   ├── DatasetNotFoundError      no manifest for a dataset in this release
    │   └── ReleaseNotFoundError      no such release in the consortium bucket
    ├── ManifestError                 a manifest that cannot be used at all (exit 2)
    ├── PlanError                     the selection cannot be planned safely (exit 2)
    ├── UidsNotFoundError             requested UIDs no requested video dataset holds (exit 1)
    ├── NoAnswerError                 the confirmation question met end of input (exit 1)
    ├── CredentialsError              keys rejected, expired or absent (exit 3)
    ├── DiskFullError                 no space left on device (exit 1, resumable)
    ├── NetworkError                  the endpoint cannot be reached at all (exit 1)
    └── TransferError(key)            one object could not be fetched (file fails, run goes on)
        ├── ObjectNotFoundError       404: the object is not on the server
        ├── AccessDeniedError         403 on one object while the keys themselves are valid
        ├── RemoteChangedError        412 / ETag moved: the object was replaced on the server
        ├── IntegrityError            bytes on disk do not match the ETag or checksum
        ├── TransientError            worth retrying: 5xx, SlowDown, resets, stalls, short bodies
        └── RetriesExhaustedError     a transient failure that outlived its retry budget

``TransientError`` is raised by the store and consumed by the retry loop; it only reaches a
user wrapped in ``RetriesExhaustedError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = [
    "AccessDeniedError",
    "ConfigError",
    "CredentialsError",
    "DatasetNotFoundError",
    "DiskFullError",
    "Ego4dDLError",
    "IntegrityError",
    "ManifestError",
    "NetworkError",
    "NoAnswerError",
    "ObjectNotFoundError",
    "PlanError",
    "ReleaseNotFoundError",
    "RemoteChangedError",
    "RetriesExhaustedError",
    "TransferError",
    "TransientError",
    "UidsNotFoundError",
    "leaves",
    "most_relevant",
    "rank",
]


class Ego4dDLError(Exception):
    """Base of every error ego4d-dl raises on purpose; ``str(exc)`` is the user-facing line."""


class ConfigError(Ego4dDLError):
    """The user's flags, config file, profile or endpoint cannot work as given."""


class DatasetNotFoundError(ConfigError):
    """A dataset has no manifest in the selected release."""

    def __init__(self, dataset: str, version: str, suggestions: tuple[str, ...]) -> None:
        hint = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"dataset {dataset!r} has no manifest in release {version}{hint}")
        self.dataset = dataset
        self.version = version
        self.suggestions = suggestions


class ReleaseNotFoundError(ConfigError):
    """The release is not a folder of the consortium bucket; ``releases`` are those that are."""

    def __init__(self, version: str, releases: tuple[str, ...], where: str) -> None:
        held = f"it holds {', '.join(releases)}" if releases else "no release was found there"
        super().__init__(f"unknown release {version!r}: not in {where}; {held}")
        self.version = version
        self.releases = releases


class ManifestError(Ego4dDLError):
    """A manifest is unusable as a whole (no uid column, not CSV, not UTF-8)."""


class PlanError(Ego4dDLError):
    """The selection cannot be planned safely (two files on one path, a path outside the output)."""


class UidsNotFoundError(Ego4dDLError):
    """Requested video UIDs that no requested video dataset holds once the filters are applied.

    The original CLI stops on these before downloading anything, with exit code 1; so do we.
    """


class NoAnswerError(Ego4dDLError):
    """The confirmation question met end of input (Ctrl-D, an empty pipe): exit 1, as the
    original CLI's ``input()`` did (with a traceback)."""

    def __init__(self) -> None:
        super().__init__(
            "no answer to the question (end of input); nothing was downloaded. Pass --yes to "
            "start without asking"
        )


class CredentialsError(Ego4dDLError):
    """The server rejected the keys (invalid, expired, wrong secret) or there are none."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class DiskFullError(Ego4dDLError):
    """The output filesystem ran out of space; what is journaled stays resumable."""


class NetworkError(Ego4dDLError):
    """The endpoint cannot be reached (refused, DNS, TLS); retried before it is raised."""


class TransferError(Ego4dDLError):
    """One object could not be fetched; the run reports it and carries on with the others."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class ObjectNotFoundError(TransferError):
    """The server answered 404 for an object the manifest names."""


class AccessDeniedError(TransferError):
    """The server answered 403 for one object although the keys work elsewhere."""


class RemoteChangedError(TransferError):
    """The object's ETag is not the one the download started against (HTTP 412)."""


class IntegrityError(TransferError):
    """Downloaded bytes do not match the object's ETag, checksum or size."""


class TransientError(TransferError):
    """A failure that a later attempt may not meet (5xx, throttling, resets, stalls)."""

    def __init__(
        self, key: str, message: str, *, throttled: bool = False, stalled: bool = False
    ) -> None:
        super().__init__(key, message)
        self.throttled = throttled
        self.stalled = stalled


class RetriesExhaustedError(TransferError):
    """A transient failure repeated until the retry budget ran out."""


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception inside a (possibly nested) exception group."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(leaves(exc))
        else:
            out.append(exc)
    return out


# When concurrent work fails in several ways at once, the error that concerns the user most
# decides: a bug first (it must surface), then what stops everything, then what stops one
# file. The one ranking used by planning, lookups and the engine.
_RANKING: tuple[type[BaseException], ...] = (
    CredentialsError,
    ConfigError,
    DiskFullError,
    NetworkError,
    ManifestError,
    PlanError,
    RemoteChangedError,
    ObjectNotFoundError,
    AccessDeniedError,
    IntegrityError,
    TransferError,
    Ego4dDLError,
    OSError,
)


def rank(exc: BaseException, *, cancelled_first: bool = False) -> int:
    """Where ``exc`` stands in the ranking (lower: more relevant). A bug (not one of ours) is
    0. Cancellation is the least informative, except where it must win (``cancelled_first``:
    a task being cancelled must not be reported as one of its requests' failures)."""
    if isinstance(exc, asyncio.CancelledError):
        return 1 if cancelled_first else len(_RANKING) + 2
    for i, kind in enumerate(_RANKING):
        if isinstance(exc, kind):
            return i + 2
    return 0


def most_relevant(
    group: BaseExceptionGroup[BaseException],
    *,
    cancelled_first: bool = False,
    unwrap: Callable[[BaseException], BaseException] | None = None,
) -> BaseException:
    """The one leaf of an exception group (from a TaskGroup) that should decide; ``unwrap``
    gives the error a leaf stands for, when it wraps one (the engine's ``RunStopped``)."""

    def key(exc: BaseException) -> int:
        return rank(unwrap(exc) if unwrap else exc, cancelled_first=cancelled_first)

    return min(leaves(group), key=key)
