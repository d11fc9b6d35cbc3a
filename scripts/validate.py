"""Validation page: published vs simulated prefix-cache hit rates of the public traces.

    python scripts/validate.py [--traces-dir ../shared/data/traces] [--json out.json]

For each trace and cache capacity (tokens) it prints the published hit rate (where one is
available as a number), the hit rate of ``kvsweep replay`` (LRU, 512-token blocks, leading run
of cached full blocks, hit tokens / input tokens) and the difference, then says which traces
cannot be matched and why.

Published reference: Qin et al., "Mooncake: Trading More Storage for Less Computation - A
KVCache-centric Architecture for Serving LLM Chatbot", USENIX FAST '25, Figure 9 (hit rate
against cache capacity under LRU, infinite-capacity maximum marked). Only the infinite-capacity
maxima are available to this project as numbers (synthetic 0.658, conversation 0.401, as
transcribed in shared/data/README.md; they agree with the paper's Table 2 "cache ratio" column,
66% and 40%). The finite-capacity points exist only as a plotted curve; none are invented here,
so those rows show "-" in the published column.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a source tree
    sys.path.insert(0, str(REPO))

from simcore.replay import replay  # noqa: E402
from simcore.traces import load_trace  # noqa: E402

DEFAULT_TRACES = REPO.parent / "shared" / "data" / "traces"
CAPACITIES = (1e5, 1e6, 2e6, 4e6, 1e7, 5e7, math.inf)
TOLERANCE = 0.015  # the bar: within 1.5 points of the published curve

#: Mooncake FAST '25, Fig. 9: published hit rate by capacity in tokens (inf = the maximum).
PUBLISHED: dict[str, dict[float, float]] = {
    "synthetic": {math.inf: 0.658},
    "conversation": {math.inf: 0.401},
}

TRACE_FILES: dict[str, str] = {
    "synthetic": "synthetic_trace.jsonl",
    "conversation": "conversation_trace.jsonl",
    "azure-conv": "AzureLLMInferenceTrace_conv_2023.csv",
    "azure-code": "AzureLLMInferenceTrace_code_2023.csv",
}

#: traces whose published figure the replay cannot match, and why
UNMATCHABLE: dict[str, str] = {
    "conversation": (
        "its hash_ids cover input tokens only. In production the next turn of a conversation also "
        "reuses the KV of the previous reply (generated tokens), which the trace cannot express, so "
        "an input-only replay sits below the published curve (2-4 points at large capacities)."
    ),
    "azure-conv": "no prefix information (timestamps and lengths only): every prompt is unique, "
                  "so the replay hit rate is 0 by construction; nothing published to compare.",
    "azure-code": "as azure-conv.",
}


@dataclass(frozen=True)
class Row:
    trace: str
    capacity_tokens: float
    published: float | None
    simulated: float
    hit_tokens: int
    input_tokens: int

    @property
    def diff(self) -> float | None:
        return None if self.published is None else self.simulated - self.published


def build_rows(traces_dir: Path = DEFAULT_TRACES, names: tuple[str, ...] = ("synthetic", "conversation"),
               capacities: tuple[float, ...] = CAPACITIES, block_size: int = 512) -> list[Row]:
    """Replay each named trace at each capacity; pair with the published value where known."""
    rows: list[Row] = []
    for name in names:
        requests = load_trace(traces_dir / TRACE_FILES[name])
        for r in replay(requests, capacities, block_size=block_size):
            rows.append(Row(name, r.capacity_tokens, PUBLISHED.get(name, {}).get(r.capacity_tokens),
                            r.hit_rate, r.hit_tokens, r.input_tokens))
    return rows


def format_rows(rows: list[Row]) -> str:
    head = ("trace", "capacity_tokens", "published", "simulated", "diff", "within_1.5pt")
    table = [head]
    for row in rows:
        cap = "inf" if row.capacity_tokens == math.inf else f"{row.capacity_tokens:,.0f}"
        pub = "-" if row.published is None else f"{row.published:.3f}"
        diff = "-" if row.diff is None else f"{row.diff:+.4f}"
        ok = "-" if row.diff is None else ("yes" if abs(row.diff) <= TOLERANCE else "no")
        if row.diff is not None and row.trace in UNMATCHABLE:
            ok += " (expected)"
        table.append((row.trace, cap, pub, f"{row.simulated:.4f}", diff, ok))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                               enumerate(zip(r, widths, strict=True))) for r in table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces-dir", type=Path, default=DEFAULT_TRACES)
    parser.add_argument("--with-azure", action="store_true", help="also replay the Azure traces (hit rate 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    names = ("synthetic", "conversation") + (("azure-conv", "azure-code") if args.with_azure else ())
    rows = build_rows(args.traces_dir, names)
    print("Prefix-cache hit rate vs capacity: Mooncake FAST '25 Fig. 9 (published) vs kvsweep replay")
    print("(LRU in timestamp order, 512-token blocks, leading run of cached full blocks, "
          "hit tokens / input tokens)\n")
    print(format_rows(rows))
    print("\npublished '-': the figure's finite-capacity points are available only as a plotted curve,")
    print("not as numbers; only the infinite-capacity maxima (synthetic 0.658, conversation 0.401) are")
    print("compared. Finite-capacity simulated values are pinned as regression values in")
    print("tests/test_validation.py, marked as simulated, not published.")
    print("\nTraces that cannot be matched:")
    for name, why in UNMATCHABLE.items():
        print(f"  {name}: {why}")
    if args.json is not None:
        doc = [{"trace": r.trace,
                "capacity_tokens": None if r.capacity_tokens == math.inf else r.capacity_tokens,
                "published": r.published, "simulated": r.simulated, "diff": r.diff,
                "hit_tokens": r.hit_tokens, "input_tokens": r.input_tokens} for r in rows]
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    failed = [r for r in rows
              if r.diff is not None and r.trace not in UNMATCHABLE and abs(r.diff) > TOLERANCE]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
