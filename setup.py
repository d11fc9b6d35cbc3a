"""Builds the optional compiled block pool (simcore/_native.pyx); everything else is in pyproject.toml.

Without a C compiler the build goes on without it and simcore falls back to the pure-Python
BlockPool (same results, slower). Set KVSWEEP_REQUIRE_NATIVE=1 to make a failed build an error
(CI does, so the compiled path is what the tests run).
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a missing compiler shows up as various distutils errors
            self._give_up(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._give_up(exc)

    @staticmethod
    def _give_up(exc: Exception) -> None:
        if os.environ.get("KVSWEEP_REQUIRE_NATIVE") == "1":
            raise exc
        print(f"WARNING: kvsweep's compiled block pool was not built ({exc}); using pure Python")


def extensions() -> list[Extension]:
    from Cython.Build import cythonize

    # no fused multiply-add: the compiled float arithmetic must round as Python's does
    flags = ["-O3", "-ffp-contract=off"]
    ext = Extension("simcore._native", ["simcore/_native.pyx"], extra_compile_args=flags)
    return cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
