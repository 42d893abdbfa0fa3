"""cffi (API mode) builder of `tinymath.runc._engine`: runc.c compiled into a Python extension.

setup.py names it (`cffi_modules=["runc/build_engine.py:ffibuilder"]`), so
`pip install .` / `pip install -e .` compile the engine. `python runc/build_engine.py`
builds it in place (runc/_engine*.so) for working from the source tree.

The declarations are the region of runc.h between the RUNC-CDEF markers, so
the header stays the single source of truth for the C API. In API mode cffi
releases the GIL around every call into C.
"""

from __future__ import annotations

import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _rel(path: str) -> str:
    """setuptools wants source paths relative to the project root (the cwd of a build)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def cdef_source() -> str:
    with open(os.path.join(HERE, "runc.h"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"/\* RUNC-CDEF-BEGIN \*/(.*?)/\* RUNC-CDEF-END \*/", text, re.S)
    if m is None:
        raise RuntimeError("runc.h lacks the RUNC-CDEF-BEGIN / RUNC-CDEF-END markers")
    return m.group(1)


def make_builder(absolute: bool = False) -> FFI:
    """The builder; absolute paths when compiling outside the project root."""
    path = (lambda p: p) if absolute else _rel
    ffi = FFI()
    ffi.cdef(cdef_source())
    threads = ["-pthread"] if os.name == "posix" else []
    ffi.set_source(
        "tinymath.runc._engine",
        '#include "runc.h"\n',
        # runc.c: one sequence at a time; batch.c: the batch engine (its kernels,
        # batch_kernels.c.inc, are compiled portably and for AVX2 / AVX-512VL, picked
        # at run time by the CPU's features: no -march flag is needed here)
        sources=[path(os.path.join(HERE, "runc.c")), path(os.path.join(HERE, "batch.c"))],
        include_dirs=[path(HERE)],
        depends=[path(os.path.join(HERE, name)) for name in ("runc.h", "runc_impl.h", "batch_kernels.c.inc")],
        extra_compile_args=["-O3", "-std=c99", *threads],
        extra_link_args=threads,
        libraries=["m"] if os.name == "posix" else [],
    )
    return ffi


ffibuilder = make_builder()

def build_inplace(verbose: bool = False) -> str:
    """Compile the engine into runc/ (replacing any older build there); return its path.

    That is where `tinymath.runc` looks for it in an editable install or a
    source checkout. Other `_engine*` builds in runc/ are removed first, so that
    Python cannot pick a stale one by its suffix.
    """
    import glob
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        built = make_builder(absolute=True).compile(tmpdir=tmp, verbose=verbose)
        for old in glob.glob(os.path.join(HERE, "_engine*.so")) + glob.glob(os.path.join(HERE, "_engine*.pyd")):
            os.remove(old)
        dest = os.path.join(HERE, os.path.basename(built))
        shutil.copy(built, dest)
    return dest


if __name__ == "__main__":
    print(f"built {build_inplace(verbose=True)}")
