"""The CPU tier: exact LRU order, store on eviction from a GPU pool, blocks conserved per tier."""

from __future__ import annotations

import math
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.blocks import BlockPool, native_pool_class
from simcore.kvcache import KVCacheManager
from simcore.tiers import LruTier

NATIVE = native_pool_class()
POOLS = [BlockPool] + ([NATIVE] if NATIVE is not None else [])


def spill_list(pool: BlockPool) -> list[int] | array[int]:
    return [] if type(pool) is BlockPool else array("q")


def test_store_evicts_least_recently_used_and_refreshes_held_hashes() -> None:
    tier = LruTier(3)
    tier.store([1, 2, 3])
    assert tier.lru_order() == [1, 2, 3]
    tier.store([1])  # held: moved to the recent end, nothing stored
    assert tier.lru_order() == [2, 3, 1]
    assert (tier.stored, tier.refreshed, tier.evictions) == (3, 1, 0)
    tier.store([4, 5])  # full: 2 then 3 go
    assert tier.lru_order() == [1, 4, 5]
    assert (tier.stored, tier.evictions, tier.num_used(), tier.num_free()) == (5, 2, 3, 0)
    tier.check_invariants()


def test_leading_run_counts_from_start_to_the_first_miss_and_take_touches() -> None:
    tier = LruTier(8)
    tier.store([10, 11, 12, 20])
    chain = [1, 2, 10, 11, 12, 13, 20]
    assert tier.leading_run(chain, 2, len(chain)) == 3  # 10, 11, 12; 13 misses (20 is not reached)
    assert tier.leading_run(chain, 2, 4) == 2  # capped by stop
    assert tier.leading_run(chain, 0, len(chain)) == 0  # 1 is on the GPU, not here
    tier.take(chain[2:5])
    assert tier.lru_order() == [20, 10, 11, 12]
    assert tier.hit_blocks == 3
    with pytest.raises(KeyError):
        tier.take([99])


def test_capacity_is_checked() -> None:
    with pytest.raises(ValueError, match=r"capacity_blocks=0: must be a whole number >= 1"):
        LruTier(0)
    with pytest.raises(ValueError, match=r"capacity_blocks=2.5"):
        LruTier(2.5)
    tier = LruTier(math.inf)
    tier.store(range(10_000))
    assert tier.num_used() == 10_000 and tier.evictions == 0 and tier.num_free() == math.inf


@pytest.mark.parametrize("Pool", POOLS, ids=lambda c: c.__name__)
def test_a_chain_evicted_from_the_gpu_lands_in_the_cpu_tail_first(Pool) -> None:
    pool = Pool(4)  # 3 usable blocks
    pool.spill = spill_list(pool)
    tier = LruTier(2)
    chain = pool.allocate(3)
    pool.cache_blocks(chain, [100, 101, 102])
    pool.free(chain)  # the free queue holds the chain deepest first: 102, 101, 100
    assert pool.allocate(3) is not None  # evicts 102, 101, 100 in that order
    tier.store(pool.spill)
    del pool.spill[:]
    # the tier keeps the two most recently evicted: the chain's root and its second block, so a
    # lookup of the chain finds its first two blocks in CPU memory
    assert tier.lru_order() == [101, 100]
    assert tier.leading_run([100, 101, 102], 0, 3) == 2
    assert tier.evictions == 1


@pytest.mark.parametrize("Pool", POOLS, ids=lambda c: c.__name__)
def test_a_hash_held_by_a_second_block_does_not_leave_the_gpu(Pool) -> None:
    pool = Pool(3)  # 2 usable blocks
    pool.spill = spill_list(pool)
    a = pool.allocate(2)
    pool.cache_block(a[0], 7)
    pool.cache_block(a[1], 7)  # two blocks hold 7 (two requests computed it at once)
    pool.free(a)
    pool.allocate(2)  # evicts both blocks; only the second eviction makes 7 leave the pool
    assert list(pool.spill) == [7]


@pytest.mark.parametrize("Pool", POOLS, ids=lambda c: c.__name__)
def test_a_routers_question_counts_cpu_tokens_at_their_weight(Pool) -> None:
    """GPU memory holds the prompt's first block, the CPU tier its next two: the leading run is
    1 + 2 blocks, the CPU ones weighted (what prefix_aware's cpu_hit_weight asks for)."""
    pool = Pool(4)  # 3 usable blocks
    kv = KVCacheManager(pool, 16, caching=True, cpu=LruTier(8))
    held = pool.allocate(1)
    pool.cache_blocks(held, [100])  # stays in GPU memory (held)
    chain = pool.allocate(2)
    pool.cache_blocks(chain, [101, 102])
    pool.free(chain)
    assert pool.allocate(2) is not None  # evicts 102, 101 to the CPU tier
    prompt = [100, 101, 102, 103]
    assert kv.cached_prefix_tokens(prompt) == 16 * 3
    assert kv.cached_prefix_tokens(prompt, 0.5) == 16 * (1 + 0.5 * 2)
    assert kv.cached_prefix_tokens(prompt, 0.0) == 16
    assert kv.cached_prefix_tokens([101, 102], 0.5) == 16 * 0.5 * 2  # no GPU run: all from the CPU


ops = st.lists(
    st.tuples(st.sampled_from(["alloc", "free", "hit", "cpu_hit"]), st.integers(0, 9), st.integers(0, 30)),
    max_size=150,
)


@pytest.mark.parametrize("Pool", POOLS, ids=lambda c: c.__name__)
@settings(max_examples=150, deadline=None)
@given(operations=ops, gpu_blocks=st.integers(2, 12), cpu_blocks=st.integers(1, 10))
def test_tiers_conserve_blocks_and_cpu_keeps_the_latest_evictions(Pool, operations, gpu_blocks, cpu_blocks):
    """Random allocations (each block hashed with a fresh or reused value), frees, GPU hits and
    CPU hits. After every step: each tier conserves its blocks; every hash that left the GPU
    is no longer findable there; the CPU tier holds exactly the most recently stored or taken
    distinct hashes, up to its capacity (a plain list model of LRU)."""
    pool = Pool(gpu_blocks)
    pool.spill = spill_list(pool)
    tier = LruTier(cpu_blocks)
    model: list[int] = []  # the CPU tier's content by recency, least recent first
    held: list[list[int]] = []
    def drain() -> None:
        """What the KV manager does before every CPU question: store what left the GPU."""
        spilled = list(pool.spill)
        del pool.spill[:]
        assert not set(spilled) & pool.cached_hashes()  # what left the GPU is not findable there
        tier.store(spilled)
        for hv in spilled:
            if hv in model:
                model.remove(hv)
            model.append(hv)
            if len(model) > cpu_blocks:
                model.pop(0)

    for op, n, h in operations:
        if op == "alloc":
            got = pool.allocate(n % 4 + 1)
            drain()  # before the new blocks are hashed: one may take a hash just evicted
            if got is not None:
                for i, b in enumerate(got):
                    pool.cache_block(b, 1000 + (h + i) % 25)  # hashes recur: dups and refreshes
                held.append(got)
        elif op == "free" and held:
            pool.free(held.pop(n % len(held)))
        elif op == "hit":
            hit = pool.longest_hit([1000 + h % 25], 1)
            if hit:
                pool.touch(hit)
                held.append(hit)
        drain()
        if op == "cpu_hit" and model:
            want = model[n % len(model)]
            assert tier.leading_run([want], 0, 1) == 1
            tier.take([want])
            model.remove(want)
            model.append(want)
        assert tier.lru_order() == model
        tier.check_invariants()
        pool.check_invariants()
        assert pool.num_used() + pool.num_free() == gpu_blocks - 1
        assert tier.num_used() + tier.num_free() == cpu_blocks


# ---- the CPU tier in the engine ---------------------------------------------------------------
def tier_cfg(host_bandwidth: float = 25e9, cpu_blocks: int = 16, mode: str = "fast", **over: object):
    from tests.simhelpers import small_cfg

    # Llama-3.2-1B: 32,768 KV bytes per token, so a 4-token block is 128 KiB
    return small_cfg(gpu={"name": "A100-40GB", "host_bandwidth": host_bandwidth},
                     engine={"block_size": 4, "cpu_offload_gib": cpu_blocks * 4 * 32768 / 2**30},
                     run={"num_requests": 10, "mode": mode}, **over)


def offload_script():
    from tests.simhelpers import Scripted

    # 16 usable GPU blocks. A computes a 32-token prompt (8 blocks); C needs 16 blocks and evicts
    # all of A's, which go to the CPU tier; B starts with A's prompt: its 8 blocks are found in
    # CPU memory and copied back before B computes its last 8 prompt tokens.
    return [
        Scripted(0.0, [(1, 32)], 2),
        Scripted(1.0, [(2, 60)], 2),
        Scripted(2.0, [(1, 32), (3, 8)], 2),
    ]


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_a_cpu_hit_is_copied_back_and_the_copy_costs_time(mode):
    from simcore.costmodel import cpu_tier_blocks
    from tests.simhelpers import run_script

    assert cpu_tier_blocks(tier_cfg()) == 16
    ttft = {}
    for bw in (25e9, 1e9):
        res = run_script(tier_cfg(bw, mode=mode), 17, offload_script())
        a, c, b = res.records
        assert (a.cached_tokens, c.cached_tokens) == (0, 0)
        assert (b.cached_tokens, b.cpu_cached_tokens) == (32, 32)  # all from the CPU tier
        assert b.admitted_s == 2.0  # admitted when its copy starts
        assert res.engine.counters.cpu_loaded_blocks == 8
        assert res.engine.cpu is not None and res.engine.cpu.hit_blocks == 8
        ttft[bw] = b.first_token_s - b.arrival_s
    # the copy of 8 blocks of 128 KiB delays B's first token by exactly its transfer time
    copy = 8 * 4 * 32768
    assert ttft[1e9] - ttft[25e9] == pytest.approx(copy / 1e9 - copy / 25e9, rel=1e-9)


def test_without_a_cpu_tier_b_recomputes():
    from tests.simhelpers import run_script

    res = run_script(tier_cfg(cpu_blocks=0), 17, offload_script())
    assert [r.cached_tokens for r in res.records] == [0, 0, 0]
    assert res.engine.cpu is None


def test_a_cpu_tier_too_small_keeps_only_the_last_evicted():
    from tests.simhelpers import run_script

    # 3 CPU blocks: of A's chain, evicted tail first, the tier keeps the last three evicted:
    # its first three blocks, so B finds those 3 (12 tokens)
    res = run_script(tier_cfg(cpu_blocks=3), 17, offload_script())
    b = res.records[2]
    assert (b.cached_tokens, b.cpu_cached_tokens) == (12, 12)


def chat_with_offload(gib: float, mode: str = "fast") -> dict:
    from simcore.api import simulate
    from tests.simhelpers import small_cfg

    cfg = small_cfg(engine={"block_size": 16, "kv_budget_gib": 0.05, "max_model_len": 1600,
                            "cpu_offload_gib": gib},
                    workload={"kind": "chat", "users": 24, "turns": 4,
                              "think_time_s": {"kind": "exponential", "mean": 4.0}},
                    run={"num_requests": 400, "mode": mode, "warmup_s": 0})
    return simulate(cfg).summary


def test_the_hit_rate_rises_with_the_cpu_tier_and_splits_by_tier():
    rates = []
    for gib in (0.0, 0.05, 0.2, 1.0):
        s = chat_with_offload(gib)
        assert s["prefix_hit_rate"] == pytest.approx(s["hit_rate_gpu"] + s["hit_rate_cpu"])
        assert (s["hit_rate_cpu"] == 0) == (gib == 0)
        rates.append(s["prefix_hit_rate"])
    assert rates == sorted(rates) and rates[-1] > rates[0] + 0.2, rates


def test_blocks_are_conserved_in_both_tiers_after_a_run():
    from simcore.costmodel import kv_capacity_blocks
    from simcore.engine import Engine
    from simcore.workload import Workload
    from tests.simhelpers import small_cfg

    cfg = small_cfg(engine={"block_size": 16, "kv_budget_gib": 0.05, "max_model_len": 1600,
                            "cpu_offload_gib": 0.1},
                    workload={"kind": "chat", "users": 24, "turns": 4}, run={"num_requests": 300})
    engine = Engine(cfg, kv_capacity_blocks(cfg)[0])
    Workload(cfg).start(engine)
    engine.run()
    engine.pool.check_invariants()
    assert engine.pool.num_used() == 0  # every request released its blocks
    assert engine.cpu is not None
    engine.kv.drain()
    engine.cpu.check_invariants()
    assert engine.cpu.num_used() == engine.cpu.capacity_blocks  # full: it stored more than it holds
    assert engine.cpu.evictions > 0 and engine.counters.cpu_loaded_blocks > 0
