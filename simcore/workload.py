"""Workloads as SimPy processes that build requests and submit them to the engine.

Content identity: a prompt is a list of segments ``(content_id, length)`` (see ``hashing.py``).
System prompt k of profile p is ``p * 2**20 + k`` (shared by every session that draws it); every
user message and reply gets a fresh id ``(stream + 1) << 32 | n`` from its own stream (a user in a
closed loop, a session in an open loop), so ids never depend on event timing.

Randomness: one ``numpy.random.SeedSequence`` from the run seed; each user or session draws from
its own child stream (``spawn_key``), so a user's draws do not depend on when other users finish.
A closed-loop user draws each kind of value (turn counts, lengths, think times) in batches
(:class:`_Draws`).

Turn k of a session prompts with the whole conversation so far (system prompt, every earlier
message and reply) plus the new message. A turn that would not fit the server's context
(``max_model_len``) ends the session; the user starts a new one. Think time follows every turn,
and a closed-loop user's first session starts after one think time (users ramp up instead of
all arriving at time zero).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from simcore.config import (
    ApiWorkload,
    ChatWorkload,
    MixWorkload,
    PoissonWorkload,
    Profile,
    SharedPrefixWorkload,
    SimConfig,
    TraceWorkload,
)
from simcore.dists import sample_tokens
from simcore.hashing import TokenSeq

if TYPE_CHECKING:
    from simcore.cluster import Cluster
    from simcore.engine import Engine

_SYS_STRIDE = 2**20
USER_DRAW_BATCH = 64  # values of one kind a closed-loop user draws at a time (see _Draws)
FAILURE_BACKOFF_S = 1.0  # a client whose request was refused waits this long before a new session


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0  # load_trace reports the missing file


@lru_cache(maxsize=4)
def _load_trace_cached(
    path: str, fmt: str, time_scale: float, limit: int | None, mtime: float
) -> tuple[Any, ...]:
    """Parse a trace once per worker process: a sweep runs many simulations of one trace."""
    from simcore.traces import load_trace

    return tuple(load_trace(path, fmt, time_scale, limit))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


class _Ids:
    """Fresh content ids for one stream."""

    __slots__ = ("base", "n")

    def __init__(self, stream: int) -> None:
        self.base = (stream + 1) << 32
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.base | self.n


_DrawFn = Callable[[np.random.Generator, int], list[Any]]


class _Draws:
    """A stream's random values, drawn from its generator in batches of ``batch`` per kind.

    numpy's cost per call dwarfs the cost per value for the handful of values a session needs,
    so a closed-loop user draws ``USER_DRAW_BATCH`` values of a kind at a time and hands them
    out in order. What a stream gets still depends only on its own sequence of requests (not on
    other streams or event timing), so runs stay deterministic; ``batch=1`` draws exactly what
    is asked, when it is asked.
    """

    __slots__ = ("rng", "batch", "_bufs")

    def __init__(self, rng: np.random.Generator, batch: int) -> None:
        self.rng = rng
        self.batch = batch
        self._bufs: dict[Any, list[Any]] = {}  # kind -> [values, position of the next one]

    def take(self, kind: Any, draw: _DrawFn, n: int) -> list[Any]:
        """The next ``n`` values of ``kind``; ``draw(rng, m)`` makes ``m`` more when needed."""
        buf = self._bufs.get(kind)
        if buf is None:
            buf = self._bufs[kind] = [[], 0]
        values, pos = buf
        if pos + n > len(values):
            values = buf[0] = values[pos:] + draw(self.rng, max(n, self.batch))
            pos = 0
        buf[1] = pos + n
        return values[pos:pos + n]  # type: ignore[no-any-return]


class Workload:
    """Starts the processes that submit requests for one :class:`SimConfig`."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        w = cfg.workload
        self.seed = cfg.run.seed
        self.block_size = cfg.engine.block_size
        self.max_context = cfg.max_model_len  # the server's limit: sessions end before it
        self.session_caching = cfg.engine.prefix_caching == "session"
        self._openings: dict[tuple[int, int], TokenSeq] = {}  # (profile, prompt) -> prototype
        if isinstance(w, (ChatWorkload, PoissonWorkload)):
            self.profiles: list[Profile] = [w]
            self.weights = np.ones(1)
        elif isinstance(w, ApiWorkload):
            self.profiles = [w.as_profile()]
            self.weights = np.ones(1)
        elif isinstance(w, MixWorkload):
            self.profiles = list(w.profiles)
            self.weights = np.array([p.weight for p in w.profiles]) / sum(p.weight for p in w.profiles)
        else:
            self.profiles = []
            self.weights = np.ones(1)
        self._draw_fns = [self._profile_draws(p) for p in self.profiles]
        pool_rng = _rng(self.seed, 0)
        self.sys_lengths = [
            sample_tokens(p.system_prompt_tokens, pool_rng, p.system_prompts, self.max_context)
            if p.system_prompt_tokens.lower_bound() > 0 or p.system_prompt_tokens.mean_hint() > 0
            else [0] * p.system_prompts
            for p in self.profiles
        ]

    def _profile_draws(self, prof: Profile) -> tuple[_DrawFn, ...]:
        """How a session of ``prof`` draws its turn count, system prompt, message and reply
        lengths and think times (in that order of keys; see :class:`_Draws`)."""
        cap = self.max_context
        # every turn adds at least two tokens (message and reply), so no more turns than that fit
        turn_cap = max(1, cap // 2)
        return (
            lambda rng, n: sample_tokens(prof.turns, rng, n, turn_cap),
            lambda rng, n: rng.integers(prof.system_prompts, size=n).tolist(),
            lambda rng, n: sample_tokens(prof.user_tokens, rng, n, cap),
            lambda rng, n: sample_tokens(prof.output_tokens, rng, n, cap),
            prof.think_time_s.sample,
        )

    def _draw_profile(self, rng: np.random.Generator, n: int) -> list[int]:
        return rng.choice(len(self.profiles), size=n, p=self.weights).tolist()  # type: ignore[no-any-return]

    def start(self, engine: Engine | Cluster) -> None:
        env = engine.env
        w = self.cfg.workload
        if isinstance(w, TraceWorkload):
            env.process(self._trace(engine, w))
        elif isinstance(w, SharedPrefixWorkload):
            env.process(self._shared_prefix(engine, w))
        elif isinstance(w, ChatWorkload) or (isinstance(w, MixWorkload) and w.users is not None):
            users = w.users
            assert users is not None
            for u in range(users):
                env.process(self._user(engine, u))
        else:
            rate = w.request_rate if isinstance(w, ApiWorkload) else w.session_rate
            assert rate is not None
            env.process(self._open_loop(engine, rate))

    # ---- processes -------------------------------------------------------------------------
    def _user(self, engine: Engine | Cluster, user: int) -> Generator[Any, Any, None]:
        draws = _Draws(_rng(self.seed, 1, user), USER_DRAW_BATCH)
        ids = _Ids(user)
        n = 0
        while True:
            alive = yield from self._session(engine, draws, ids, session_id=(user << 20) | n, stagger=n == 0)
            n += 1
            if not alive:
                return

    def _open_loop(self, engine: Engine | Cluster, rate: float) -> Generator[Any, Any, None]:
        rng = _rng(self.seed, 2)
        env = engine.env
        i = 0
        while True:
            yield engine.timeout(float(rng.exponential(1.0 / rate)))
            if not engine.may_submit():
                return
            stream = 1 << 30 | i
            draws = _Draws(_rng(self.seed, 3, i), 1)
            env.process(self._session(engine, draws, _Ids(stream), session_id=stream))
            i += 1

    def _session(
        self, engine: Engine | Cluster, draws: _Draws, ids: _Ids, session_id: int, stagger: bool = False
    ) -> Generator[Any, Any, bool]:
        """One conversation; returns False when the run stops accepting requests.

        ``stagger``: a closed-loop user's first session starts after one think time, so users
        do not all arrive at time zero (with zero think time they do).
        """
        k = 0 if len(self.profiles) == 1 else draws.take(-1, self._draw_profile, 1)[0]
        prof = self.profiles[k]
        fns = self._draw_fns[k]
        turns = draws.take((k, 0), fns[0], 1)[0]
        sys_k = draws.take((k, 1), fns[1], 1)[0]
        msgs = draws.take((k, 2), fns[2], turns)
        outs = draws.take((k, 3), fns[3], turns)
        thinks = draws.take((k, 4), fns[4], turns)
        cap = self.max_context
        seq = self._opening(session_id, k, sys_k)
        sid = -1 if prof.sessionless else session_id
        if stagger:
            (delay,) = draws.take((k, 4), fns[4], 1)
            if delay > 0:
                yield engine.timeout(delay)
        for t in range(turns):
            msg, out = msgs[t], outs[t]
            if seq.num_tokens + msg + out > cap:
                if t > 0:
                    return True  # context full: the user starts a new conversation
                msg = max(1, cap - seq.num_tokens - out)
                out = max(1, min(out, cap - seq.num_tokens - msg))
            if not engine.may_submit():
                return False
            seq.append(ids.next(), msg)
            prompt = seq.num_tokens
            seq.append(ids.next(), out)
            # the completion fires after the think time that follows the reply
            ok = yield engine.submit(
                seq, prompt, out, then_wait_s=thinks[t], session_id=sid, turn=t, profile=k
            )
            if not ok:
                # the request failed (it can never fit): the conversation ends and the user backs
                # off, so simulated time advances even with zero think time
                yield engine.timeout(FAILURE_BACKOFF_S)
                return True
        return True

    def _opening(self, session_id: int, k: int, sys_k: int) -> TokenSeq:
        """A session's sequence holding just its system prompt. With shared caching every
        session of one prompt starts from the same hashes: they are computed once and copied."""
        proto = None if self.session_caching else self._openings.get((k, sys_k))
        if proto is not None:
            return proto.copy()
        sys_len = int(self.sys_lengths[k][sys_k])
        seq = TokenSeq(self.block_size, session_id + 1 if self.session_caching else 0)
        if sys_len:
            seq.append(k * _SYS_STRIDE + sys_k, sys_len)
        if self.session_caching:
            return seq
        seq.ensure_hashes(sys_len)
        self._openings[(k, sys_k)] = seq
        return seq.copy()

    def _trace(self, engine: Engine | Cluster, w: TraceWorkload) -> Generator[Any, Any, None]:
        from simcore.traces import prompt_segments

        reqs = _load_trace_cached(w.path, w.format, w.time_scale, w.limit, _mtime(w.path))
        env = engine.env
        out_ids = _Ids(0)
        for i, tr in enumerate(reqs):
            if tr.arrival_s > env.now:
                yield engine.timeout(tr.arrival_s - env.now)
            if not engine.may_submit():
                return
            # per-request roots below -1 (clear of -1, which CPython's hash() maps like -2)
            seq = TokenSeq(self.block_size, 0 if not self.session_caching else -(i + 2))
            for cid, length in prompt_segments(tr, i, w.trace_block_tokens):
                seq.append(cid, length)
            prompt = seq.num_tokens
            out = max(1, tr.output_tokens)
            seq.append(out_ids.next(), out)
            engine.submit(seq, prompt, out, session_id=-1, turn=0, profile=0)

    def _shared_prefix(self, engine: Engine | Cluster, w: SharedPrefixWorkload) -> Generator[Any, Any, None]:
        """Staged constant-rate load over a fixed cycle of shared-prefix prompts (see
        :class:`SharedPrefixWorkload`). System prompt g is content ``g`` (as profile 0's system
        prompts), question p is ``QUESTION_BASE + p``; replies get fresh ids."""
        rng = _rng(self.seed, 4)
        count = w.groups * w.prompts_per_group
        order = rng.permutation(count).tolist()
        arrivals = stage_arrivals(w, rng)
        protos: dict[int, TokenSeq] = {}
        out_ids = _Ids(0)
        env = engine.env
        for i, at in enumerate(arrivals):
            if at > env.now:
                yield engine.timeout(at - env.now)
            if not engine.may_submit():
                return
            p = order[i % count]
            proto = None if self.session_caching else protos.get(p)
            if proto is None:
                proto = TokenSeq(self.block_size, -(i + 2) if self.session_caching else 0)
                if w.system_prompt_tokens:
                    proto.append(p // w.prompts_per_group, w.system_prompt_tokens)
                proto.append(QUESTION_BASE + p, w.question_tokens)
                if not self.session_caching:
                    proto.ensure_hashes(proto.num_tokens)
                    protos[p] = proto
            seq = proto.copy()
            seq.append(out_ids.next(), w.output_tokens)
            engine.submit(seq, proto.num_tokens, w.output_tokens, session_id=-1, turn=0, profile=0)


QUESTION_BASE = 1 << 40  # content ids of shared-prefix questions (clear of reply ids, < 2**33)


def stage_arrivals(w: SharedPrefixWorkload, rng: np.random.Generator) -> list[float]:
    """Arrival times: per stage, int(rate x duration) exponential gaps rescaled to fill it."""
    times: list[float] = []
    start = 0.0
    for stage in w.stages:
        n = int(stage.rate * stage.duration_s)
        if n:
            gaps = rng.exponential(1.0, n)
            times += (start + np.cumsum(gaps * (stage.duration_s / gaps.sum()))).tolist()
        start += stage.duration_s
    return times
