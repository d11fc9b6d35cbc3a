"""One-line, user-facing error messages for bad input (field path, value, fix)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

# Discriminator tags pydantic inserts into error locations; not part of the user's key path.
_UNION_TAGS = {"chat", "poisson", "api", "mix", "trace", "shared_prefix", "constant", "uniform", "lognormal",
               "exponential", "geometric", "choice", "function-after[_check_clip(), constant]"}


class ConfigError(ValueError):
    """Bad user input. ``str(err)`` is a single line: where, what value, and how to fix it."""


def _path(loc: tuple[Any, ...], prefix: str) -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        text = str(item)
        if text in _UNION_TAGS or text.startswith("function-"):
            continue
        parts.append(f"[{text}]" if isinstance(item, int) else text)
    return ".".join(parts).replace(".[", "[") or "<root>"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fix(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "remove it or check its spelling"
    if kind == "missing":
        return "add it"
    if kind == "union_tag_invalid":
        return "set kind to one of " + str((err.get("ctx") or {}).get("expected_tags", ""))
    if kind.startswith("greater"):
        return "raise it"
    if kind.startswith("less"):
        return "lower it"
    return ""


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _message(err: ErrorDetails) -> str:
    ctx = err.get("ctx") or {}
    for key, op in _BOUNDS.items():
        if key in ctx and err["type"].startswith(("greater", "less")):
            bound = ctx[key]
            return f"must be {op} {bound if isinstance(bound, int) else format(bound, 'g')}"
    if err["type"] == "finite_number":
        return "must be a finite number"
    return err["msg"].removeprefix("Value error, ")


def format_validation_error(exc: ValidationError, prefix: str = "", source: str = "") -> str:
    """Collapse pydantic's report into one line naming each bad field, its value and a fix."""
    pieces = []
    for err in exc.errors():
        msg = _message(err)
        where = _path(err["loc"], prefix)
        fix = _fix(err)
        value = "" if err["type"] == "missing" else f" = {_short(err.get('input'))}"
        pieces.append(f"{where}{value}: {msg}" + (f" ({fix})" if fix and fix not in msg else ""))
    head = f"{source}: " if source else ""
    more = f" (and {len(pieces) - 1} more)" if len(pieces) > 1 else ""
    return f"{head}invalid config: {pieces[0]}{more}"
