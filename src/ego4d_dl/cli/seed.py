"""The original CLI's argparse habits, read as argparse read them: list options, prefixes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ORIGINAL_LONG_OPTIONS",
    "command_options",
    "expand_abbreviation",
    "expand_list_flags",
    "seed_args",
]


# The original CLI's long options. argparse (allow_abbrev) takes an unambiguous prefix of one
# of them as that option (--output, --data, --bench, --univ, --ver, --aws ...), and so do we;
# the prefix is judged among the original's options only, so ours cannot make it ambiguous.
ORIGINAL_LONG_OPTIONS = (
    "--output_directory",
    "--datasets",
    "--benchmarks",
    "--annotations",
    "--metadata",
    "--no-metadata",
    "--manifest",
    "--bypass-existing",
    "--skip-s3-checks",
    "--version",
    "--aws_profile_name",
    "--universities",
    "--yes",
    "--video_uids",
    "--video_uid_file",
    "--manifest-override-path",
    "--list-datasets",
    "--help",
    "--config_path",
)

# The original's list options and their argparse nargs: "+" needs a value, "*" may have none
# (then it is no filter). Each spelling maps to the name used in messages.
_ONE_OR_MORE = {
    "--datasets": "--datasets",
    "--dataset": "--datasets",
    "--universities": "--universities",
    "--video_uids": "--video_uids",
    "--video-uids": "--video_uids",
}

_ANY_NUMBER = {"--benchmarks": "--benchmarks", "--annotations": "--annotations"}


def _is_option(token: str) -> bool:
    return len(token) > 1 and token.startswith("-")


def expand_abbreviation(name: str, known: frozenset[str]) -> str:
    """``--data`` -> ``--datasets``: what argparse made of a prefix of the original's options.

    A name the command knows stays as it is, and so does one that is ambiguous among the
    original's options (argparse refused those too) or that names nothing this command has.
    """
    if name in known or not name.startswith("--"):
        return name
    matches = [o for o in ORIGINAL_LONG_OPTIONS if o.startswith(name)]
    if len(matches) == 1 and (matches[0] in known or matches[0] == "--annotations"):
        return matches[0]
    return name


def seed_args(args: Sequence[str], known: frozenset[str]) -> tuple[list[str], list[str]]:
    """The original CLI's argparse command line in the form click parses, and notes to show.

    ``--datasets a b`` -> ``--datasets a --datasets b``; ``--benchmarks`` with no value (no
    filter in the original) is dropped; ``--datasets`` with none is argparse's usage error;
    ``--annotations [...]`` (a no-op in the original) is dropped with a note; abbreviations
    are expanded. A list option given twice is a note: the original kept only the last.
    ``ValueError`` (argparse's wording) for what argparse refused.
    """
    out: list[str] = []
    notes: list[str] = []
    given: dict[str, list[list[str]]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1 :])
            break
        name, eq, attached = arg.partition("=")
        name = expand_abbreviation(name, known)
        if name.startswith("--") and name not in known:
            matches = [o for o in ORIGINAL_LONG_OPTIONS if o.startswith(name)]
            if len(matches) > 1:
                raise ValueError(f"ambiguous option: {name} could match {', '.join(matches)}")
        arg = name + eq + attached
        label = _ONE_OR_MORE.get(name) or _ANY_NUMBER.get(name)
        if label is None:
            out.append(arg)
            continue
        values = [attached] if eq else []
        if not eq:
            while i < len(args) and not _is_option(args[i]):
                values.append(args[i])
                i += 1
        if label == "--annotations":
            notes.append(
                "--annotations does nothing, as in the original CLI; annotations are a "
                "dataset: --datasets annotations"
            )
            continue
        if not values:
            if name in _ANY_NUMBER:
                continue  # argparse's nargs="*" with no value: no filter
            raise ValueError(f"argument {label}: expected at least one argument")
        given.setdefault(label, []).append(values)
        for value in values:
            out.extend((name, value))
    for label, groups in given.items():
        if len(groups) > 1:
            every = [v for g in groups for v in g]
            notes.append(
                f"{label} given {len(groups)} times: ego4d-dl takes every value "
                f"({' '.join(every)}); the original CLI took only the last "
                f"({' '.join(groups[-1])}): give {label} once for that"
            )
    return out, notes


def expand_list_flags(args: Sequence[str]) -> list[str]:
    """``--datasets a b --yes`` -> ``--datasets a --datasets b --yes`` (argparse's nargs)."""
    return seed_args(args, frozenset())[0]


def command_options(command: Any) -> frozenset[str]:
    names: set[str] = set()
    for param in getattr(command, "params", ()):
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return frozenset(names)
