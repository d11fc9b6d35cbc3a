"""Prefix caching through the whole engine: exact hits, block boundaries, modes, eviction order."""

from __future__ import annotations

import pytest

from simcore.api import simulate
from simcore.hashing import TokenSeq
from tests.simhelpers import Scripted, run_engine, run_script, small_cfg

BIG = 10_000  # blocks: no eviction pressure


def test_first_turn_misses_and_follow_up_hits_exactly_the_full_blocks_of_the_earlier_context():
    cfg = small_cfg()
    turn1 = Scripted(0.0, [(1, 6), (2, 4)], output=5, session_id=7, out_id=50)
    # turn 2 = system 6 + message 4 + reply 5 + new message 4 = 19 tokens
    turn2 = Scripted(10.0, [(1, 6), (2, 4), (50, 5), (3, 4)], output=2, session_id=7)
    r1, r2 = run_script(cfg, BIG, [turn1, turn2]).records
    assert r1.cached_tokens == 0
    assert r1.finish_s < 10.0
    # turn 1 held 6 + 4 + 5 - 1 = 14 KV tokens: 3 full blocks of 4 = 12 tokens
    assert r2.cached_tokens == 12
    assert r2.prefill_computed_tokens == 19 - 12


@pytest.mark.parametrize(
    ("extra", "expect_cached", "expect_computed"),
    [
        (0, 4, 4),  # exactly 2 cached blocks: vLLM recomputes the whole last block
        (1, 8, 1),  # 2 blocks + 1 token: both blocks hit, one token computed
    ],
)
def test_fully_cached_prompt_still_computes_at_least_one_token(extra, expect_cached, expect_computed):
    cfg = small_cfg()
    first = Scripted(0.0, [(1, 8)], output=1)
    segs = [(1, 8)] + ([(9, 1)] if extra else [])
    again = Scripted(5.0, segs, output=3)
    _, r = run_script(cfg, BIG, [first, again]).records
    assert r.cached_tokens == expect_cached
    assert r.prefill_computed_tokens == expect_computed


def _chat(mode: str) -> dict:
    cfg = small_cfg(
        engine={"prefix_caching": mode, "block_size": 8},
        workload={"kind": "chat", "users": 2, "system_prompts": 1, "system_prompt_tokens": 64,
                  "turns": 2, "user_tokens": 8, "output_tokens": 4, "think_time_s": 1.0},
        run={"num_requests": 4, "record_requests": True},
    )
    rows = simulate(cfg).requests
    assert rows is not None
    return {(r["session_id"], r["turn"]): r["cached_tokens"] for r in rows}


def test_modes_off_session_prefix():
    off, session, prefix = _chat("off"), _chat("session"), _chat("prefix")
    assert sorted(off.values()) == [0, 0, 0, 0]
    first_turns = sorted(v for (s, t), v in prefix.items() if t == 0)
    # the second user's first turn reuses the shared 64-token system prompt only in prefix mode
    assert first_turns == [0, 64]
    assert sorted(v for (s, t), v in session.items() if t == 0) == [0, 0]
    # second turns reuse their own context (64 + 8 + 4 - 1 = 75 KV tokens: 9 full blocks of 8)
    assert sorted(v for (s, t), v in session.items() if t == 1) == [72, 72]
    assert sorted(v for (s, t), v in prefix.items() if t == 1) == [72, 72]


def test_session_mode_gives_no_hit_across_sessions_on_an_identical_prompt():
    cfg = small_cfg(engine__prefix_caching="session")
    a = Scripted(0.0, [(1, 40)], output=2, session_id=1, root=2)
    b = Scripted(5.0, [(1, 40)], output=2, session_id=2, root=3)
    c = Scripted(9.0, [(1, 40), (4, 4)], output=2, session_id=1, root=2)
    ra, rb, rc = run_script(cfg, BIG, [a, b, c]).records
    assert (ra.cached_tokens, rb.cached_tokens, rc.cached_tokens) == (0, 0, 40)


def test_ten_thousand_token_context_hits_every_full_block():
    cfg = small_cfg(engine__block_size=16)
    first = Scripted(0.0, [(1, 10_007)], output=10, out_id=77)
    second = Scripted(60.0, [(1, 10_007), (77, 10), (2, 30)], output=5)
    r1, r2 = run_script(cfg, BIG, [first, second]).records
    assert r1.status == r2.status == "completed"
    assert r2.cached_tokens == (10_007 + 10 - 1) // 16 * 16


def test_requests_without_a_session_share_only_in_prefix_mode():
    def hits(mode: str) -> list[int]:
        cfg = small_cfg(
            engine={"prefix_caching": mode, "block_size": 8},
            workload={"kind": "api", "request_rate": 5.0, "system_prompts": 1,
                      "system_prompt_tokens": 32, "prompt_tokens": 20, "output_tokens": 3},
            run={"num_requests": 30, "record_requests": True},
        )
        rows = simulate(cfg).requests
        assert rows is not None and all(r["session_id"] == -1 for r in rows)
        return [r["cached_tokens"] for r in sorted(rows, key=lambda r: r["admitted_s"])]

    prefix = hits("prefix")
    assert prefix[0] == 0 and set(prefix[1:]) == {32}
    assert set(hits("session")) == {0}


def test_two_in_flight_requests_of_one_session():
    cfg = small_cfg()
    a = Scripted(0.0, [(1, 40)], output=20, session_id=3)
    b = Scripted(0.0001, [(1, 40), (2, 8)], output=20, session_id=3)
    res = run_script(cfg, BIG, [a, b])
    ra, rb = res.records
    assert ra.status == rb.status == "completed"
    assert rb.admitted_s < ra.finish_s  # really in flight together
    assert rb.cached_tokens == 40  # a's prompt blocks, cached as soon as a was scheduled
    assert res.engine.pool.num_used() == 0


def _hashes(segments: list[tuple[int, int]], n: int) -> list[int]:
    seq = TokenSeq(4)
    for cid, length in segments:
        seq.append(cid, length)
    return seq.ensure_hashes(n)


def test_hand_worked_block_ids_and_eviction_order():
    """Block size 4, 7 usable blocks. R1 [1..8]+2 out; R2 shares 8 tokens; R3 needs 6 blocks."""
    cfg = small_cfg()
    script = [
        Scripted(0.0, [(1, 8)], output=2),  # blocks 1, 2 (hashed), 3 (decode, partial)
        Scripted(10.0, [(1, 8), (5, 4)], output=1),  # hits 1, 2; takes 3 (unhashed head)
        Scripted(20.0, [(9, 24)], output=1),  # 4,5,6,7 fresh, then evicts 3 then 2
        Scripted(30.0, [(1, 8), (5, 4)], output=1),  # only block 1 is left of the chain
    ]
    res = run_script(cfg, 8, script)
    # re-run step by step to inspect the pool between requests
    from simcore.engine import Engine

    engine = Engine(cfg, 8)
    env = engine.env
    for i, item in enumerate(script):
        def sub(item=item, i=i):
            yield env.timeout(item.at)
            seq = TokenSeq(4)
            for cid, length in item.segments:
                seq.append(cid, length)
            p = seq.num_tokens
            seq.append(10**9 + i, item.output)
            engine.submit(seq, p, item.output)
        env.process(sub())
    pool = engine.pool
    h_r1 = _hashes([(1, 8)], 8)
    h_r2 = _hashes([(1, 8), (5, 4)], 12)
    env.run(until=5)
    # R1 freed deepest first: block 3 (unhashed) to the head, then 2 and 1 to the tail
    assert pool.free_queue() == [3, 4, 5, 6, 7, 2, 1]
    assert [pool.cached_block(h) for h in h_r1] == [1, 2]
    env.run(until=15)
    assert pool.free_queue() == [4, 5, 6, 7, 3, 2, 1]
    assert pool.cached_block(h_r2[2]) == 3
    env.run(until=25)
    assert pool.evictions == 2
    assert pool.cached_block(h_r2[2]) is None and pool.cached_block(h_r1[1]) is None
    assert pool.cached_block(h_r1[0]) == 1
    # R3's blocks were [4, 5, 6, 7, 3, 2]; freed deepest first to the tail
    assert pool.free_queue() == [1, 2, 3, 7, 6, 5, 4]
    env.run()
    assert [r.cached_tokens for r in res.records] == [0, 8, 0, 4]
    assert [r.cached_tokens for r in engine.records] == [0, 8, 0, 4]
    assert pool.evictions == 4  # R4 took blocks 2 and 3 from the head, evicting R3's hashes
    pool.check_invariants()
    assert pool.num_used() == 0


def test_cached_blocks_occupy_memory_no_free_lunch():
    """With caching on, cached blocks still count against capacity: the pool never exceeds it."""
    cfg = small_cfg(
        engine={"block_size": 16, "kv_budget_gib": 0.05},
        workload={"kind": "chat", "users": 32, "turns": 3, "system_prompt_tokens": 500},
        run={"num_requests": 300},
    )
    engine = run_engine(cfg)
    assert engine.pool.evictions > 0
    assert engine.counters.peak_used_blocks <= engine.pool.usable_blocks
    engine.pool.check_invariants()
