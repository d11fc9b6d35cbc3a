"""Fidelity of ``replay``: an independent reference LRU, the infinite-capacity identity, and the
published Mooncake figure.

Published source: Qin et al., "Mooncake: Trading More Storage for Less Computation - A
KVCache-centric Architecture for Serving LLM Chatbot", USENIX FAST '25, Figure 9 (hit rate vs
cache capacity in tokens, LRU, infinite-capacity maximum marked), as points read off the
figure's vector paths (``shared/data/mooncake_fig9.csv``). The synthetic trace's replay must sit
within 1.5 points of the published curve at every capacity the issue lists; the conversation
trace has a documented gap (its ids cover input tokens only). The values at finite capacities
below marked SIMULATED are this replay's own output, pinned as regression values.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.replay import ReplayResult, replay, replay_hashes, request_block_hashes
from simcore.traces import TraceRequest, load_trace
from sweep import validation
from sweep.cli import main as cli

ROOT = Path(__file__).parents[1]
TRACES = ROOT.parent / "shared/data/traces"
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason=f"public traces not found at {TRACES}")


# ---- the reference: a plain LRU over prefix keys, written without BlockPool or TokenSeq ------
def prefix_keys(requests: list[TraceRequest], block_size: int = 512, trace_block_tokens: int = 512
                ) -> list[list[object]]:
    """A key per full engine block, equal exactly when the block and everything before it are.

    The block starting at token s lies in trace block i = s // T (T % block_size == 0). If id i
    exists, the key is (identity of ids[:i+1], offset in the trace block); the identity of a
    prefix is interned from (identity of the shorter prefix, id). Tokens no id covers are unique
    to their request.
    """
    assert trace_block_tokens % block_size == 0
    interned: dict[tuple[int, int], int] = {}
    out: list[list[object]] = []
    for index, req in enumerate(requests):
        ids = req.hash_ids or ()
        node = -1  # the empty prefix
        nodes: list[int] = []
        for h in ids:
            node = interned.setdefault((node, h), len(interned))
            nodes.append(node)
        keys: list[object] = []
        for j in range(req.prompt_tokens // block_size):
            start = j * block_size
            i = start // trace_block_tokens
            keys.append((nodes[i], start - i * trace_block_tokens) if i < len(ids) else ("own", index, j))
        out.append(keys)
    return out


def reference_lru(keys: list[list[object]], capacity_blocks: float) -> tuple[int, int]:
    """(hit blocks, evictions) of an LRU cache of ``capacity_blocks`` keys.

    Each request hits the leading run of its keys that are cached, then inserts or refreshes all
    its keys deepest first (so its root ends most recently used) and evicts least recently used
    keys until the cache fits.
    """
    cache: OrderedDict[object, None] = OrderedDict()
    hits = evictions = 0
    for ks in keys:
        for k in ks:
            if k not in cache:
                break
            hits += 1
        for k in reversed(ks):
            cache[k] = None
            cache.move_to_end(k)
        while len(cache) > capacity_blocks:
            cache.popitem(last=False)
            evictions += 1
    return hits, evictions


@dataclass
class Prepared:
    """A trace with its engine block hashes and reference keys, computed once."""

    requests: list[TraceRequest]
    block_size: int
    hashes: list[list[int]]
    keys: list[list[object]]
    input_tokens: int

    @classmethod
    def of(cls, requests: list[TraceRequest], block_size: int = 512) -> Prepared:
        return cls(requests, block_size, request_block_hashes(requests, block_size),
                   prefix_keys(requests, block_size), sum(r.prompt_tokens for r in requests))

    def replay(self, capacity_tokens: float) -> ReplayResult:
        return replay_hashes(self.hashes, self.input_tokens, capacity_tokens, self.block_size)


def check_against_reference(trace: Prepared, capacity_tokens: float) -> ReplayResult:
    r = trace.replay(capacity_tokens)
    cap = math.inf if capacity_tokens == math.inf else capacity_tokens // trace.block_size
    hits, evictions = reference_lru(trace.keys, cap)
    assert r.hit_blocks == hits
    assert r.hit_tokens == hits * trace.block_size
    assert r.total_blocks == sum(len(k) for k in trace.keys)
    assert r.unique_blocks == len({k for ks in trace.keys for k in ks})
    if r.truncated_requests == 0:  # the reference also "evicts" a too-long request's own tail
        assert r.evictions == evictions
    return r


# ---- hypothesis: random traces with heavy prefix sharing ------------------------------------
@st.composite
def traces(draw: st.DrawFn) -> list[TraceRequest]:
    n = draw(st.integers(1, 25))
    out = []
    for _ in range(n):
        ids = draw(st.lists(st.integers(0, 3), max_size=6))  # a small alphabet: many shared prefixes
        # prompts shorter than, equal to and longer than the ids cover, often a partial last block
        tokens = draw(st.integers(1, 512 * (len(ids) + 1)))
        out.append(TraceRequest(0.0, tokens, 1, tuple(ids) if ids or draw(st.booleans()) else None))
    return out


@settings(max_examples=300, deadline=None)
@given(trace=traces(), block_size=st.sampled_from([512, 256, 128]),
       capacity=st.one_of(st.integers(1, 24), st.just(math.inf)))
def test_replay_equals_reference_lru_on_random_traces(trace: list[TraceRequest], block_size: int,
                                                      capacity: float) -> None:
    prepared = Prepared.of(trace, block_size)
    check_against_reference(prepared, capacity * block_size)
    # and the public entry point agrees with the precomputed path
    cap_tokens = capacity * block_size
    assert replay(trace, [cap_tokens], block_size=block_size) == [prepared.replay(cap_tokens)]


@settings(max_examples=200, deadline=None)
@given(trace=traces(), block_size=st.sampled_from([512, 128]))
def test_infinite_capacity_identity_on_random_traces(trace: list[TraceRequest], block_size: int) -> None:
    (r,) = replay(trace, [math.inf], block_size=block_size)
    assert r.hit_blocks == r.total_blocks - r.unique_blocks


# ---- the real Mooncake traces --------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic() -> Prepared:
    return Prepared.of(load_trace(TRACES / "synthetic_trace.jsonl"))


@pytest.fixture(scope="module")
def conversation() -> Prepared:
    return Prepared.of(load_trace(TRACES / "conversation_trace.jsonl"))


@needs_traces
@pytest.mark.parametrize("capacity", [1e5, 1e6, 1e7, math.inf])  # 1e5 truncates 11 requests
def test_replay_equals_reference_lru_on_synthetic(synthetic: Prepared, capacity: float) -> None:
    check_against_reference(synthetic, capacity)


@needs_traces
@pytest.mark.parametrize("capacity", [1e5, 4e6])  # 1e5 truncates 62 requests
def test_replay_equals_reference_lru_on_conversation(conversation: Prepared, capacity: float) -> None:
    check_against_reference(conversation, capacity)


@needs_traces
@pytest.mark.parametrize(
    ("name", "total", "unique", "input_tokens"),
    [("synthetic", 117_888, 40_148, 61_194_628), ("conversation", 276_491, 170_899, 144_793_823)],
)
def test_infinite_capacity_hit_ratio_is_one_minus_unique_over_total(
    request: pytest.FixtureRequest, name: str, total: int, unique: int, input_tokens: int
) -> None:
    """Blocks: every full 512-token prompt block (sum of input_length // 512; a partial last block
    is never cached, so it is neither a hit nor counted). Unique: distinct prefixes among them
    (ids[:i+1] for i < input_length // 512). With unbounded capacity a block hits iff its prefix
    was seen before, and then so was every shorter prefix, so the leading run is exactly the
    blocks seen before: hits = total - unique."""
    trace: Prepared = request.getfixturevalue(name)
    requests = trace.requests
    assert sum(r.prompt_tokens // 512 for r in requests) == total
    prefixes = {tuple(r.hash_ids[: i + 1]) for r in requests for i in range(r.prompt_tokens // 512)}
    assert len(prefixes) == unique
    r = trace.replay(math.inf)
    assert (r.total_blocks, r.unique_blocks, r.input_tokens) == (total, unique, input_tokens)
    assert Fraction(r.hit_blocks, r.total_blocks) == 1 - Fraction(unique, total)
    assert Fraction(r.hit_tokens, r.input_tokens) == Fraction((total - unique) * 512, input_tokens)


# ---- Figure 9 ------------------------------------------------------------------------------
# PUBLISHED (FAST '25 Fig. 9, infinite-capacity maxima; see the module docstring)
PUBLISHED_MAX = {"synthetic": 0.658, "conversation": 0.401}

# SIMULATED, NOT PUBLISHED: hit tokens of this replay (LRU, 512-token blocks) at each capacity,
# pinned so that any change to the replay or the block pool shows up. Hit rate = value / input.
SIMULATED_HIT_TOKENS = {
    "synthetic": {1e5: 1_100_288, 1e6: 9_183_232, 2e6: 14_927_872, 4e6: 23_519_744,
                  1e7: 35_987_968, 5e7: 39_802_880, math.inf: 39_802_880},
    # (kvsweep replay also prints 1e5: 6_185_984, 2e6: 12_948_480, 4e6: 26_780_672,
    # 5e7: 53_722_112; three points are enough to pin the conversation curve here)
    "conversation": {1e6: 8_091_136, 1e7: 43_093_504, math.inf: 54_063_104},
}


@pytest.fixture(scope="module")
def curves(synthetic: Prepared, conversation: Prepared) -> dict[str, list[ReplayResult]]:
    return {name: [trace.replay(cap) for cap in SIMULATED_HIT_TOKENS[name]]
            for name, trace in (("synthetic", synthetic), ("conversation", conversation))}


@needs_traces
def test_synthetic_reaches_the_published_maximum_within_1_5_points(
    curves: dict[str, list[ReplayResult]],
) -> None:
    inf = curves["synthetic"][-1]
    assert inf.capacity_tokens == math.inf
    assert abs(inf.hit_rate - PUBLISHED_MAX["synthetic"]) <= 0.015  # 0.6504 vs 0.658
    # 5e7 tokens hold every distinct block of the trace: the curve has reached its maximum
    assert curves["synthetic"][-2].hit_tokens == inf.hit_tokens
    assert curves["synthetic"][-2].evictions == 0


@needs_traces
def test_conversation_sits_below_the_published_maximum(curves: dict[str, list[ReplayResult]]) -> None:
    # Known, explained gap: the trace's ids cover input tokens only, while production also
    # reuses the KV of replies; the input-only replay is 2-4 points below the published 0.401.
    gap = PUBLISHED_MAX["conversation"] - curves["conversation"][-1].hit_rate
    assert 0.02 <= gap <= 0.04  # 0.401 - 0.3734 = 0.0276


@needs_traces
@pytest.mark.parametrize("name", ["synthetic", "conversation"])
def test_simulated_curve_regression(curves: dict[str, list[ReplayResult]], name: str) -> None:
    got = {r.capacity_tokens: r.hit_tokens for r in curves[name]}
    assert got == SIMULATED_HIT_TOKENS[name]
    rates = [r.hit_rate for r in curves[name]]
    assert rates == sorted(rates)  # more capacity never hurts LRU on these traces


# ---- the validation command's Figure 9 table ---------------------------------------------------
@needs_traces
def test_synthetic_curve_within_1_5_points_of_figure_9_at_every_listed_capacity() -> None:
    rows = validation.fig9_rows(TRACES.parent)
    published = validation.published_fig9(TRACES.parent)
    synthetic = {r.capacity_tokens: r for r in rows if r.trace == "synthetic"}
    assert set(synthetic) == {1e5, 1e6, 2e6, 4e6, 1e7, 5e7, math.inf}
    for cap in (1e5, 1e6, 2e6, 4e6, 1e7, 5e7):
        row = synthetic[cap]
        assert row.published == published["synthetic"][cap]  # the figure's own point, not interpolated
        assert abs(row.diff) <= 0.015, cap
    assert all(c.held for c in validation.fig9_checks(rows))
    conversation = [r for r in rows if r.trace == "conversation"]
    # the documented gap: below the published curve where it rises (replies' KV not in the ids)
    assert all(r.diff < 0 for r in conversation if r.capacity_tokens >= 4e6)


# ---- the validation command's H200 section (kvsweep's own measurements, in the repository) -----
def test_validate_h200_section_runs_without_the_shared_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.json"
    skip = [a for c in ("vllm", "splitwise", "vidur", "fig9") for a in ("--skip", c)]
    code = cli(["validate", "--data", str(tmp_path / "none"), *skip, "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "4. H200 operator profile (kvsweep's own measurement, configs/measured)" in text
    assert "h200-vllm" in text and "h100-vllm" in text and "h200-ops held out" in text
    assert "4 of 4 targets met" in text
    doc = json.loads(out.read_text())
    assert set(doc) == {"h200", "checks"}
    assert {len(pts) for by in doc["h200"].values() for pts in by.values()} == {124}
    assert [c["what"] for c in doc["checks"]] == [
        f"H200 Llama-3.1-70B (model held out) TP{tp} layer median |error|" for tp in (1, 2, 4, 8)
    ]


def test_validate_without_the_h200_files_is_one_line_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(["validate", "--own-data", str(tmp_path), "--skip", "vllm", "--skip", "splitwise",
                "--skip", "vidur", "--skip", "fig9"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--own-data {tmp_path}: no h200_llama31_8b_ops.csv there" in err and "--skip h200" in err
