"""Option values of plain types (flags, text, numbers, paths, lists) converted as Click did.

Typer 0.2x converts every option value through a pydantic ``TypeAdapter`` built on first use:
importing pydantic and building the adapters of a ``download`` cost 0.09-0.1 s of CPU on
every run (measured, of a 0.5 s nothing-to-do download). Our options need none of it; the
conversions here give the same values and the same messages. An option of any other type,
or a Typer without per-option converters (older ones used Click's types), is left to Typer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer

__all__ = ["install_plain_coercion"]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Input should be a valid string")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("Input should be a valid boolean")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("Input should be a valid integer")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(
            "Input should be a valid integer, unable to parse string as an integer"
        ) from None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("Input should be a valid number")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError(
            "Input should be a valid number, unable to parse string as a number"
        ) from None


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    return Path(_text(value))


_CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    bool: _flag,  # flags give bools; the help flag, unset, gives None
    str: _text,
    int: _integer,
    float: _number,
    Path: _path,
    list[str]: _text,
    list[Path]: _path,
}


class _Plain:
    """What Typer asks of an option's converter (``coerce``), for one plain type."""

    __slots__ = ("convert",)

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        self.convert = convert

    def coerce(self, value: Any, *, param: Any, ctx: Any) -> Any:
        many = bool(param.multiple) or param.nargs == -1
        if value is None:
            return () if many else None
        try:
            if not many:
                return self.convert(value)
            if isinstance(value, str):
                raise ValueError("Value must be an iterable.")
            return [self.convert(item) for item in value]
        except ValueError as exc:
            raise typer.BadParameter(str(exc), ctx=ctx, param=param) from None


def install_plain_coercion(params: Iterable[Any]) -> None:
    """Give each of ``params`` (options of a Click command Typer built) of a plain type our
    converter in place of Typer's, where this Typer has per-option converters."""
    for param in params:
        described = getattr(param, "type_descriptor", None)
        if described is None or not callable(getattr(param, "get_runtime_param", None)):
            continue
        if getattr(described, "file_annotation", None) is not None:
            continue
        info = getattr(described, "parameter_info", None)
        if any(getattr(info, name, None) is not None for name in ("parser", "min", "max")):
            continue
        if getattr(info, "callback", None) is not None:
            continue
        try:
            convert = _CONVERTERS.get(described.annotation)
        except TypeError:  # an unhashable annotation is not one of ours
            continue
        if convert is not None:
            plain = _Plain(convert)
            param.get_runtime_param = lambda plain=plain: plain
