"""Trace readers: real Mooncake and Azure traces, bad lines, prompt segments."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from simcore.errors import ConfigError
from simcore.hashing import TokenSeq
from simcore.traces import TraceRequest, infer_conversations, load_trace, prompt_segments

TRACES = Path(__file__).parents[1].parent / "shared/data/traces"
SYNTHETIC = TRACES / "synthetic_trace.jsonl"
CONVERSATION = TRACES / "conversation_trace.jsonl"
AZURE_CONV = TRACES / "AzureLLMInferenceTrace_conv_2023.csv"
AZURE_CODE = TRACES / "AzureLLMInferenceTrace_code_2023.csv"

needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason=f"public traces not found at {TRACES}")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ---- real traces --------------------------------------------------------------------------
@needs_traces
@pytest.mark.parametrize(
    ("path", "count", "last_arrival_s"),
    [(SYNTHETIC, 3993, 1022.025), (CONVERSATION, 12031, 3536.999)],
)
def test_mooncake_traces_load(path: Path, count: int, last_arrival_s: float) -> None:
    reqs = load_trace(path)
    assert len(reqs) == count
    assert reqs[0].arrival_s == 0.0
    assert reqs[-1].arrival_s == pytest.approx(last_arrival_s, abs=1e-9)
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(reqs, reqs[1:], strict=False))
    assert all(r.hash_ids is not None and len(r.hash_ids) == math.ceil(r.prompt_tokens / 512) for r in reqs)


@needs_traces
def test_synthetic_first_request_exact() -> None:
    first = load_trace(SYNTHETIC, limit=1)
    assert first == [TraceRequest(0.0, 40160, 6, tuple(range(79)))]


@needs_traces
@pytest.mark.parametrize(("path", "count"), [(AZURE_CONV, 19366), (AZURE_CODE, 8819)])
def test_azure_traces_load(path: Path, count: int) -> None:
    reqs = load_trace(path)
    assert len(reqs) == count
    assert reqs[0].arrival_s == 0.0
    assert all(r.hash_ids is None for r in reqs)
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(reqs, reqs[1:], strict=False))
    assert reqs[-1].arrival_s < 3600.0


@needs_traces
def test_azure_sub_second_timestamps() -> None:
    # rows 1-2: 18:15:46.6805900 (374, 44) and 18:15:50.9951690 (396, 109)
    a, b = load_trace(AZURE_CONV, limit=2)
    assert (a.prompt_tokens, a.output_tokens, b.prompt_tokens, b.output_tokens) == (374, 44, 396, 109)
    assert b.arrival_s == pytest.approx(4.314579, abs=1e-9)


@needs_traces
def test_time_scale_and_limit() -> None:
    base = load_trace(SYNTHETIC, limit=50)
    slow = load_trace(SYNTHETIC, time_scale=2.0, limit=50)
    assert len(base) == 50
    assert [r.arrival_s * 2.0 for r in base] == [r.arrival_s for r in slow]


def test_format_by_content_when_suffix_is_unknown(tmp_path: Path) -> None:
    p = write(tmp_path, "trace.txt", '{"timestamp": 5, "input_length": 10, "output_length": 2}\n')
    assert load_trace(p) == [TraceRequest(0.0, 10, 2, None)]
    q = write(tmp_path, "azure.txt", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.5,7,1\n")
    assert load_trace(q) == [TraceRequest(0.0, 7, 1, None)]


def test_unsorted_rows_are_sorted_stably(tmp_path: Path) -> None:
    p = write(tmp_path, "t.jsonl", "\n".join([
        '{"timestamp": 2000, "input_length": 1, "output_length": 1}',
        '{"timestamp": 1000, "input_length": 2, "output_length": 1}',
        "",
        '{"timestamp": 2000, "input_length": 3, "output_length": 1}',
    ]) + "\n")
    reqs = load_trace(p, time_scale=0.5)
    assert [(r.arrival_s, r.prompt_tokens) for r in reqs] == [(0.0, 2), (0.5, 1), (0.5, 3)]


# ---- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"timestamp": 0, "input_length": 10', r"t\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"t\.jsonl:2: expected a JSON object, got list"),
        ('{"timestamp": 0, "input_length": 10}', r"t\.jsonl:2: missing key 'output_length'"),
        ('{"timestamp": -1, "input_length": 10, "output_length": 1}', r"t\.jsonl:2: timestamp = -1: must be"),
        ('{"timestamp": "0", "input_length": 10, "output_length": 1}', r"t\.jsonl:2: timestamp = '0'"),
        ('{"timestamp": 0, "input_length": 0, "output_length": 1}',
         r"t\.jsonl:2: input_length = 0: must be a positive integer"),
        ('{"timestamp": 0, "input_length": 10.5, "output_length": 1}', r"t\.jsonl:2: input_length = 10\.5"),
        ('{"timestamp": 0, "input_length": 10, "output_length": true}', r"t\.jsonl:2: output_length = True"),
        ('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1, -2]}',
         r"t\.jsonl:2: hash_ids = \[1, -2\]: must be a list of integers"),
        ('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": "1,2"}',
         r"t\.jsonl:2: hash_ids"),
    ],
)
def test_bad_mooncake_line_names_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    good = '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [0]}'
    p = write(tmp_path, "t.jsonl", f"{good}\n{line}\n{good}\n")
    with pytest.raises(ConfigError, match=match):
        load_trace(p)


def test_bad_line_after_limit_is_not_read(tmp_path: Path) -> None:
    p = write(tmp_path, "t.jsonl", '{"timestamp": 0, "input_length": 10, "output_length": 1}\nnot json\n')
    assert len(load_trace(p, limit=1)) == 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("TIMESTAMP,Context,GeneratedTokens\n", r"a\.csv:1: header .* lacks column\(s\) ContextTokens"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,5,1\nyesterday,5,1\n",
         r"a\.csv:3: TIMESTAMP = 'yesterday': not a date and time"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,five,1\n",
         r"a\.csv:2: ContextTokens = 'five': must be a positive integer"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,5,0\n",
         r"a\.csv:2: GeneratedTokens = 0: must be a positive integer"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,5\n",
         r"a\.csv:2: 2 columns, expected 3"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", r"a\.csv: the trace has no requests"),
    ],
)
def test_bad_azure_line_names_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_trace(write(tmp_path, "a.csv", text))


def test_bad_arguments(tmp_path: Path) -> None:
    p = write(tmp_path, "t.jsonl", '{"timestamp": 0, "input_length": 10, "output_length": 1}\n')
    with pytest.raises(ConfigError, match=r"trace path = .*nope\.jsonl.*: no such file"):
        load_trace(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match=r"time_scale = 0: must be a positive number"):
        load_trace(p, time_scale=0)
    with pytest.raises(ConfigError, match=r"limit = 0: must be a positive integer"):
        load_trace(p, limit=0)
    with pytest.raises(ConfigError, match=r"trace format = 'sharegpt': use one of auto, mooncake, azure"):
        load_trace(p, fmt="sharegpt")
    with pytest.raises(ConfigError, match=r"the trace is empty"):
        load_trace(write(tmp_path, "empty.txt", "\n\n"))


def test_config_error_is_one_line(tmp_path: Path) -> None:
    p = write(tmp_path, "t.jsonl", "{oops\n")
    with pytest.raises(ConfigError) as info:
        load_trace(p)
    assert "\n" not in str(info.value)


# ---- prompt segments ----------------------------------------------------------------------
def test_segments_docstring_example() -> None:
    req = TraceRequest(0.0, 1100, 5, (7, 9, 4))
    assert prompt_segments(req, 3) == [(-9, 512), (-11, 512), (-6, 76)]


def test_segments_exact_multiple_and_ids_beyond_prompt_ignored() -> None:
    assert prompt_segments(TraceRequest(0.0, 1024, 1, (0, 1)), 0) == [(-2, 512), (-3, 512)]
    assert prompt_segments(TraceRequest(0.0, 600, 1, (0, 1, 2, 3)), 0) == [(-2, 512), (-3, 88)]


def test_segments_uncovered_tokens_are_unique_to_the_request() -> None:
    assert prompt_segments(TraceRequest(0.0, 1100, 1, (5,)), 9) == [(-7, 512), (-(10**12 + 9), 588)]
    assert prompt_segments(TraceRequest(0.0, 300, 1, None), 4) == [(-(10**12 + 4), 300)]
    assert prompt_segments(TraceRequest(0.0, 300, 1, ()), 4) == [(-(10**12 + 4), 300)]


def test_segments_custom_trace_block_tokens() -> None:
    assert prompt_segments(TraceRequest(0.0, 40, 1, (1, 2, 3)), 0, trace_block_tokens=16) == [
        (-3, 16), (-4, 16), (-5, 8)]


@needs_traces
def test_segments_cover_every_prompt_token_and_content_ids_are_negative() -> None:
    for index, req in enumerate(load_trace(CONVERSATION, limit=2000)):
        segs = prompt_segments(req, index)
        assert sum(n for _, n in segs) == req.prompt_tokens
        assert all(cid < 0 for cid, _ in segs)


def test_ids_zero_and_one_give_different_blocks() -> None:
    # regression: with content id -(h + 1), ids 0 and 1 mapped to -1 and -2, which CPython's
    # hash() (the block hash then) took alike, so two different first blocks shared a hash
    hashes = []
    for index, ids in enumerate([(0,), (1,)]):
        seq = TokenSeq(512)
        for cid, n in prompt_segments(TraceRequest(0.0, 512, 1, ids), index):
            seq.append(cid, n)
        hashes.append(seq.ensure_hashes(512)[0])
    assert hashes[0] != hashes[1]


def test_same_ids_share_engine_blocks_at_smaller_block_size() -> None:
    # a 512-token id covers 32 blocks of 16; a partial last id shares its leading blocks
    a = TokenSeq(16)
    b = TokenSeq(16)
    for cid, n in prompt_segments(TraceRequest(0.0, 512 + 300, 1, (1, 2)), 0):
        a.append(cid, n)
    for cid, n in prompt_segments(TraceRequest(0.0, 1024, 1, (1, 2)), 1):
        b.append(cid, n)
    ha, hb = a.ensure_hashes(a.num_tokens), b.ensure_hashes(b.num_tokens)
    assert (len(ha), len(hb)) == (32 + 18, 64)
    assert ha == hb[:50]


# ---- conversations inferred from hash ids ---------------------------------------------------
def conv_req(*ids: int, tokens: int | None = None) -> TraceRequest:
    return TraceRequest(0.0, 512 * len(ids) if tokens is None else tokens, 1, ids)


def test_turns_that_extend_a_prompt_continue_its_conversation() -> None:
    reqs = [
        conv_req(1, 2),            # A1
        conv_req(1, 3),            # B1 (shares only the first block with A1: not an extension)
        conv_req(1, 2, 4, 5),      # A2 extends A1
        conv_req(1, 3, 6),         # B2 extends B1
        conv_req(1, 2, 4, 5, 7),   # A3 extends A2 (the deepest earlier prompt on its path)
    ]
    assert infer_conversations(reqs) == [0, 1, 0, 1, 0]


def test_a_prompt_extended_by_several_requests_is_shared_context() -> None:
    # S (the system prompt alone) is extended by three requests: each starts a conversation;
    # X's only child continues X
    reqs = [conv_req(1), conv_req(1, 2), conv_req(1, 3), conv_req(1, 2, 4), conv_req(1, 5)]
    assert infer_conversations(reqs) == [0, 1, 2, 1, 3]


def test_partial_last_block_is_not_part_of_the_prefix() -> None:
    # A1's last id names a partial block (700 tokens: one full block), so A2 extends A1 by
    # its full block [7] even though A2's second id differs from A1's
    reqs = [conv_req(7, 8, tokens=700), conv_req(7, 9, 10)]
    assert infer_conversations(reqs) == [0, 0]
    # without a full block there is nothing to extend
    assert infer_conversations([conv_req(7, tokens=100), conv_req(7, 9)]) == [0, 1]


def test_requests_without_ids_are_their_own_conversations() -> None:
    reqs = [TraceRequest(0.0, 2000, 1, None), TraceRequest(1.0, 2000, 1, None)]
    assert infer_conversations(reqs) == [0, 1]


@needs_traces
def test_conversations_of_the_mooncake_conversation_trace() -> None:
    conv = infer_conversations(load_trace(CONVERSATION))
    sizes: dict[int, int] = {}
    for c in conv:
        sizes[c] = sizes.get(c, 0) + 1
    assert len(sizes) == 7897
    assert sum(1 for n in sizes.values() if n > 1) == 2202
