# Stub for simcore/_native.pyx: CBlockPool has BlockPool's interface and results.
from typing import Any

from simcore.blocks import BlockPool

class CBlockPool(BlockPool): ...

def chain_hashes(
    parent: int, content_id: int, offset: int, n: int, block_size: int, out: list[int]
) -> int: ...

def decode_block_events(
    phase: list[list[tuple[int, Any]]], first: int, last: int, pool: CBlockPool, caching: bool
) -> None: ...
