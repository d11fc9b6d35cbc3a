"""A request as the engine sees it: token counts, block table and its record."""

from __future__ import annotations

from array import array
from typing import Any

from simcore.hashing import TokenSeq
from simcore.metrics import RequestRecord


class Request:
    """One generation request. ``seq`` holds at least ``prompt_len + output_len`` tokens of content.

    Engine state (tokens): ``num_computed`` have KV in cache; ``num_generated`` output tokens exist;
    ``num_tokens = prompt_len + num_generated`` are known. A request is in *decode* when exactly
    one known token lacks KV. ``blocks`` is its block table; the first ``num_cached_blocks`` of
    them hold hashes. The KV of the last output token is never computed (as in vLLM), so a
    finished request held ``prompt_len + output_len - 1`` tokens.
    """

    __slots__ = (
        "rid", "session_id", "turn", "profile", "seq", "prompt_len", "output_len", "record",
        "num_computed", "num_generated", "blocks", "num_cached_blocks",
        "admitted", "admit_seq", "done", "then_wait_s", "d0", "c0", "g0", "epoch", "member",
        "admit_computed", "high_water", "recomputed", "loading",
        "loading_shared",
    )

    def __init__(
        self,
        seq: TokenSeq,
        prompt_len: int,
        output_len: int,
        *,
        rid: int = 0,
        session_id: int = -1,
        turn: int = 0,
        profile: int = 0,
        arrival_s: float = 0.0,
    ) -> None:
        if prompt_len < 1 or output_len < 1:
            raise ValueError(f"prompt_len={prompt_len}, output_len={output_len}: both must be >= 1")
        if seq.num_tokens < prompt_len + output_len - 1:
            raise ValueError("seq is shorter than prompt + output - 1 tokens")
        self.rid = rid
        self.session_id = session_id
        self.turn = turn
        self.profile = profile
        self.seq = seq
        self.prompt_len = prompt_len
        self.output_len = output_len
        self.record = RequestRecord(
            request_id=rid, session_id=session_id, turn=turn, profile=profile, arrival_s=arrival_s,
            prompt_tokens=prompt_len, output_tokens=output_len,
        )
        seq.ensure_hashes(prompt_len + output_len - 1)
        self.num_computed = 0
        self.num_generated = 0
        self.blocks: array[int] = array("q")  # block table: 64-bit ids, read in place by C code
        self.num_cached_blocks = 0
        self.admitted = False
        self.admit_seq = -1
        # recomputation after preemption (see Scheduler._preempt_last): tokens with KV when
        # last admitted (its cache hit), the most it ever had computed, and the tokens computed
        # again in earlier admissions
        self.admit_computed = 0
        self.high_water = 0
        self.recomputed = 0
        self.done: Any = None  # set by the engine: an event fired when the request ends
        self.then_wait_s = 0.0  # ... this long after it completes (the client's think time)
        # fast-forward bookkeeping (see fastforward.py): decode state at step d0, and a
        # version number that invalidates stale heap entries.
        self.d0 = 0
        self.c0 = 0
        self.g0 = 0
        self.epoch = 0
        self.member: Any = None  # its phase-bucket entry while a decode member
        self.loading = 0  # blocks being copied from the CPU tier or the shared pool (see kvcache.py)
        self.loading_shared = 0  # ... of them, from the shared pool

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_generated

    def completion_delay(self, now: float) -> float:
        """Seconds from ``now`` until its completion event fires: its finish time plus its
        client's wait (the engine schedules the event as soon as the finish time is known)."""
        return self.record.finish_s + self.then_wait_s - now

    @property
    def max_kv_tokens(self) -> int:
        return self.prompt_len + self.output_len - 1

    def __repr__(self) -> str:
        return (f"Request(rid={self.rid}, prompt={self.prompt_len}, out={self.output_len}, "
                f"computed={self.num_computed}, generated={self.num_generated})")
