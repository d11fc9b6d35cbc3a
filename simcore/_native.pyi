# Stub for simcore/_native.pyx: CBlockPool has BlockPool's interface and results.
from simcore.blocks import BlockPool

class CBlockPool(BlockPool): ...

def chain_hashes(
    parent: int, content_id: int, offset: int, n: int, block_size: int, out: list[int]
) -> int: ...
