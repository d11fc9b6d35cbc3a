"""Block hashes as pure functions of token content.

Tokens are not materialised: a sequence is a list of segments ``(content_id, length)``, each a
run of tokens whose content is unique to ``content_id`` (a system prompt, one user message, one
reply, one trace block). A block covers tokens ``[j*B, (j+1)*B)`` and its content is the tuple
of segment pieces ``(content_id, start, end)`` it covers, so equal content gives equal pieces.

Block j's hash chains its parent's::

    h[j] = H(h[j-1] or root, pieces of block j)

H folds 64-bit words with a fixed mixer (MurmurHash3's 64-bit finaliser): starting from the
parent, each word w of each piece (content_id, start, end) gives ``h = fmix64(h * K + w)``, all
modulo 2**64, and the result is stored as a signed 64-bit integer. It is a pure function of the
content (no per-process salt), so hashes are the same on every worker, and cheap to compute in C
(``simcore._native.extend_hashes`` computes the same values). ``root`` carries a cache salt: 0
for shared prefix caching, a per-session value for session-only caching. A 64-bit collision
between distinct blocks is possible in principle (probability ~ n^2 / 2^64, about 1e-7 for two
million blocks) and ignored.
"""

from __future__ import annotations

from array import array
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass, field

from simcore.native import NATIVE

MASK64 = (1 << 64) - 1
_K = 0x9E3779B97F4A7C15  # odd: h -> h * K + w is a bijection of h
_C1 = 0xFF51AFD7ED558CCD
_C2 = 0xC4CEB9FE1A85EC53


def fmix64(k: int) -> int:
    """MurmurHash3's 64-bit finaliser (a bijection on 64-bit words)."""
    k ^= k >> 33
    k = k * _C1 & MASK64
    k ^= k >> 33
    k = k * _C2 & MASK64
    return k ^ (k >> 33)


def block_hash(parent: int, pieces: Sequence[int]) -> int:
    """H(parent, words): one block's hash as a signed 64-bit integer (see the module notes).

    ``parent`` and the words are taken modulo 2**64, so any Python int is accepted."""
    h = parent & MASK64
    for w in pieces:
        h = fmix64((h * _K + (w & MASK64)) & MASK64)
    return h - (1 << 64) if h >> 63 else h


def py_extend_hashes(
    segs: list[tuple[int, int]], seg: int, off: int, block_size: int, want: int,
    hashes: MutableSequence[int], parent: int,
) -> tuple[int, int]:
    """Append chained block hashes to ``hashes`` until it holds ``want``; the cursor (segment
    ``seg``, offset ``off``) is the first token not yet hashed. Returns the new cursor."""
    bs = block_size
    while len(hashes) < want:
        pieces: list[int] = []
        need = bs
        while need:
            cid, length = segs[seg]
            take = min(need, length - off)
            pieces += (cid, off, off + take)
            need -= take
            off += take
            if off == length:
                seg, off = seg + 1, 0
        parent = block_hash(parent, pieces)
        hashes.append(parent)
    return seg, off


# the compiled loop (simcore/_native.pyx) gives the same values
extend_hashes = py_extend_hashes if NATIVE is None else NATIVE.extend_hashes


@dataclass
class TokenSeq:
    """A growable token sequence with incrementally computed full-block hashes."""

    block_size: int
    root: int = 0
    segments: list[tuple[int, int]] = field(default_factory=list)
    num_tokens: int = 0
    # full-block hashes as 64-bit integers in one buffer (compiled code reads them in place)
    hashes: array[int] = field(default_factory=lambda: array("q"))
    # cursor: first token not yet covered by ``hashes`` sits in segment _seg at offset _off
    _seg: int = 0
    _off: int = 0
    # a lookup hint, not content: the block ids this sequence's chain held when last released
    # (the KV manager verifies them against the pool before use)
    hint_blocks: array[int] | None = None

    def append(self, content_id: int, length: int) -> None:
        if length <= 0:
            raise ValueError(f"segment length {length}: must be positive")
        self.segments.append((content_id, length))
        self.num_tokens += length

    def copy(self) -> TokenSeq:
        """An independent copy sharing nothing mutable (hash lists are copied, O(blocks))."""
        return TokenSeq(
            self.block_size, self.root, list(self.segments), self.num_tokens, self.hashes[:],
            self._seg, self._off,
        )

    def ensure_hashes(self, num_tokens: int) -> array[int]:
        """Compute hashes for every full block within the first ``num_tokens`` tokens."""
        want = min(num_tokens, self.num_tokens) // self.block_size
        hashes = self.hashes
        if len(hashes) < want:
            parent = hashes[-1] if hashes else self.root
            self._seg, self._off = extend_hashes(
                self.segments, self._seg, self._off, self.block_size, want, hashes, parent
            )
        return hashes
