"""Build the compiled core: every ``ext/<name>.pyx`` becomes the extension ``fastshard.<name>``.

Metadata lives in pyproject.toml; this file only describes the extensions.

Set ``FASTSHARD_ONLY=_ring,_hashing`` to build a subset (handy while working on one kernel).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
EXT_DIR = HERE / "ext"


class BuildExtWithClearErrors(build_ext):
    """Turn a missing or broken C compiler into one readable message instead of a traceback."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated error types here
            if _looks_like_missing_compiler(exc):
                raise SystemExit(
                    "fastshard: building the compiled core needs a C compiler "
                    "(gcc or clang on Linux/macOS, MSVC Build Tools on Windows) and the Python "
                    "headers (Debian: apt-get install build-essential python3-dev). "
                    f"The build failed with: {exc}"
                ) from exc
            raise


def _looks_like_missing_compiler(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(
        needle in text
        for needle in ("compileerror", "command 'gcc' failed", "unable to find vcvarsall",
                       "no such file or directory: 'cc'", "no such file or directory: 'gcc'",
                       "microsoft visual c++", "command 'cc' failed", "python.h")
    )


def _stage_pxd_package() -> Path:
    """Expose ``ext/*.pxd`` as the package ``fastshard`` on Cython's include path.

    Cython finds a module's own ``.pxd`` (and resolves ``cimport fastshard._x``) by the
    module's dotted name, i.e. ``fastshard/_x.pxd``. The kernels live flat in ``ext/``, so
    we mirror their ``.pxd`` files into ``build/cython-include/fastshard/``.
    """
    root = HERE / "build" / "cython-include"
    pkg = root / "fastshard"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.pxd").touch()
    for pxd in EXT_DIR.glob("_*.pxd"):
        target = pkg / pxd.name
        text = pxd.read_text(encoding="utf-8")
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    return root


def _extensions():
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:  # only when building outside an isolated build env
        raise SystemExit(
            "fastshard: building needs Cython>=3 and NumPy at build time "
            f"(pip install cython numpy): {exc}"
        ) from exc
    from setuptools import Extension

    include_root = _stage_pxd_package()
    only = {n.strip() for n in os.environ.get("FASTSHARD_ONLY", "").split(",") if n.strip()}
    if sys.platform == "win32":
        cflags = ["/O2"]
    else:
        cflags = ["-O3", "-fno-strict-aliasing", "-Wno-unused-function"]
    exts = []
    for pyx in sorted(EXT_DIR.glob("*.pyx")):
        name = pyx.stem
        if only and name not in only:
            continue
        exts.append(
            Extension(
                f"fastshard.{name}",
                [str(pyx.relative_to(HERE))],
                include_dirs=[str(EXT_DIR), numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=cflags,
            )
        )
    return cythonize(
        exts,
        include_path=[str(include_root), str(EXT_DIR)],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
        quiet=True,
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExtWithClearErrors})
