"""Calibrated cost profiles: how a run's cost parameters are resolved, and what the catalog holds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from simcore import catalog
from simcore.config import COST_FIELDS, SimConfig
from simcore.errors import format_validation_error
from sweep.spec import canonical_json, run_id_of


def cfg(gpu: object = "H100-SXM-80GB", **engine: object) -> SimConfig:
    return SimConfig.model_validate({"model": "Llama-3.1-8B", "gpu": gpu, "engine": engine})


def test_every_catalog_gpu_has_a_calibrated_default_profile_with_its_provenance() -> None:
    table = catalog.profiles()
    for gpu in catalog.gpus():
        name = catalog.default_profile(gpu)
        assert name != catalog.GENERIC_PROFILE, gpu
        entry = table[name]
        assert set(entry["params"]) == set(COST_FIELDS), name
        assert entry["source"] and entry["fit_error"], name


def test_a_run_takes_its_gpus_profile_and_fields_given_win() -> None:
    base = cfg()
    profile = catalog.default_profile("H100-SXM-80GB")
    assert base.engine.cost.profile == profile
    assert base.engine.cost.model_dump(exclude={"profile"}) == catalog.profiles()[profile]["params"]
    over = cfg(cost={"step_overhead_s": 0.25})
    assert over.engine.cost.step_overhead_s == 0.25
    assert over.engine.cost.bandwidth_efficiency == base.engine.cost.bandwidth_efficiency
    other = cfg(cost="generic")  # a profile by name, shorthand for {profile: generic}
    assert other.engine.cost.profile == "generic"
    assert other.engine.cost.step_overhead_s != base.engine.cost.step_overhead_s


def test_an_inline_gpu_gets_the_generic_profile() -> None:
    gpu = {"flops": 5e14, "hbm_bandwidth": 2e12, "memory_gib": 48}
    assert cfg(gpu=gpu).engine.cost.profile == catalog.GENERIC_PROFILE


def test_unknown_profile_is_one_line_naming_the_field_and_the_known_ones() -> None:
    with pytest.raises(ValidationError) as err:
        cfg(cost={"profile": "H100-fast"})
    text = format_validation_error(err.value)
    assert text.startswith("invalid config: engine.cost = {'profile': 'H100-fast'}: unknown cost profile")
    assert "generic" in text and "\n" not in text


def test_resolved_config_round_trips_and_its_id_covers_the_cost_model() -> None:
    base = cfg()
    again = SimConfig.model_validate_json(base.model_dump_json())
    assert again == base and run_id_of(canonical_json(again)) == run_id_of(canonical_json(base))
    changed = cfg(cost={"frontend_latency_s": base.engine.cost.frontend_latency_s + 0.001})
    assert run_id_of(canonical_json(changed)) != run_id_of(canonical_json(base))


def test_h200_runs_take_the_h200_profile_built_by_its_rule() -> None:
    """h200-vllm is h100-vllm with the compute curve of h200-ops (the H200's own kernels,
    measured), everything else kept (scripts/fit_profiles.py says why)."""
    table = catalog.profiles()
    run = cfg(gpu="H200")
    assert run.engine.cost.profile == "h200-vllm" == catalog.default_profile("H200")
    rule = table["h200-vllm"]["params"]
    assert run.engine.cost.model_dump(exclude={"profile"}) == rule
    vllm, ops = table["h100-vllm"]["params"], table["h200-ops"]["params"]
    from_ops = {"compute_efficiency", "matmul_half_tokens", "elementwise_efficiency"}
    assert {k for k in COST_FIELDS if rule[k] != vllm[k]} == from_ops
    assert {k: rule[k] for k in from_ops} == {k: ops[k] for k in from_ops}
    assert table["h200-ops"]["gpu"] == "H200" and "h200_llama31_8b_ops.csv" in table["h200-ops"]["source"]
    assert run.gpu.host_bandwidth == 55e9  # measured (configs/measured/README.md)
    assert cfg().engine.cost.profile == "h100-vllm" and cfg().gpu.host_bandwidth == 50e9
