"""Request traces: Mooncake JSONL and Azure LLM inference CSV, read into :class:`TraceRequest`.

Formats (see ``shared/data/README.md``):

- **Mooncake** (``.jsonl``): one JSON object per line with ``timestamp`` (ms since trace start),
  ``input_length`` and ``output_length`` (tokens) and ``hash_ids`` (ints). Each id names one
  ``trace_block_tokens``-token block (512 in the published traces) *together with its whole
  prefix*; ``len(hash_ids) == ceil(input_length / 512)``, so the last id usually names a partial
  block. The ids cover input tokens only.
- **Azure** (``.csv``): columns ``TIMESTAMP`` (wall clock with sub-second digits),
  ``ContextTokens`` and ``GeneratedTokens``. No prefix information.

Arrival times are seconds after the first request (the earliest timestamp), multiplied by
``time_scale``. Requests are returned in arrival order (a stable sort, so ties keep file order).

A request's prompt becomes :class:`simcore.hashing.TokenSeq` segments with
:func:`prompt_segments`::

    input_length = 1100, trace_block_tokens = 512, hash_ids = [7, 9, 4]
    tokens  [0 ........ 512)[512 ...... 1024)[1024 .. 1100)
    segment (-(7+2), 512)   (-(9+2), 512)    (-(4+2), 76)

Trace content ids are negative so they never collide with the engine's synthetic content ids
(>= 0): hash id ``h`` becomes ``-(h + 2)``, which also keeps clear of -1 (CPython's ``hash()``
maps -1 like -2; block hashes do not use ``hash()`` any more, but any code that does stays safe). Prompt
tokens with no id (Azure traces, or ids that stop early) become one segment unique to the
request, ``-(10**12 + index)``. Because block hashes chain, two prompts share an engine block
exactly when their ids agree up to and including the id that block lies in, at any engine block
size that divides 512 (a 512-token id covers 512 / block_size engine blocks).

Errors in the file raise :class:`simcore.errors.ConfigError` naming the file, the line number,
the bad value and the fix.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from simcore.errors import ConfigError

#: content ids of prompt tokens without a trace hash id: -(UNIQUE_BASE + request index)
UNIQUE_BASE = 10**12
#: hash ids must be below this, so that -(h + 2) stays above -UNIQUE_BASE
MAX_HASH_ID = UNIQUE_BASE - 2

_MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(frozen=True)
class TraceRequest:
    """One request of a trace. ``arrival_s`` in seconds after the first request (scaled);
    lengths in tokens; ``hash_ids`` the Mooncake block ids (``None`` when the trace has none)."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] | None


def detect_format(path: Path) -> str:
    """``"mooncake"`` or ``"azure"`` from the file name (``.jsonl``/``.json`` or ``.csv``), else
    from the first non-blank character (``{`` means JSON lines)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "mooncake"
    if suffix == ".csv":
        return "azure"
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                return "mooncake" if line.lstrip().startswith("{") else "azure"
    raise ConfigError(f"{path}: the trace is empty (give a Mooncake .jsonl or Azure .csv trace)")


def load_trace(
    path: str | Path, fmt: str = "auto", time_scale: float = 1.0, limit: int | None = None
) -> list[TraceRequest]:
    """Read a trace file into requests sorted by arrival.

    ``fmt`` is ``"auto"``, ``"mooncake"`` or ``"azure"``; ``time_scale`` multiplies the gaps
    between arrivals (0.5 = twice as fast); ``limit`` keeps the first N requests of the file.
    Raises :class:`ConfigError` for a missing or empty file, a bad argument, or a bad line (the
    message names the file and the 1-based line number).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"trace path = {str(path)!r}: no such file (give the path of a Mooncake "
                          ".jsonl or Azure .csv trace)")
    if not (isinstance(time_scale, (int, float)) and math.isfinite(time_scale) and time_scale > 0):
        raise ConfigError(f"time_scale = {time_scale!r}: must be a positive number (1.0 = as recorded)")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit = {limit!r}: must be a positive integer or None (all requests)")
    _check_text(p)
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt == "mooncake":
        rows = list(_read_mooncake(p, limit))
    elif fmt == "azure":
        try:
            rows = list(_read_azure(p, limit))
        except csv.Error as exc:
            raise ConfigError(f"{p}: not a readable CSV trace: {exc} (give an Azure .csv trace)") from None
    else:
        raise ConfigError(f"trace format = {fmt!r}: use one of auto, mooncake, azure")
    if not rows:
        raise ConfigError(f"{p}: the trace has no requests (give a non-empty trace)")
    rows.sort(key=lambda r: r[0])  # stable: ties keep file order
    t0 = rows[0][0]
    return [TraceRequest((t - t0) * time_scale, n_in, n_out, ids) for t, n_in, n_out, ids in rows]


_Row = tuple[float, int, int, tuple[int, ...] | None]  # (arrival s, prompt, output, ids)


def _check_text(path: Path) -> None:
    """Reject a file that is not UTF-8 text, naming the line of the first bad byte."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        msg = f"byte {data[exc.start]:#04x} is not UTF-8 text (give a UTF-8 trace)"
        raise _bad(path, line, msg) from None
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise _bad(path, line, "contains a NUL byte (give a text trace)")


def _bad(path: Path, lineno: int, msg: str) -> ConfigError:
    return ConfigError(f"{path}:{lineno}: {msg}")


def _int_field(path: Path, lineno: int, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise _bad(path, lineno, f"{name} = {value!r}: must be {what}")
    return value


def _read_mooncake(path: Path, limit: int | None) -> Iterator[_Row]:
    count = 0
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _bad(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno}): each line "
                           "must be one JSON object") from None
            if not isinstance(obj, dict):
                raise _bad(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
            for key in _MOONCAKE_KEYS:
                if key not in obj:
                    raise _bad(path, lineno, f"missing key {key!r} (each line needs timestamp [ms], "
                               "input_length, output_length and optionally hash_ids)")
            ts = obj["timestamp"]
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
                raise _bad(path, lineno, f"timestamp = {ts!r}: must be a number of milliseconds >= 0")
            n_in = _int_field(path, lineno, "input_length", obj["input_length"], 1)
            n_out = _int_field(path, lineno, "output_length", obj["output_length"], 1)
            ids = obj.get("hash_ids")
            if ids is not None:
                if not isinstance(ids, list) or not all(
                    isinstance(h, int) and not isinstance(h, bool) and 0 <= h < MAX_HASH_ID for h in ids
                ):
                    raise _bad(path, lineno, f"hash_ids = {_short(ids)}: must be a list of integers in "
                               f"[0, {MAX_HASH_ID})")
                ids = tuple(ids)
            yield ts / 1000.0, n_in, n_out, ids
            count += 1
            if limit is not None and count >= limit:
                return


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_wall_clock(text: str) -> tuple[datetime, float]:
    """``2023-11-16 18:15:46.6805900`` -> (whole-second UTC-naive datetime, fraction of a second).

    The fraction is kept apart because Azure timestamps carry 7 digits (more than ``datetime``
    holds) and so that differences stay exact to the digit.
    """
    s = text.strip()
    frac = 0.0
    if "." in s:
        head, tail = s.split(".", 1)
        n = 0
        while n < len(tail) and tail[n].isdigit():
            n += 1
        if n == 0:
            raise ValueError("no digits after the decimal point")
        frac = int(tail[:n]) / 10**n
        s = head + tail[n:]
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt, frac


def _read_azure(path: Path, limit: int | None) -> Iterator[_Row]:
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ConfigError(f"{path}: the trace is empty (give a Mooncake .jsonl or Azure .csv trace)")
        names = [h.strip() for h in header]
        missing = [c for c in _AZURE_COLUMNS if c not in names]
        if missing:
            raise _bad(path, 1, f"header {names!r} lacks column(s) {', '.join(missing)} (an Azure trace "
                       "needs TIMESTAMP, ContextTokens, GeneratedTokens)")
        i_ts, i_in, i_out = (names.index(c) for c in _AZURE_COLUMNS)
        first: datetime | None = None
        first_frac = 0.0
        count = 0
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < len(names):
                raise _bad(path, lineno, f"{len(row)} columns, expected {len(names)} (as in the header)")
            try:
                dt, frac = _parse_wall_clock(row[i_ts])
            except ValueError:
                raise _bad(path, lineno, f"TIMESTAMP = {row[i_ts]!r}: not a date and time (expected e.g. "
                           "2023-11-16 18:15:46.6805900)") from None
            values = []
            for col, i in (("ContextTokens", i_in), ("GeneratedTokens", i_out)):
                try:
                    v = int(row[i].strip())
                except ValueError:
                    raise _bad(path, lineno, f"{col} = {row[i]!r}: must be a positive integer") from None
                values.append(_int_field(path, lineno, col, v, 1))
            if first is None:
                first, first_frac = dt, frac
            t = (dt - first).total_seconds() + (frac - first_frac)
            yield t, values[0], values[1], None
            count += 1
            if limit is not None and count >= limit:
                return


def prompt_segments(req: TraceRequest, index: int, trace_block_tokens: int = 512) -> list[tuple[int, int]]:
    """The prompt of request number ``index`` (its position in the trace) as TokenSeq segments.

    One segment ``(-(h + 2), min(trace_block_tokens, tokens left))`` per hash id ``h`` while
    prompt tokens remain (ids beyond the prompt are ignored), then one segment
    ``(-(10**12 + index), rest)`` for the prompt tokens no id covers (all of them for Azure).
    Segment lengths sum to ``req.prompt_tokens``.
    """
    if trace_block_tokens < 1:
        raise ValueError(f"trace_block_tokens={trace_block_tokens}: must be positive")
    segments: list[tuple[int, int]] = []
    left = req.prompt_tokens
    if req.hash_ids:
        for h in req.hash_ids:
            if left <= 0:
                break
            take = trace_block_tokens if left >= trace_block_tokens else left
            segments.append((-(h + 2), take))  # not -(h + 1): hash(-1) == hash(-2)
            left -= take
    if left > 0:
        segments.append((-(UNIQUE_BASE + index), left))
    return segments


def infer_conversations(requests: Sequence[TraceRequest], trace_block_tokens: int = 512) -> list[int]:
    """A conversation number for each request of a trace that has no session ids (Mooncake).

    A chat turn's prompt is the previous turn's prompt plus its reply plus a new message, so it
    *extends* the previous prompt: its hash ids start with all of that prompt's full-block ids.
    The rule, over the whole trace (it stands in for the session ids a router would see):

    1. a request's *parent* is the latest earlier request whose full-block ids are the longest
       prefix of its own (none if no earlier prompt is a prefix of it);
    2. a request continues its parent's conversation if it is the parent's only child; a parent
       with several children is shared context (a system prompt every conversation starts
       from, or a forked conversation), and each child starts a new conversation.

    Numbers count from 0 in order of first appearance. Without hash ids (Azure) every request
    is its own conversation. On the Mooncake conversation trace this finds 7,897 conversations
    in 12,031 requests (2,202 of them with more than one turn).
    """
    node_of: dict[tuple[int, int], int] = {}  # (prefix node, next id) -> node: a trie of id paths
    last_end: dict[int, int] = {}  # node -> latest request whose full-block ids end there
    parents: list[int] = []
    for j, req in enumerate(requests):
        ids = req.hash_ids or ()
        full = min(len(ids), req.prompt_tokens // trace_block_tokens)
        node = 0
        parent = -1
        for i in range(full):
            key = (node, ids[i])
            child = node_of.get(key)
            if child is None:
                child = node_of[key] = len(node_of) + 1
            node = child
            parent = last_end.get(node, parent)  # the deepest earlier end on the path wins
        parents.append(parent)
        if full:
            last_end[node] = j
    children = Counter(p for p in parents if p >= 0)
    out: list[int] = []
    n = 0
    for p in parents:
        if p >= 0 and children[p] == 1:
            out.append(out[p])
        else:
            out.append(n)
            n += 1
    return out
