"""Cache-only replay: exact scenarios on the engine's BlockPool, and the ``kvsweep replay`` command."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from simcore.errors import ConfigError
from simcore.replay import ReplayResult, capacity_blocks, replay
from simcore.traces import TraceRequest
from sweep import cmd_replay

BS = 512


def req(*ids: int, tokens: int | None = None) -> TraceRequest:
    """A Mooncake-style request whose prompt is exactly ``len(ids)`` full 512-token blocks."""
    return TraceRequest(0.0, BS * len(ids) if tokens is None else tokens, 1, ids)


def one(requests: list[TraceRequest], capacity: float, block_size: int = BS) -> ReplayResult:
    (result,) = replay(requests, [capacity], block_size=block_size)
    return result


# ---- exact scenarios ----------------------------------------------------------------------
def test_infinite_capacity_counts_leading_runs() -> None:
    r = one([req(1, 2, 3), req(1, 2, 4), req(1, 2, 3), req(5, 2, 3)], math.inf)
    # hits: 0, 2 (1, 1-2), 3, 0 (a different root breaks the chain at once)
    assert (r.hit_blocks, r.hit_tokens, r.input_tokens) == (5, 5 * BS, 12 * BS)
    assert (r.total_blocks, r.unique_blocks, r.evictions, r.truncated_requests) == (12, 7, 0, 0)
    assert r.hit_rate == 5 / 12
    assert r.capacity_blocks == math.inf


def test_no_last_token_cap() -> None:
    # an identical prompt of whole blocks hits all of them (the engine's lookup would keep one back)
    r = one([req(1, 2), req(1, 2)], math.inf)
    assert r.hit_blocks == 2


def test_chain_tail_is_evicted_before_its_root() -> None:
    # capacity 3 blocks. After A the LRU order is [A3, A2, A1] (deepest first); B evicts A3 only,
    # so A's prefix 1-2 still hits. C's lookup takes A1, A2 and evicts B4 for its third block.
    r = one([req(1, 2, 3), req(4), req(1, 2, 3)], 3 * BS)
    assert (r.hit_blocks, r.evictions) == (2, 2)


def test_lru_order_follows_last_use() -> None:
    # capacity 2: A, B fill it; A is touched again (MRU); C evicts B, so B misses, A still hits
    r = one([req(1), req(2), req(1), req(3), req(1), req(2)], 2 * BS)
    # hits: -, -, A, -, A (B was evicted by C), B misses
    assert (r.hit_blocks, r.evictions) == (2, 2)


def test_request_longer_than_the_cache_keeps_the_head_of_its_chain() -> None:
    # capacity 2 blocks; a 4-block request stores blocks 1 and 1-2 only, evicting everything else
    r = one([req(9), req(1, 2, 3, 4), req(1, 2, 3, 4), req(1, 5)], 2 * BS)
    assert r.truncated_requests == 2
    # second copy hits its head (2 blocks); then 1-5 hits block 1 (still cached, the root is MRU)
    assert r.hit_blocks == 2 + 1
    # evictions: 9 (for A's second block), then block 1-2 for 1-5's second block
    assert r.evictions == 2


def test_partial_and_short_blocks_never_hit_at_trace_block_size() -> None:
    r = one([req(1, 2, tokens=700), req(1, 2, tokens=700), req(7, tokens=100), req(7, tokens=100)], math.inf)
    assert (r.hit_blocks, r.total_blocks, r.input_tokens) == (1, 2, 1600)
    assert r.hit_tokens == BS


def test_smaller_engine_blocks_let_partial_trace_blocks_hit() -> None:
    r = one([req(1, 2, tokens=700), req(1, 2, tokens=700)], math.inf, block_size=16)
    assert (r.total_blocks, r.hit_blocks, r.hit_tokens) == (2 * 43, 43, 688)  # 700 // 16 = 43


def test_azure_style_requests_never_hit() -> None:
    reqs = [TraceRequest(0.0, 2000, 1, None), TraceRequest(1.0, 2000, 1, None)]
    r = one(reqs, math.inf, block_size=16)
    assert (r.hit_blocks, r.unique_blocks, r.total_blocks) == (0, 250, 250)


def test_results_follow_the_capacity_order() -> None:
    results = replay([req(1, 2), req(3), req(1, 2)], [math.inf, BS, 2 * BS])
    assert [r.capacity_tokens for r in results] == [math.inf, 512.0, 1024.0]
    assert [r.hit_blocks for r in results] == [2, 0, 1]


def test_capacity_blocks() -> None:
    assert capacity_blocks(1e5, 512) == 195
    assert capacity_blocks(512, 512) == 1
    assert capacity_blocks(math.inf, 16) == math.inf
    with pytest.raises(ConfigError, match=r"capacity_tokens = 511: holds no block of 512 tokens"):
        capacity_blocks(511, 512)
    with pytest.raises(ConfigError, match=r"block size = 0"):
        capacity_blocks(1e6, 0)


def test_as_dict_is_json_friendly() -> None:
    d = one([req(1), req(1)], math.inf).as_dict()
    assert d["capacity_tokens"] is None and d["capacity_blocks"] is None
    assert d["hit_rate"] == 0.5
    json.dumps(d, allow_nan=False)


# ---- the command --------------------------------------------------------------------------
def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kvsweep replay")
    cmd_replay.add_arguments(parser)
    return cmd_replay.main(parser.parse_args(argv))


@pytest.fixture
def small_trace(tmp_path: Path) -> Path:
    lines = [
        {"timestamp": 0, "input_length": 1536, "output_length": 3, "hash_ids": [1, 2, 3]},
        {"timestamp": 10, "input_length": 512, "output_length": 3, "hash_ids": [4]},
        {"timestamp": 20, "input_length": 1400, "output_length": 3, "hash_ids": [1, 2, 3]},
    ]
    p = tmp_path / "small.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return p


def test_cli_prints_a_table_and_writes_json(small_trace: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    assert run_cli([str(small_trace), "--capacity-tokens", "1536,inf", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 requests, 3,448 input tokens, block size 512" in text
    assert "full blocks 6, unique 4" in text
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("1,536", "inf"))]
    # capacity 3 blocks: the third request hits 1 and 1-2 (block 1-2-3 is partial in it)
    assert rows[0][:4] == ["1,536", "3", f"{1024 / 3448:.4f}", "1,024"]
    assert rows[1][:4] == ["inf", "inf", f"{1024 / 3448:.4f}", "1,024"]
    doc = json.loads(out.read_text())
    assert doc["block_size"] == 512 and doc["format"] == "mooncake"
    assert [r["capacity_tokens"] for r in doc["results"]] == [1536.0, None]
    assert [r["hit_tokens"] for r in doc["results"]] == [1024, 1024]


def test_cli_block_size_and_limit(small_trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli([str(small_trace), "--capacity-tokens", "inf", "--block-size", "16", "--limit", "2"]) == 0
    assert "2 requests, 2,048 input tokens, block size 16" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--capacity-tokens", "1e5,,inf"], r"--capacity-tokens = '1e5,,inf': empty item"),
        (["--capacity-tokens", "lots"], r"--capacity-tokens item 'lots': not a number"),
        (["--capacity-tokens", "-5"], r"--capacity-tokens item '-5': must be a positive number"),
        (["--capacity-tokens", "nan"], r"--capacity-tokens item 'nan'"),
        (["--capacity-tokens", "100"], r"capacity_tokens = 100: holds no block of 512 tokens"),
        (["--block-size", "0"], r"--block-size = 0: must be a positive integer"),
        (["--trace-block-tokens", "0"], r"--trace-block-tokens = 0"),
        (["--limit", "0"], r"--limit = 0: must be a positive integer"),
    ],
)
def test_cli_bad_input_is_a_config_error(small_trace: Path, extra: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_cli([str(small_trace), *extra])


def test_cli_missing_trace(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file"):
        run_cli([str(tmp_path / "missing.jsonl")])


def test_cli_unwritable_json(small_trace: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--json = .*cannot write"):
        run_cli([str(small_trace), "--capacity-tokens", "inf", "--json", str(tmp_path / "no" / "dir.json")])


def test_parse_capacities() -> None:
    assert cmd_replay.parse_capacities("1e5, 2_000_000 ,inf") == [1e5, 2e6, math.inf]
