# Stub for simcore/_native.pyx: CBlockPool has BlockPool's interface and results.
from array import array
from typing import Any

from simcore.blocks import BlockPool

class CBlockPool(BlockPool):
    def admit_chain(
        self, hashes: array[int], hint: array[int] | None, num_tokens: int, budget: int, bs: int
    ) -> tuple[array[int], int, int] | None: ...

def extend_hashes(
    segs: list[tuple[int, int]], seg: int, off: int, block_size: int, want: int,
    hashes: array[int], parent: int,
) -> tuple[int, int]: ...

def decode_block_events(
    phase: list[list[Any]], first: int, last: int, pool: CBlockPool, caching: bool
) -> None: ...

def decode_steps(
    now: float, horizon: float, r: int, first: int, last: int, attn: int, used: int,
    phase: list[list[Any]], terms: tuple[float, ...], acc: tuple[float, float, float, int],
) -> tuple[float, int, float, float, float, float, int]: ...
