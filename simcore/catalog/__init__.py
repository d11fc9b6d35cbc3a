"""Named models, GPUs and calibrated cost profiles shipped as package data (YAML), with sources."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

#: the profile of a GPU that has no calibrated one (and of GPUs given inline)
GENERIC_PROFILE = "generic"


@cache
def _load(kind: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(f"{kind}.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def models() -> dict[str, dict[str, Any]]:
    """Model name -> architecture fields (see ``models.yaml``)."""
    return _load("models")


def gpus() -> dict[str, dict[str, Any]]:
    """GPU name -> hardware fields (see ``gpus.yaml``)."""
    return _load("gpus")


def profiles() -> dict[str, dict[str, Any]]:
    """Profile name -> {gpu, source, fit, params} (see ``profiles.yaml``)."""
    return _load("profiles")["profiles"]  # type: ignore[no-any-return]


def default_profile(gpu_name: str | None) -> str:
    """The profile a GPU's runs use unless ``engine.cost.profile`` names another."""
    defaults: dict[str, str] = _load("profiles")["defaults"]
    return defaults.get(gpu_name or "", GENERIC_PROFILE)


def load_profile(name: str) -> dict[str, Any]:
    """A profile's parameter values, by catalog name or from a YAML file that ``kvsweep
    calibrate`` wrote (a path ending in .yaml or .yml). Raises ValueError naming the fix."""
    table = profiles()
    if name in table:
        return dict(table[name]["params"])
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError as exc:
            raise ValueError(
                f"cannot read cost profile {name!r}: {exc.strerror} (check the path)"
            ) from None
        return dict(_profile_file(path, stamp))
    known = ", ".join(sorted(table))
    raise ValueError(
        f"unknown cost profile {name!r}: use one of {known}, or a YAML file from kvsweep calibrate"
    )


@cache
def _profile_file(path: Path, stamp: int) -> dict[str, Any]:
    """A profile file's params, read once per version of the file (``stamp``: its mtime)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(
            f"cannot read cost profile {str(path)!r}: {exc.strerror} (check the path)"
        ) from None
    except yaml.YAMLError as exc:
        raise ValueError(
            f"cost profile {str(path)!r} is not valid YAML ({exc.__class__.__name__})"
        ) from None
    params = doc.get("params") if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise ValueError(
            f"cost profile {str(path)!r} has no 'params' mapping: write it with kvsweep calibrate"
        )
    return params
