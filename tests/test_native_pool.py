"""The compiled CBlockPool against the pure-Python reference BlockPool, operation by operation."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.blocks import BlockPool, native_pool_class

NATIVE = native_pool_class()
REQUIRED = os.environ.get("KVSWEEP_REQUIRE_NATIVE") == "1"


def test_native_pool_is_built_where_required():
    """CI sets KVSWEEP_REQUIRE_NATIVE=1: there the compiled pool must be what runs."""
    if REQUIRED:
        assert NATIVE is not None, "simcore._cpool did not build; see setup.py"
    elif NATIVE is None:
        pytest.skip("compiled pool not built (pure-Python fallback in use)")
    assert NATIVE.__name__ == "CBlockPool"


ops = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "alloc1", "free", "hit", "cache", "cache_dup"]),
        st.integers(0, 9),
        st.integers(0, 12),
    ),
    max_size=200,
)


def _state(pool: BlockPool) -> tuple:
    return (pool.free_queue(), pool.ref_cnt, pool.num_free(), pool.num_used(), pool.num_cached(),
            pool.evictions)


@pytest.mark.skipif(NATIVE is None, reason="compiled pool not built")
@settings(max_examples=300, deadline=None)
@given(ops, st.integers(2, 24), st.booleans())
def test_native_pool_matches_reference(operations, num_blocks, caching):
    pools = [BlockPool(num_blocks, caching), NATIVE(num_blocks, caching)]  # type: ignore[misc]
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
            hint = held[h % len(held)] if held else None
            found = [p.longest_hit(hashes, len(hashes)) for p in pools]
            assert found[0] == found[1]
            assert [p.longest_hit_bisect(hashes, len(hashes), hint) for p in pools] == found
            assert [p.count_free_in(found[0]) for p in pools] == [pools[0].count_free_in(found[0])] * 2
            if found[0]:
                for p in pools:
                    p.touch(found[0])
                held.append(found[0])
        elif op in ("cache", "cache_dup") and held:
            owner = held[n % len(held)]
            todo = [b for b in owner if pools[0].hash_of(b) is None]
            base = 1000 * (h if op == "cache_dup" else len(chains) + 13)
            hashes = [base + i for i in range(len(todo))]
            for p in pools:
                for b, hv in zip(todo, hashes, strict=True):
                    p.cache_block(b, hv)
            if caching and hashes:
                chains.append(hashes)
        assert _state(pools[0]) == _state(pools[1])
        assert [p.cached_block(hv) for p in pools for hv in (1000, 1001, 13000)][:3] == \
            [pools[1].cached_block(hv) for hv in (1000, 1001, 13000)]
        pools[1].check_invariants()
    for blocks in held:
        for p in pools:
            p.free(blocks)
    assert _state(pools[0]) == _state(pools[1])
    for p in pools:
        p.check_invariants()
        assert p.num_used() == 0
