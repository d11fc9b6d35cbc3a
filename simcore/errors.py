"""One-line, user-facing error messages for bad input (field path, value, fix)."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
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


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation can hold (through Optional, unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _kind_tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("kind")
    return field.default if field is not None else None


def suggest_key(root: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """For an unknown key at ``loc`` under ``root``: the closest valid key at that level, or None.

    ``loc`` is pydantic's error location: field names, union tags (``chat``) and list indices."""
    candidates: list[type[BaseModel]] = [root]
    for item in loc[:-1]:
        fields = [m.model_fields[item] for m in candidates if item in m.model_fields]
        if fields:
            candidates = [m for f in fields for m in _models_in(f.annotation)]
        elif isinstance(item, str):  # a discriminator tag: keep the variant it names
            tagged = [m for m in candidates if _kind_tag(m) == item]
            candidates = tagged or candidates
        if not candidates:
            return None
    names = sorted({name for m in candidates for name in m.model_fields})
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.7)
    return close[0] if close else None


def _fix(err: ErrorDetails, root: type[BaseModel] | None = None, prefix: str = "") -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        close = suggest_key(root, tuple(err["loc"])) if root is not None and err["loc"] else None
        if close is not None:
            return f"did you mean {_path((*tuple(err['loc'])[:-1], close), prefix)}?"
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


def format_validation_error(
    exc: ValidationError, prefix: str = "", source: str = "", model: type[BaseModel] | None = None
) -> str:
    """Collapse pydantic's report into one line naming each bad field, its value and a fix.

    With ``model`` (the class that was validated), a misspelt key gets "did you mean ...?"."""
    pieces = []
    for err in exc.errors():
        msg = _message(err)
        where = _path(err["loc"], prefix)
        fix = _fix(err, model, prefix)
        value = "" if err["type"] == "missing" else f" = {_short(err.get('input'))}"
        pieces.append(f"{where}{value}: {msg}" + (f" ({fix})" if fix and fix not in msg else ""))
    head = f"{source}: " if source else ""
    more = f" (and {len(pieces) - 1} more)" if len(pieces) > 1 else ""
    return f"{head}invalid config: {pieces[0]}{more}"
