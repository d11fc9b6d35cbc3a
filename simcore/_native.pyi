# Stub for simcore/_native.pyx: CBlockPool has BlockPool's interface and results.
from array import array
from typing import Any

from simcore.blocks import BlockPool

class CBlockPool(BlockPool): ...

def extend_hashes(
    segs: list[tuple[int, int]], seg: int, off: int, block_size: int, want: int,
    hashes: array[int], parent: int,
) -> tuple[int, int]: ...

def decode_block_events(
    phase: list[list[tuple[int, Any]]], first: int, last: int, pool: CBlockPool, caching: bool
) -> None: ...
