"""Servers vLLM refuses to start: each check gives vLLM's reason in our words, or None.

A sweep grid easily names servers that cannot exist (a tensor-parallel degree that does not
divide the heads, a context the KV cache cannot hold); vLLM stops such a server at start-up, so
kvsweep records the run as ``infeasible`` with the reason and the fix instead of simulating it.
The rules, as read in vLLM's sources (``vllm/config/``, ``v1/core/kv_cache_utils.py``,
``model_executor/layers/linear.py``):

- the attention heads split evenly over the tensor-parallel GPUs (``ModelConfig``: "Total number
  of attention heads must be divisible by tensor parallel size");
- KV heads split evenly too, or, when the GPUs outnumber them, each is replicated on the same
  number of GPUs (``QKVParallelLinear``): TP divides the KV heads or is a multiple of them;
- ``block_size`` is one of vLLM's accepted sizes (``CacheConfig``);
- ``max_num_batched_tokens >= max_num_seqs`` (``SchedulerConfig``);
- ``max_model_len`` is at most the model's context (``ModelConfig``; vLLM allows more only with
  an environment override, which we do not model);
- the KV cache holds one request of ``max_model_len`` tokens (the engine's start-up memory check:
  "To serve at least one request with the model's max seq len ...").

vLLM's other start-up refusal that touches these settings, ``max_num_batched_tokens <
max_model_len`` without chunked prefill, cannot arise: kvsweep always chunks prefills, as vLLM
v1 does by default.
"""

from __future__ import annotations

from collections.abc import Callable

from simcore.config import SimConfig
from simcore.costmodel import kv_bytes_per_token_per_gpu

VLLM_BLOCK_SIZES = (1, 8, 16, 32, 64, 128, 256)
_GIB = 2**30


def _divisors(n: int) -> str:
    values = [d for d in range(1, n + 1) if n % d == 0]
    return ", ".join(map(str, values[:-1])) + f" or {values[-1]}" if len(values) > 1 else str(n)


def _tp_attention_heads(cfg: SimConfig) -> str | None:
    tp, heads = cfg.engine.tensor_parallel, cfg.model.num_attention_heads
    if heads % tp == 0:
        return None
    return (f"engine.tensor_parallel {tp} does not divide the {heads} attention heads of {cfg.model.name}:"
            f" vLLM refuses to start (use {_divisors(heads)})")


def _tp_kv_heads(cfg: SimConfig) -> str | None:
    tp, kv = cfg.engine.tensor_parallel, cfg.model.num_kv_heads
    if (kv % tp == 0) if tp < kv else (tp % kv == 0):
        return None
    return (f"engine.tensor_parallel {tp} neither divides the {kv} KV heads of {cfg.model.name} nor is a"
            f" multiple of them: vLLM splits KV heads evenly or replicates each on as many GPUs,"
            f" so it refuses to start (use a divisor or a multiple of {kv})")


def _block_size(cfg: SimConfig) -> str | None:
    bs = cfg.engine.block_size
    if bs in VLLM_BLOCK_SIZES:
        return None
    return (f"engine.block_size {bs} is not a size vLLM accepts"
            f" ({', '.join(map(str, VLLM_BLOCK_SIZES))}): it refuses to start (use 16, its default)")


def _batched_tokens(cfg: SimConfig) -> str | None:
    e = cfg.engine
    if e.max_num_batched_tokens >= e.max_num_seqs:
        return None
    return (f"engine.max_num_batched_tokens {e.max_num_batched_tokens} is below engine.max_num_seqs"
            f" {e.max_num_seqs}: vLLM refuses to start (raise max_num_batched_tokens to at least"
            f" {e.max_num_seqs} or lower max_num_seqs)")


def _model_len(cfg: SimConfig) -> str | None:
    m = cfg.model
    if cfg.max_model_len <= m.max_context:
        return None
    return (f"engine.max_model_len {cfg.max_model_len:,} exceeds the {m.max_context:,}-token context of"
            f" {m.name}: vLLM refuses to start (lower engine.max_model_len to {m.max_context:,} or less)")


CONFIG_CHECKS: tuple[Callable[[SimConfig], str | None], ...] = (
    _tp_attention_heads, _tp_kv_heads, _block_size, _batched_tokens, _model_len,
)


def config_refusal(cfg: SimConfig) -> str | None:
    """Why vLLM refuses these settings before it loads anything, or None."""
    for check in CONFIG_CHECKS:
        reason = check(cfg)
        if reason is not None:
            return reason
    return None


def memory_refusal(cfg: SimConfig, num_blocks: int) -> str | None:
    """Why a KV cache of ``num_blocks`` blocks (null block included, as vLLM counts its memory)
    cannot serve one request of ``max_model_len`` tokens, or None."""
    bs = cfg.engine.block_size
    need = -(-cfg.max_model_len // bs)
    if need <= num_blocks:
        return None
    per_block = bs * kv_bytes_per_token_per_gpu(cfg)
    fits = num_blocks * bs
    return (f"the KV cache holds {fits:,} tokens ({num_blocks * per_block / _GIB:.2f} GiB per GPU), less than"
            f" one request of max_model_len {cfg.max_model_len:,} ({need * per_block / _GIB:.2f} GiB):"
            f" vLLM refuses to start (set engine.max_model_len to {fits:,} or less, or give the KV cache"
            " more memory)")
