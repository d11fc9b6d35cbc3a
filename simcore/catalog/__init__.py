"""Named models and GPUs shipped as package data (YAML), with their published sources."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def _load(kind: str) -> dict[str, dict[str, Any]]:
    text = resources.files(__name__).joinpath(f"{kind}.yaml").read_text(encoding="utf-8")
    data: dict[str, dict[str, Any]] = yaml.safe_load(text)
    return data


def models() -> dict[str, dict[str, Any]]:
    """Model name -> architecture fields (see ``models.yaml``)."""
    return _load("models")


def gpus() -> dict[str, dict[str, Any]]:
    """GPU name -> hardware fields (see ``gpus.yaml``)."""
    return _load("gpus")
