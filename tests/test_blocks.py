"""BlockPool: exact block ids, free-queue order and eviction order (vLLM v1 rules).

Every test runs on the pure-Python reference ``BlockPool`` and on the compiled ``CBlockPool``
(when it is built); ``test_native_pool_matches_reference`` replays random operation sequences on
both and compares every answer and the whole free queue after every step."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.blocks import BlockPool, native_pool_class

NATIVE = native_pool_class()
POOLS = [BlockPool] + ([NATIVE] if NATIVE is not None else [])
pytestmark = pytest.mark.parametrize("Pool", POOLS, ids=lambda c: c.__name__)


def test_fresh_blocks_come_in_id_order_and_null_block_is_reserved(Pool):
    pool = Pool(6)
    assert pool.usable_blocks == 5
    assert pool.allocate(3) == [1, 2, 3]
    assert pool.num_used() == 3
    assert pool.num_free() == 2
    assert pool.allocate(3) is None  # "no room" is a return value
    assert pool.allocate(2) == [4, 5]
    assert pool.allocate_one() is None


def test_freed_chain_goes_to_tail_deepest_first_and_is_evicted_tail_first(Pool):
    pool = Pool(6)
    chain = pool.allocate(3)
    for i, b in enumerate(chain):
        pool.cache_block(b, 100 + i)
    pool.free(chain)
    # head: never-used 4, 5; then the chain released deepest-first: 3, 2, 1
    assert pool.free_queue() == [4, 5, 3, 2, 1]
    assert pool.allocate(3) == [4, 5, 3]
    assert pool.evictions == 1
    assert pool.cached_block(102) is None  # block 3 held the chain's tail
    assert pool.cached_block(101) == 2 and pool.cached_block(100) == 1
    assert pool.allocate_one() == 2
    assert pool.cached_block(101) is None and pool.evictions == 2


def test_touch_takes_a_cached_block_out_of_the_queue_and_refree_moves_it_to_the_tail(Pool):
    pool = Pool(5)
    a = pool.allocate(2)
    pool.cache_block(a[0], 7)
    pool.cache_block(a[1], 8)
    pool.free(a)
    assert pool.free_queue() == [3, 4, 2, 1]
    hit = pool.longest_hit([7, 8, 9], max_blocks=3)
    assert hit == [1, 2]
    assert pool.count_free_in(hit) == 2
    pool.touch([1])
    assert pool.free_queue() == [3, 4, 2]
    assert pool.ref_cnt[1] == 1
    pool.free([1])
    assert pool.free_queue() == [3, 4, 2, 1]


def test_leading_run_evicting_answers_as_after_the_next_allocations(Pool):
    pool = Pool(8)
    a = pool.allocate(4)
    for i, b in enumerate(a):
        pool.cache_block(b, 10 + i)  # chain 10, 11, 12, 13 on blocks 1..4
    pool.free(a[2:])  # LRU: block 4 (hash 13), then block 3 (hash 12)
    pool.free(a[:2])  # ... then block 2 (11), block 1 (10)
    assert pool.free_queue() == [5, 6, 7, 4, 3, 2, 1]
    chain = [10, 11, 12, 13]
    assert pool.leading_run_evicting(chain, 4, 0) == pool.leading_run(chain, 4) == 4
    # the next 3 + m allocations take the 3 never-used blocks, then evict the m least recent
    assert pool.leading_run_evicting(chain, 4, 1) == 3  # block 4 (13) gone
    assert pool.leading_run_evicting(chain, 4, 2) == 2  # ... and block 3 (12)
    assert pool.leading_run_evicting(chain, 4, 3) == 1
    assert pool.leading_run_evicting(chain, 4, 9) == 0
    assert pool.leading_run_evicting(chain, 1, 3) == 1  # block 1 (10) is the last to go
    # leading_run_spared: the run if those evictions spare every block of it, else -1
    assert pool.leading_run_spared(chain, 4, 0) == 4
    assert pool.leading_run_spared(chain, 4, 1) == -1  # block 4 (13) ends the run
    assert pool.leading_run_spared(chain, 3, 1) == 3  # ... but not this one
    assert pool.leading_run_spared([10, 11, 99, 13], 4, 1) == 2  # a miss ends the run first
    assert pool.free_queue() == [5, 6, 7, 4, 3, 2, 1] and pool.evictions == 0  # nothing changed
    pool.touch([2])  # a block in use is never evicted: the run stops at the first gone block
    assert pool.leading_run_evicting(chain, 4, 2) == 2
    assert pool.leading_run_evicting(chain, 4, 3) == 0
    b = pool.allocate_one()
    pool.cache_block(b, 10)  # hash 10 held twice: an eviction may move it, so no answer
    assert pool.leading_run_evicting(chain, 4, 1) == -1
    assert pool.leading_run_spared(chain, 4, 0) == -1


def test_unhashed_blocks_go_to_the_head_and_are_reused_first(Pool):
    pool = Pool(6)
    a = pool.allocate(2)
    pool.cache_block(a[0], 1)  # a[1] stays unhashed (a partial block)
    pool.free(a)
    assert pool.free_queue() == [2, 3, 4, 5, 1]
    assert pool.allocate_one() == 2


def test_freed_unhashed_blocks_go_to_the_head_as_one_group_in_walk_order(Pool):
    """vLLM frees a table as ``free_blocks(reversed(blocks))`` and prepends the unhashed ones
    as a group: after freeing [1, 2, 3] the head reads 3, 2, 1 (the deepest is reused first)."""
    pool = Pool(8)
    pool.free(pool.allocate(3))
    assert pool.free_queue() == [3, 2, 1, 4, 5, 6, 7]
    assert pool.allocate(3) == [3, 2, 1]
    pool.free([3, 2, 1])
    assert pool.free_queue()[:3] == [1, 2, 3]


def test_a_later_group_goes_before_an_earlier_one_and_hashed_blocks_to_the_tail(Pool):
    pool = Pool(8)
    first, second = pool.allocate(2), pool.allocate(4)  # [1, 2], [3, 4, 5, 6]
    pool.cache_blocks(second[:2], [30, 40])  # 3 and 4 hashed; 5 and 6 not
    pool.free(first)
    pool.free(second)
    assert pool.free_queue() == [6, 5, 2, 1, 7, 4, 3]
    pool.check_invariants()


def test_longest_hit_stops_at_first_miss_and_respects_cap(Pool):
    pool = Pool(10)
    blocks = pool.allocate(4)
    for b, h in zip(blocks, [10, 11, 12, 13], strict=True):
        pool.cache_block(b, h)
    assert pool.longest_hit([10, 11, 99, 13], 4) == [1, 2]
    assert pool.longest_hit([10, 11, 12, 13], 3) == [1, 2, 3]
    assert pool.longest_hit([99, 11], 2) == []


def test_a_hint_from_another_pool_is_only_compared_by_what_its_ids_hold_here(Pool):
    """A conversation a router moved carries the block ids of its last replica's pool as its
    hint (found by scripts/fuzz_fast_vs_reference.py: the pure pool indexed past its ids)."""
    pool = Pool(10)
    blocks = pool.allocate(3)
    for b, h in zip(blocks, [10, 11, 12], strict=True):
        pool.cache_block(b, h)
    chain = [10, 11, 12]
    for hint in ([500, 501, 502], [1, 2, 900], [2, 1, 3], [1, 2, 3]):  # ids it never allocated, ...
        assert list(pool.hit_run(chain, 3, hint)) == pool.longest_hit(chain, 3) == [1, 2, 3]
    assert list(pool.hit_run([10, 99], 2, [1, 700])) == [1]


def test_duplicate_hash_keeps_first_block_findable_until_evicted(Pool):
    pool = Pool(4)
    a, b = pool.allocate_one(), pool.allocate_one()
    pool.cache_block(a, 5)
    pool.cache_block(b, 5)
    assert pool.cached_block(5) == a
    pool.free([a])
    pool.free([b])
    assert pool.allocate(2) == [3, a]  # evicts a: b now holds hash 5
    assert pool.cached_block(5) == b
    pool.check_invariants()


def test_misuse_raises(Pool):
    pool = Pool(4)
    b = pool.allocate_one()
    pool.cache_block(b, 1)
    with pytest.raises(RuntimeError, match="already holds a hash"):
        pool.cache_block(b, 2)
    pool.free([b])
    with pytest.raises(RuntimeError, match="freed more often"):
        pool.free([b])
    c = pool.allocate_one()
    pool.free([c])
    with pytest.raises(RuntimeError, match="only blocks in use"):
        pool.cache_block(c, 3)
    with pytest.raises(ValueError, match="need at least 2"):
        Pool(1)


def test_infinite_pool_allocates_lazily(Pool):
    pool = Pool(math.inf)
    assert pool.allocate(3) == [1, 2, 3]
    assert pool.num_free() == math.inf
    assert pool.num_used() == 3


def test_a_pool_beyond_64_bit_ids_still_counts_exactly(Pool):
    pool = Pool(10**22)  # a memory size no GPU has; the compiled pool must not overflow
    assert pool.allocate(3) == [1, 2, 3]
    assert pool.num_free() == 10**22 - 4
    pool.free([2])
    assert pool.num_free() == 10**22 - 3 and pool.allocate_one() == 2


ops = st.lists(
    st.tuples(st.sampled_from(["alloc", "free", "touch", "cache"]), st.integers(0, 7), st.integers(0, 30)),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(2, 20))
def test_random_operations_conserve_blocks(Pool, operations, num_blocks):
    pool = Pool(num_blocks)
    held: list[list[int]] = []
    for op, n, h in operations:
        if op == "alloc":
            got = pool.allocate(n)
            if got is None:
                assert n > pool.num_free()
            else:
                held.append(got)
        elif op == "free" and held:
            pool.free(held.pop(n % len(held)))
        elif op == "touch" and pool.cached_block(h) is not None:
            b = pool.cached_block(h)
            pool.touch([b])
            held.append([b])
        elif op == "cache" and held:
            owner = held[n % len(held)]
            free_of_hash = [b for b in owner if pool.hash_of(b) is None]
            if free_of_hash:
                pool.cache_block(free_of_hash[0], h)
        pool.check_invariants()
        assert pool.num_used() + pool.num_free() == pool.usable_blocks
        assert min(pool.ref_cnt) >= 0
    for blocks in held:
        pool.free(blocks)
    pool.check_invariants()
    assert pool.num_used() == 0
