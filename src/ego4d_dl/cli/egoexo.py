"""The ``egoexo-dl`` command line: the original ``egoexo`` downloader's flags, ego4d-dl's commands.

Parsing only: the original's argparse habits (lists after one flag, ``-dy``, prefixes of its
long options) read as argparse read them, and no command meaning ``download``. The commands
are in ``egoexo_commands`` (loaded on use, as ``root``'s).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer

from .root import Entry, TableGroup

__all__ = ["COMMANDS", "app", "egoexo_args", "main"]

COMMANDS: dict[str, Entry] = {
    "plan": Entry(
        "egoexo_commands", "plan_command", "What a download would fetch (and --delete remove)."
    ),
    "download": Entry(
        "egoexo_commands", "download_command", "Download, verify, resume (the default command)."
    ),
    "demo": Entry(
        "egoexo_commands",
        "demo_command",
        "A real download from a local S3 sandbox; no credentials needed.",
    ),
    "verify": Entry(
        "egoexo_commands", "verify_command", "Re-hash downloaded files against their ETags."
    ),
    "status": Entry("egoexo_commands", "status_command", "Progress of every part, offline."),
    "doctor": Entry(
        "egoexo_commands", "doctor_command", "Check keys, clock, buckets, proxies and disk."
    ),
}

# The original's long options (argparse takes an unambiguous prefix of one as that option)
# and its list options (nargs="+": one value or more after the flag).
_ORIGINAL_LONG = (
    "--out_dir",
    "--parts",
    "--uids",
    "--benchmarks",
    "--splits",
    "--views",
    "--universities",
    "--num_workers",
    "--yes",
    "--delete_yes",
    "--delete",
    "--force",
    "--release",
    "--s3_profile",
    "--base_dir",
    "--help",
)
_LISTS = frozenset({"--parts", "--uids", "--benchmarks", "--splits", "--views", "--universities"})
_LISTS_SHORT = frozenset({"-u"})


def _is_option(token: str) -> bool:
    return len(token) > 1 and token.startswith("-")


def _expand(name: str, known: frozenset[str]) -> str:
    if name in known or not name.startswith("--"):
        return name
    matches = [o for o in _ORIGINAL_LONG if o.startswith(name)]
    if len(matches) > 1 and name not in matches:
        raise ValueError(f"ambiguous option: {name} could match {', '.join(matches)}")
    return matches[0] if len(matches) == 1 else name


def egoexo_args(args: Sequence[str], known: frozenset[str]) -> list[str]:
    """The original's command line in the form click parses: ``--parts a b`` -> ``--parts a
    --parts b``, ``-dy`` -> ``--delete_yes``, ``--out`` -> ``--out_dir``. ``ValueError`` (in
    argparse's words) for what argparse refused."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1 :])
            break
        if arg == "-dy":
            arg = "--delete_yes"
        name, eq, attached = arg.partition("=")
        name = _expand(name, known)
        if name not in _LISTS and name not in _LISTS_SHORT:
            out.append(name + eq + attached)
            continue
        values = [attached] if eq else []
        while not eq and i < len(args) and not _is_option(args[i]):
            values.append(args[i])
            i += 1
        if not values:
            raise ValueError(f"argument {name}: expected at least one argument")
        for value in values:
            out.extend((name, value))
    return out


class _EgoExoGroup(TableGroup):
    """The original ``egoexo`` downloader's argparse habits, read as it read them."""

    table = COMMANDS

    def rewrite(self, command: Any, args: list[str]) -> list[str]:
        if command is None:
            return args
        known = frozenset(o for p in command.params for o in (*p.opts, *p.secondary_opts))
        return egoexo_args(args, known | {"--help", "-h"})


_MAIN_HELP = """Download Ego-Exo4D: concurrent, resumable, every byte verified.

The original `egoexo` downloader's command lines work as they are; run the same command
again after an interruption and it resumes.

\b
Examples:
  # see the tool work first: a local S3 sandbox, no credentials
  egoexo-dl demo
  # the original's usage, unchanged
  egoexo-dl -o ~/egoexo --parts annotations takes --views ego -y
  # what would it fetch, how big, is there room? (downloads nothing)
  egoexo-dl plan -o ~/egoexo --parts all --uids <uid>

Run `egoexo-dl COMMAND --help` for a command's options.
"""

app = typer.Typer(
    cls=_EgoExoGroup,
    name="egoexo-dl",
    help=_MAIN_HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    callback=lambda: None,
)


def main() -> NoReturn:
    """Console-script entry point of ``egoexo-dl``."""
    from . import _leave

    if sys.argv[1:] == ["--version"]:
        from .. import __version__

        sys.stdout.write(f"egoexo-dl (ego4d-dl {__version__})\n")
        _leave(0)
    try:
        app(prog_name="egoexo-dl")
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)
