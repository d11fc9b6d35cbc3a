"""A sweep on a real two-node Ray cluster (``ray.cluster_utils``) joined with ``--address``.

The nodes' workers cannot import the installed kvsweep: their PYTHONPATH puts a fake ``simcore``
and ``sweep`` first, which raise on import. So the sweep only succeeds if the driver ships its
code as a runtime env (``py_modules``), which Ray puts ahead of PYTHONPATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from sweep.spec import SweepSpec
from tests.simhelpers import tiny_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = tiny_sweep("on-cluster", infeasible=False)


@pytest.fixture(scope="module")
def shadow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shadow")
    for package in ("simcore", "sweep"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text(
            f'raise ImportError("{package} is not installed on this node (test shadow)")\n'
        )
    return root


@pytest.fixture(scope="module")
def ray_cluster_env(shadow: Path) -> Iterator[dict[str, str]]:
    yield {"PYTHONPATH": str(shadow)}


def kvsweep(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, in its own process (a driver apart from the test's own Ray).

    Run from ``cwd`` outside the checkout: Ray adds the driver's working directory to the
    workers' sys.path, which on one machine would hand them the code without any shipping.
    """
    environ = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**environ, **(env or {})}, cwd=cwd)


def test_sweep_runs_on_a_two_node_cluster_with_shipped_code(ray_cluster: Any, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "ds"
    result = kvsweep(tmp_path, "run", str(spec), "--out", str(out), "--address", ray_cluster.address,
                     "--runs-per-task", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"cluster at {ray_cluster.address}, 2 CPUs, code shipped as runtime env" in result.stderr
    table = ds.dataset(out / "runs", format="parquet").to_table()
    assert sorted(table.column("run_id").to_pylist()) == sorted(SweepSpec.load(spec).expand().run_ids)
    assert set(table.column("status").to_pylist()) == {"ok"}


def test_launcher_yaml_is_valid_for_this_ray() -> None:
    import json

    import jsonschema
    import ray.autoscaler
    import yaml

    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "scripts" / "cluster" / "onprem.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert len(config["provider"]["worker_ips"]) == config["max_workers"]
    mounted = Path(root / config["file_mounts"]["~/kvsweep/cluster"]) / "requirements-node.txt"
    assert f"ray[default]=={ray.__version__}" in mounted.read_text()


def test_ray_address_env_joins_and_unshipped_code_is_a_clear_error(ray_cluster: Any, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    result = kvsweep(tmp_path, "run", str(spec), "--out", str(tmp_path / "ds"), "--ship-code", "never",
                     "--no-progress", env={"RAY_ADDRESS": ray_cluster.address})
    assert result.returncode == 2, result.stderr
    assert f"cluster at {ray_cluster.address}" in result.stderr
    assert "the Ray workers cannot import kvsweep" in result.stderr
    assert "install its dependencies on the nodes, or use --ship-code always" in result.stderr
