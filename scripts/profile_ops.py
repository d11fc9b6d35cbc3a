"""Profile one transformer layer's operators on this machine's GPU, in the operators format.

    python scripts/profile_ops.py --model Llama-3.1-8B --tp 1,2,4,8 --out llama31_8b_ops.csv
    kvsweep calibrate llama31_8b_ops.csv --gpu H200 --out my-h200.yaml    # fit the compute curve

Needs PyTorch with a CUDA GPU (not a kvsweep dependency: run it where the GPU is). For each
tensor-parallel degree and step size (``num_tokens``) it times the operators of one layer of the
catalog model, with one GPU's share of the weights (a TP worker's shapes; no all-reduce), as
Vidur's ``profiling/compute/<gpu>/<model>/mlp.csv`` does, and writes the same columns, so
``kvsweep calibrate`` and ``sweep.measured.load_operator_profile`` read it:

- linear: ``attn_pre_proj`` (QKV), ``attn_post_proj`` (O), ``mlp_up_proj`` (gate and up),
  ``mlp_down_proj``: bf16 ``x @ W.T`` through cuBLAS;
- elementwise: ``input_layernorm`` and ``post_attention_layernorm`` (RMSNorm), ``attn_rope``
  (rotary on q and k), ``mlp_act`` (SiLU(gate) * up), ``add`` (the residual add): each one
  function compiled by ``torch.compile`` into fused kernels, as vLLM's custom ops are fused
  (``--eager`` times PyTorch's unfused ops instead).

How a time is taken: each operator is called R times in a CUDA graph (so CPU launch cost is
out: vLLM runs its steps as CUDA graphs), the graph replayed ``--replays`` times, each replay
timed with CUDA events; a row's min/max/mean/median/std are over the replays, per call, in ms.
The linear operators cycle through enough copies of their weight to exceed the GPU's L2 cache
four times over, so every call streams its weight from HBM as a forward pass through distinct
layers does. R is chosen so that a replay lasts about 2 ms.

``--host-copy`` also times pinned host-to-device and device-to-host copies of 1 GiB (the PCIe
bandwidth a CPU KV tier crosses: ``host_bandwidth`` in the GPU catalog) and prints them.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simcore import catalog  # noqa: E402

#: Vidur's step sizes up to 512, then wider steps up to 16k
TOKENS = (
    [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512]
    + [640, 768, 1024, 1280, 1536, 2048, 2560, 3072, 4096, 6144, 8192, 12288, 16384]
)
OPS = (
    "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
    "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add",
)
STATS = ("min", "max", "mean", "median", "std")
REPLAY_S = 2e-3
L2_MULTIPLE = 4


def rms_norm(x: Any, w: Any) -> Any:
    import torch

    var = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(var + 1e-5)).to(x.dtype) * w


def rope(q: Any, k: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    """Rotary embedding (the rotate-half form) on q and k, [tokens, heads, head_dim]."""
    import torch

    def rot(t: Any) -> Any:
        a, b = t.chunk(2, dim=-1)
        return t * cos + torch.cat((-b, a), dim=-1) * sin

    return rot(q), rot(k)


def silu_and_mul(x: Any) -> Any:
    import torch

    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


def add(x: Any, y: Any) -> Any:
    return x + y


class Layer:
    """One TP worker's share of a layer of ``model``: the shapes of every operator."""

    def __init__(self, model: dict[str, Any], tp: int) -> None:
        self.hidden = int(model["hidden_size"])
        self.heads = int(model["num_attention_heads"])
        self.kv_heads = int(model["num_kv_heads"])
        self.head_dim = int(model.get("head_dim") or self.hidden // self.heads)
        self.ffn = int(model["intermediate_size"])
        self.vocab = int(model.get("vocab_size", 0))
        self.tp = tp
        self.q_local = self.heads // tp
        self.kv_local = max(1, self.kv_heads // tp)  # vLLM replicates KV heads when tp > kv_heads
        self.ffn_local = self.ffn // tp

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in features, out features) of each linear operator."""
        d = self.head_dim
        return {
            "attn_pre_proj": (self.hidden, (self.q_local + 2 * self.kv_local) * d),
            "attn_post_proj": (self.q_local * d, self.hidden),
            "mlp_up_proj": (self.hidden, 2 * self.ffn_local),
            "mlp_down_proj": (self.ffn_local, self.hidden),
        }

    def columns(self) -> dict[str, Any]:
        return {
            "n_head": self.heads, "n_kv_head": self.kv_heads, "n_embd": self.hidden,
            "n_expanded_embd": self.ffn, "vocab_size": self.vocab, "use_gated_mlp": True,
        }


class Profiler:
    def __init__(self, torch: Any, replays: int, eager: bool) -> None:
        self.torch = torch
        self.dev = torch.device("cuda")
        self.replays = replays
        props = torch.cuda.get_device_properties(self.dev)
        self.l2_bytes = int(getattr(props, "L2_cache_size", 50 << 20))
        self.name = props.name
        compile_fn = (lambda f: f) if eager else (lambda f: torch.compile(f, dynamic=True))
        fns = (rms_norm, rope, silu_and_mul, add)
        self.norm, self.rope, self.act, self.add = (compile_fn(f) for f in fns)

    def tensor(self, *shape: int) -> Any:
        return self.torch.randn(*shape, device=self.dev, dtype=self.torch.bfloat16)

    def time_calls(self, call: Callable[[int], Any]) -> list[float]:
        """Per-call GPU time (ms) of ``call(i)`` over the replays of a graph of R calls."""
        torch = self.torch
        for i in range(3):  # warm-up (and torch.compile's first run) outside the graph
            call(i)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(3):
            call(i)
        torch.cuda.synchronize()
        one = (time.perf_counter() - t0) / 3
        reps = max(3, min(200, math.ceil(REPLAY_S / max(one, 1e-7))))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for i in range(3):  # CUDA graph capture wants a warm-up on a side stream
                call(i)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(reps):
                call(i)
        graph.replay()
        times = []
        for _ in range(self.replays):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / reps)
        del graph
        return times

    def linear(self, tokens: int, fan_in: int, fan_out: int) -> list[float]:
        weight_bytes = 2 * fan_in * fan_out
        copies = max(1, min(64, math.ceil(L2_MULTIPLE * self.l2_bytes / weight_bytes)))
        weights = [self.tensor(fan_out, fan_in) for _ in range(copies)]
        x = self.tensor(tokens, fan_in)
        out = self.torch.empty(tokens, fan_out, device=self.dev, dtype=self.torch.bfloat16)
        return self.time_calls(lambda i: self.torch.mm(x, weights[i % copies].t(), out=out))

    def elementwise(self, op: str, tokens: int, layer: Layer) -> list[float]:
        d = layer.head_dim
        if op in ("input_layernorm", "post_attention_layernorm"):
            x, w = self.tensor(tokens, layer.hidden), self.tensor(layer.hidden)
            return self.time_calls(lambda i: self.norm(x, w))
        if op == "attn_rope":
            q, k = self.tensor(tokens, layer.q_local, d), self.tensor(tokens, layer.kv_local, d)
            cos, sin = self.tensor(tokens, 1, d), self.tensor(tokens, 1, d)
            return self.time_calls(lambda i: self.rope(q, k, cos, sin))
        if op == "mlp_act":
            x = self.tensor(tokens, 2 * layer.ffn_local)
            return self.time_calls(lambda i: self.act(x))
        x, y = self.tensor(tokens, layer.hidden), self.tensor(tokens, layer.hidden)
        return self.time_calls(lambda i: self.add(x, y))

    def row(self, layer: Layer, tokens: int) -> dict[str, Any]:
        shapes = layer.linear_shapes()
        row: dict[str, Any] = {}
        for op in OPS:
            if op in shapes:
                times = self.linear(tokens, *shapes[op])
            else:
                times = self.elementwise(op, tokens, layer)
            for stat, value in zip(STATS, summary(times), strict=True):
                row[f"time_stats.{op}.{stat}"] = round(value, 6)
        self.torch.cuda.empty_cache()
        return {**row, **layer.columns(), "num_tokens": tokens, "num_tensor_parallel_workers": layer.tp}


def summary(times: list[float]) -> tuple[float, float, float, float, float]:
    return (min(times), max(times), statistics.fmean(times), statistics.median(times),
            statistics.stdev(times) if len(times) > 1 else 0.0)


def host_copies(torch: Any, gib: float = 1.0, reps: int = 5) -> None:
    n = int(gib * (1 << 30))
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(n, dtype=torch.uint8, device="cuda")
    for name, dst, src in (("host to device", dev, host), ("device to host", host, dev)):
        times = []
        for _ in range(reps + 1):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src, non_blocking=True)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        best, med = min(times[1:]), statistics.median(times[1:])
        print(f"pinned {name}, {gib:g} GiB: median {n / med / 1e9:.1f} GB/s, best {n / best / 1e9:.1f} GB/s",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="catalog model (repeatable)")
    ap.add_argument("--tp", default="1,2,4,8", help="tensor-parallel degrees (comma-separated)")
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="step sizes (comma-separated)")
    ap.add_argument("--out", type=Path, action="append", required=True, help="CSV per --model")
    ap.add_argument("--replays", type=int, default=7)
    ap.add_argument("--eager", action="store_true", help="unfused PyTorch elementwise ops")
    ap.add_argument("--host-copy", action="store_true", help="also time pinned PCIe copies")
    args = ap.parse_args()
    tps, tokens = checked(ap, args)
    try:
        import torch
    except ImportError:
        ap.error("PyTorch is not installed: run this on the GPU's machine, with PyTorch for CUDA")
    if not torch.cuda.is_available():
        ap.error("no CUDA GPU visible to PyTorch: run this on the GPU you want to calibrate")
    prof = Profiler(torch, args.replays, args.eager)
    print(f"{prof.name}: torch {torch.__version__}, L2 {prof.l2_bytes >> 20} MiB", flush=True)
    if args.host_copy:
        host_copies(torch)
    for name, out in zip(args.model, args.out, strict=True):
        profile_model(prof, name, tps, tokens, out)


def checked(ap: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[int], list[int]]:
    """The TP degrees and step sizes asked for; a one-line error (exit 2) on bad input."""
    if len(args.out) != len(args.model):
        ap.error("give one --out per --model")
    known = catalog.models()
    for name in args.model:
        if name not in known:
            ap.error(f"--model {name!r}: not in the catalog; use one of {', '.join(known)}")
    tps, tokens = positive_ints(ap, "--tp", args.tp), positive_ints(ap, "--tokens", args.tokens)
    for name in args.model:
        m = known[name]
        for tp in tps:
            if m["num_attention_heads"] % tp or m["intermediate_size"] % tp:
                ap.error(f"--tp {tp}: does not divide {name}'s {m['num_attention_heads']} heads and"
                         f" {m['intermediate_size']} MLP width; use a power of two up to 8")
    return tps, tokens


def positive_ints(ap: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        ap.error(f"{flag} {text!r}: give positive whole numbers separated by commas, e.g. 1,2,4,8")
    return values


def profile_model(prof: Profiler, name: str, tps: list[int], tokens: list[int], out: Path) -> None:
    model = catalog.models()[name]
    t0 = time.perf_counter()
    rows = [prof.row(Layer(model, tp), n) for tp in tps for n in tokens]
    extra = {"gpu_name": prof.name, "torch_version": prof.torch.__version__, "model": name}
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], *extra])
        writer.writeheader()
        writer.writerows({**r, **extra} for r in rows)
    print(f"{name}: {len(rows)} shapes in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    for r in rows:
        if r["num_tokens"] in (1, 64, 512, 4096) and r["num_tensor_parallel_workers"] in (1, 8):
            lin = sum(r[f"time_stats.{op}.median"] for op in OPS if op.endswith("proj"))
            print(f"  tp{r['num_tensor_parallel_workers']} n{r['num_tokens']}: linear {lin:.4f} ms,"
                  f" layer {sum(r[f'time_stats.{op}.median'] for op in OPS):.4f} ms", flush=True)


if __name__ == "__main__":
    main()
