"""Untrusted text made safe to show: control and format characters escaped visibly; pure."""

from __future__ import annotations

import unicodedata

__all__ = ["has_control", "safe"]

# Cc: C0, DEL, C1 (ESC, CR, NUL, CSI ...); Cf: format characters (bidi overrides and
# isolates, zero-width joiners, BOM); Cs: lone surrogates (undecodable bytes of a file name);
# Zl, Zp: the line and paragraph separators, which some terminals and viewers break lines on.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe(text: str) -> str:
    """``text`` with every control, format, surrogate and line-separator character replaced
    by a visible escape; anything else (letters of any script, spaces, brackets) unchanged.

    One line out for any input; applying it twice changes nothing more.
    """
    # The common case (plain printable text) costs one C-level scan.
    if text.isprintable():
        return text
    return "".join(_escape(c) if _unsafe(c) else c for c in text)


def has_control(text: str) -> bool:
    """Whether ``text`` holds a character ``safe`` would escape (names holding one are
    refused: a file name must look on screen like what it is)."""
    return not text.isprintable() and any(_unsafe(c) for c in text)
