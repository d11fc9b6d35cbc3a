"""Shared fixtures: a real Ray, started once (it takes ~10 s), and a real two-node Ray cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """An embedded single-node Ray with 2 CPUs for the whole session; yields the ``ray`` module.

    Code that calls ``ray.init`` only when ``not ray.is_initialized()`` uses this one.
    """
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster_env() -> dict[str, str]:
    """Extra environment variables for the cluster's node processes (and so its workers).

    Override this fixture in a test module, e.g. to hide an installed package from the workers.
    """
    return {}


@pytest.fixture(scope="module")
def ray_cluster(ray_cluster_env: dict[str, str]) -> Iterator[Any]:
    """A Ray cluster of two nodes with one CPU each, on this machine (``ray.cluster_utils``).

    Not connected: drivers join it with ``cluster.address`` (in a subprocess, or with
    ``ray.init(address=...)`` when ``ray_local`` is not in use).
    """
    from ray.cluster_utils import Cluster

    saved = {key: os.environ.get(key) for key in ray_cluster_env}
    os.environ.update(ray_cluster_env)  # node processes inherit it when they are started
    try:
        cluster = Cluster(
            initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield cluster
    cluster.shutdown()
