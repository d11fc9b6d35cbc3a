"""scripts/profile_ops.py: the operator shapes it times, and the H200 files it wrote (configs/measured).

The timing itself needs PyTorch and a CUDA GPU (not here); what is checked is what it times and
that its output is the operators format that calibrate reads.
"""

import sys
from pathlib import Path

import pytest

from simcore import catalog
from sweep import measured

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import profile_ops  # noqa: E402

MEASURED = ROOT / "configs" / "measured"


def test_llama31_8b_shapes_by_hand():
    model = catalog.models()["Llama-3.1-8B"]  # hidden 4096, 32 heads, 8 KV heads of 128, ffn 14336
    assert profile_ops.Layer(model, 1).linear_shapes() == {
        "attn_pre_proj": (4096, (32 + 2 * 8) * 128),
        "attn_post_proj": (4096, 4096),
        "mlp_up_proj": (4096, 2 * 14336),
        "mlp_down_proj": (14336, 4096),
    }
    assert profile_ops.Layer(model, 8).linear_shapes() == {
        "attn_pre_proj": (4096, (4 + 2 * 1) * 128),
        "attn_post_proj": (512, 4096),
        "mlp_up_proj": (4096, 2 * 1792),
        "mlp_down_proj": (1792, 4096),
    }


def test_kv_heads_are_replicated_beyond_their_count():
    """At TP 16 a model with 8 KV heads keeps one per GPU (vLLM replicates them), not zero."""
    layer = profile_ops.Layer(catalog.models()["Llama-3.1-70B"], 16)
    assert layer.kv_local == 1
    assert layer.linear_shapes()["attn_pre_proj"] == (8192, (64 // 16 + 2) * 128)


def test_layer_weights_match_the_catalog_parameter_count():
    """The four linear operators at TP 1 hold one layer's weights: times the layers, plus the
    embedding and LM head, they come to the catalog's parameter count (within 1%)."""
    for name in ("Llama-3.1-8B", "Llama-3.1-70B"):
        model = catalog.models()[name]
        layer = sum(i * o for i, o in profile_ops.Layer(model, 1).linear_shapes().values())
        total = model["num_layers"] * layer + 2 * model["vocab_size"] * model["hidden_size"]
        assert total == pytest.approx(float(model["num_params"]), rel=0.01)


@pytest.mark.parametrize("name,model", [("h200_llama31_8b_ops.csv", "Llama-3.1-8B"),
                                        ("h200_llama31_70b_ops.csv", "Llama-3.1-70B")])
def test_measured_h200_files_are_the_operators_format(name, model):
    frame = measured.load_operator_profile(MEASURED / name)
    assert len(frame) == len(profile_ops.TOKENS) * 4
    assert sorted(frame["num_tensor_parallel_workers"].unique()) == [1, 2, 4, 8]
    assert sorted(frame["num_tokens"].unique()) == sorted(profile_ops.TOKENS)
    cols = profile_ops.Layer(catalog.models()[model], 1).columns()
    for col in ("n_head", "n_kv_head", "n_embd", "n_expanded_embd"):
        assert set(frame[col]) == {cols[col]}
    assert (frame["elementwise_ms"] > 0).all()
    # physics: no row beats the H200's peaks (the weights streamed from HBM at 4.8 TB/s, the
    # matmuls at 989 TFLOP/s dense bf16); a weight left in L2 would beat the first
    gpu = catalog.gpus()["H200"]
    bandwidth, flops = float(gpu["hbm_bandwidth"]), float(gpu["flops"])
    for r in frame.itertuples():
        layer = profile_ops.Layer(catalog.models()[model], int(r.num_tensor_parallel_workers))
        weights = sum(i * o for i, o in layer.linear_shapes().values())
        floor_s = max(2 * weights / bandwidth, 2 * r.num_tokens * weights / flops)
        assert r.linear_ms > 1e3 * floor_s, (r.num_tensor_parallel_workers, r.num_tokens)


@pytest.mark.parametrize("argv,says", [
    (["--model", "Llama-9"], "--model 'Llama-9': not in the catalog"),
    (["--model", "Llama-3.1-8B", "--tp", "3"], "--tp 3: does not divide Llama-3.1-8B's 32 heads"),
    (["--model", "Llama-3.1-8B", "--tokens", "1,x"], "--tokens '1,x': give positive whole numbers"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, argv, says):
    import subprocess

    out = tmp_path / "ops.csv"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_ops.py"), *argv, "--out", str(out)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert says in res.stderr.strip().splitlines()[-1]
    assert not out.exists()
