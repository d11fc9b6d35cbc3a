# Stub for the compiled pool (simcore/_cpool.pyx): it has BlockPool's interface and results.
from simcore.blocks import BlockPool

class CBlockPool(BlockPool): ...
