"""The compiled module (simcore/_native.pyx) against its pure-Python twins, result for result."""

from __future__ import annotations

import itertools
import os
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.blocks import BlockPool, native_pool_class

NATIVE = native_pool_class()
REQUIRED = os.environ.get("KVSWEEP_REQUIRE_NATIVE") == "1"


def test_native_pool_is_built_where_required():
    """CI sets KVSWEEP_REQUIRE_NATIVE=1: there the compiled pool must be what runs."""
    if REQUIRED:
        assert NATIVE is not None, "simcore._native did not build; see setup.py"
    elif NATIVE is None:
        pytest.skip("compiled pool not built (pure-Python fallback in use)")
    assert NATIVE.__name__ == "CBlockPool"


ops = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "alloc1", "free", "hit", "cache", "cache_dup", "admit"]),
        st.integers(0, 9),
        st.integers(0, 12),
    ),
    max_size=200,
)


def _state(pool: BlockPool) -> tuple:
    return (pool.free_queue(), pool.ref_cnt, pool.num_free(), pool.num_used(), pool.num_cached(),
            pool.evictions, list(pool.spill or ()), pool.cached_hashes(), pool.num_free_uncached())


def _admit_both(pools: list, chains: list[list[int]], held: list[list[int]], n: int, h: int,
                caching: bool) -> tuple[list[int], int, int, list[int]] | None:
    """The compiled pool's admit_chain against the KV manager's Python steps (lookup, room
    check, touch, allocate, hash the filled blocks) on the reference pool: same result, and
    the caller compares the pools' states."""
    bs = 4
    base = chains[n % len(chains)] if chains else []
    hashes = base + [hash((7777, len(chains), n, i)) for i in range(h % 4)]
    num_tokens = max(1, len(hashes) * bs + n % bs)
    budget = 1 + 3 * h
    hint = array("q", held[h % len(held)]) if held else None
    ref, nat = pools
    got = nat.admit_chain(array("q", hashes), hint, num_tokens, budget, bs)
    hits = ref.hit_run(hashes, (num_tokens - 1) // bs, hint) if caching else array("q")
    n_hits = len(hits)
    new = min(num_tokens - n_hits * bs, budget)
    need = -(-(n_hits * bs + new) // bs) - n_hits
    if need + ref.count_free_in(hits) > ref.num_free():
        assert got is None
        return None
    ref.touch(hits)
    assert ref.allocate_into(hits, need)
    full = (n_hits * bs + new) // bs
    if caching:
        ref.cache_blocks(hits[n_hits:full], hashes[n_hits:full])
    assert got is not None and (list(got[0]), got[1], got[2]) == (list(hits), new, n_hits)
    return list(hits), new, n_hits, hashes


@pytest.mark.skipif(NATIVE is None, reason="compiled pool not built")
@settings(max_examples=300, deadline=None)
@given(ops, st.integers(2, 24), st.booleans())
def test_native_pool_matches_reference(operations, num_blocks, caching):
    pools = [BlockPool(num_blocks, caching), NATIVE(num_blocks, caching)]  # type: ignore[misc]
    pools[0].spill, pools[1].spill = [], array("q")  # both report hashes leaving, in order
    held: list[list[int]] = []  # both pools hand out the same ids, so one list serves both
    chains: list[list[int]] = []  # hash chains that were cached, for lookups
    for op, n, h in operations:
        if op == "alloc":
            got = [p.allocate(n) for p in pools]
            assert got[0] == got[1]
            if got[0] is not None:
                held.append(got[0])
        elif op == "alloc1":
            got1 = [p.allocate_one() for p in pools]
            assert got1[0] == got1[1]
            if got1[0] is not None:
                held.append([got1[0]])
        elif op == "free" and held:
            blocks = held.pop(n % len(held))
            for p in pools:
                p.free(blocks)
        elif op == "hit" and chains:
            hashes = chains[n % len(chains)]
            found = [p.longest_hit(hashes, len(hashes)) for p in pools]
            assert found[0] == found[1]
            assert [p.leading_run(hashes, h) for p in pools] == [len(found[0][:h])] * 2
            # a hint from some other held chain: the hinted lookup must still give exactly the
            # linear result
            ids = held[h % len(held)] if held else None
            assert [p.longest_hit_hinted(hashes, len(hashes), ids) for p in pools] == found
            assert [p.count_free_in(found[0]) for p in pools] == [pools[0].count_free_in(found[0])] * 2
            if found[0]:
                for p in pools:
                    p.touch(found[0])
                held.append(found[0])
        elif op in ("cache", "cache_dup") and held:
            owner = held[n % len(held)]
            todo = [b for b in owner if pools[0].hash_of(b) is None]
            base = 1000 * (h if op == "cache_dup" else len(chains) + 13)
            # chained, as TokenSeq's are: block i's hash covers blocks 0..i
            hashes = list(itertools.accumulate(range(len(todo)), lambda prev, i: hash((prev, i)),
                                               initial=base))[1:]
            for p in pools:
                for b, hv in zip(todo, hashes, strict=True):
                    p.cache_block(b, hv)
            if caching and hashes:
                chains.append(hashes)
        elif op == "admit":
            got = _admit_both(pools, chains, held, n, h, caching)
            if got is not None:
                held.append(got[0])
                full = (got[2] * 4 + got[1]) // 4
                if caching and full:
                    chains.append(got[3][:full])
        assert _state(pools[0]) == _state(pools[1])
        probe = [hv for chain in chains[-3:] for hv in chain[:3]]
        assert [pools[0].cached_block(hv) for hv in probe] == [pools[1].cached_block(hv) for hv in probe]
        pools[1].check_invariants()
    for blocks in held:
        for p in pools:
            p.free(blocks)
    assert _state(pools[0]) == _state(pools[1])
    for p in pools:
        p.check_invariants()
        assert p.num_used() == 0


@pytest.mark.skipif(NATIVE is None, reason="compiled module not built")
@given(st.integers(-(2**63), 2**63 - 1),
       st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(1, 70)), min_size=1, max_size=12),
       st.sampled_from([1, 3, 8, 16]), st.data())
def test_native_extend_hashes_match_python(root, segments, block_size, data):
    """Block hashes over random segment layouts (blocks inside one segment, straddling several,
    partial prefixes already hashed) are the same values in C and in Python."""
    from simcore._native import extend_hashes
    from simcore.hashing import py_extend_hashes

    total = sum(n for _, n in segments) // block_size
    first = data.draw(st.integers(0, total))
    want = data.draw(st.integers(first, total))
    start = array("q")
    cursor = py_extend_hashes(segments, 0, 0, block_size, first, start, root)
    parent = start[-1] if start else root
    native, python = start[:], start[:]
    got = extend_hashes(segments, *cursor, block_size, want, native, parent)
    assert got == py_extend_hashes(segments, *cursor, block_size, want, python, parent)
    assert native == python and len(native) == want


@pytest.mark.skipif(NATIVE is None, reason="compiled pool not built")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_native_hash_table_under_load_matches_reference(seed):
    """Thousands of blocks: the compiled pool's own hash table (linear probing, resizes,
    backward-shift deletion) answers every lookup as the reference's dict does."""
    import random

    rnd = random.Random(seed)
    pools = [BlockPool(3001), NATIVE(3001)]  # type: ignore[misc]
    held: list[list[int]] = []
    keys: list[int] = []
    for _ in range(400):
        n = rnd.randint(1, 60)
        got = [p.allocate(n) for p in pools]
        assert got[0] == got[1]
        if got[0] is not None:
            # full-width hash values, some repeated (duplicates), as Python's hash() gives
            hs = [rnd.choice(keys) if keys and rnd.random() < 0.05 else rnd.getrandbits(64) - 2**63
                  for _ in got[0]]
            keys += hs
            for p in pools:
                p.cache_blocks(got[0], hs)
            held.append(got[0])
        while held and (rnd.random() < 0.5 or got[0] is None):
            blocks = held.pop(rnd.randrange(len(held)))
            for p in pools:
                p.free(blocks)
        probe = rnd.sample(keys, min(50, len(keys)))
        assert [pools[1].cached_block(k) for k in probe] == [pools[0].cached_block(k) for k in probe]
        assert pools[1].num_cached() == pools[0].num_cached()
    assert pools[1].free_queue() == pools[0].free_queue()
    assert pools[1].evictions == pools[0].evictions > 1000
    pools[1].check_invariants()


@pytest.mark.skipif(NATIVE is None, reason="compiled module not built")
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(0, 10**7), st.integers(0, 50), st.integers(0, 5000),
       st.lists(st.floats(1e-12, 1e-2), min_size=14, max_size=14), st.sampled_from([1, 4, 16]),
       st.floats(0.0, 5.0), st.data())
def test_native_decode_steps_match_python_bit_for_bit(r, attn, first, used, coefs, bs, now, data):
    """The window's step loop: same end time, same counters, to the last bit (no FMA), on
    both sides of every max() in the step time and of the CUDA-graph threshold."""
    from simcore._native import decode_steps as c_steps
    from simcore.fastforward import decode_steps as py_steps

    last = first + data.draw(st.integers(0, 400))
    horizon = data.draw(st.sampled_from([float("inf"), now + data.draw(st.floats(0.0, 1.0))]))
    phase = [[(0, None)] * data.draw(st.integers(0, 3)) for _ in range(bs)]
    acc = (data.draw(st.floats(0, 100)), data.draw(st.floats(0, 100)), data.draw(st.floats(0, 1e6)),
           data.draw(st.integers(0, 10**5)))
    graph_max = data.draw(st.integers(0, 600))
    terms = (*coefs[:12], graph_max, *coefs[12:])
    args = (now, horizon, r, first, last, attn, used, phase, terms, acc)
    assert c_steps(*args) == py_steps(*args)


@pytest.mark.skipif(NATIVE is None, reason="compiled pool not built")
def test_admit_chain_counts_only_free_hits_against_the_room():
    """A prefix held by another request costs no free blocks: with 2 free blocks, a request
    that hits 4 held blocks and needs 2 new ones fits (as KVCacheManager.admit decides)."""
    pool = NATIVE(10)  # 9 usable blocks
    chain = pool.allocate(4)
    hashes = [11, 12, 13, 14]
    pool.cache_blocks(chain, hashes)
    pool.allocate(3)  # 7 in use, 2 free
    got = pool.admit_chain(array("q", hashes + [15]), None, 21, 100, 4)
    assert got is not None
    table, n, n_hits = got
    assert (list(table[:4]), n, n_hits, len(table)) == (chain, 5, 4, 6)
    assert pool.num_free() == 0 and pool.hash_of(table[4]) == 15
    assert pool.admit_chain(array("q", hashes + [15, 16]), None, 25, 100, 4) is None
