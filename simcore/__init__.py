"""simcore: one simulation of a vLLM-style serving engine with block-level prefix caching.

Pure and deterministic: ``simulate(cfg)`` depends on nothing but ``cfg``. No Ray, no file output.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kvsweep")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
