"""cffi (API mode) builder of `tinymath.runc._train`: the C training engine (train.c) as a Python extension.

setup.py names it beside build_engine.py, so `pip install .` / `pip install -e .`
compile it. `python runc/build_train.py` builds it in place (runc/_train*.so), and
train/engine_c.py does the same when it finds no build, or one older than the sources.

The declarations are train.h's RUNC-TRAIN-CDEF region, after runc.h's status codes
and error struct (the engine reports errors the way the rest of runc does). The
extension holds train.c only: training needs none of the inference engine.
"""

from __future__ import annotations

import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("train.c",)
DEPENDS = ("train.h", "train_kern.h", "runc.h", "runc_impl.h")


def _rel(path: str) -> str:
    """setuptools wants source paths relative to the project root (the cwd of a build)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def cdef_source() -> str:
    with open(os.path.join(HERE, "runc.h"), encoding="utf-8") as f:
        runc_h = f.read()
    with open(os.path.join(HERE, "train.h"), encoding="utf-8") as f:
        train_h = f.read()
    parts = []
    for pattern in (r"typedef enum runc_status \{.*?\} runc_status;", r"typedef struct runc_error \{.*?\} runc_error;"):
        m = re.search(pattern, runc_h, re.S)
        if m is None:
            raise RuntimeError(f"runc.h lacks {pattern.split(chr(92))[0]}")
        parts.append(m.group(0))
    m = re.search(r"/\* RUNC-TRAIN-CDEF-BEGIN \*/(.*?)/\* RUNC-TRAIN-CDEF-END \*/", train_h, re.S)
    if m is None:
        raise RuntimeError("train.h lacks the RUNC-TRAIN-CDEF-BEGIN / RUNC-TRAIN-CDEF-END markers")
    parts.append(m.group(1))
    return "\n".join(parts)


def make_builder(absolute: bool = False) -> FFI:
    """The builder; absolute paths when compiling outside the project root."""
    path = (lambda p: p) if absolute else _rel
    ffi = FFI()
    ffi.cdef(cdef_source())
    threads = ["-pthread"] if os.name == "posix" else []
    ffi.set_source(
        "tinymath.runc._train",
        '#include "train.h"\n',
        sources=[path(os.path.join(HERE, name)) for name in SOURCES],
        include_dirs=[path(HERE)],
        depends=[path(os.path.join(HERE, name)) for name in DEPENDS],
        extra_compile_args=["-O3", "-std=c99", *threads],
        extra_link_args=threads,
        libraries=["m"] if os.name == "posix" else [],
    )
    return ffi


ffibuilder = make_builder()


def build_inplace(verbose: bool = False) -> str:
    """Compile the extension into runc/ (replacing any older build there); return its path."""
    import glob
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        built = make_builder(absolute=True).compile(tmpdir=tmp, verbose=verbose)
        for old in glob.glob(os.path.join(HERE, "_train*.so")) + glob.glob(os.path.join(HERE, "_train*.pyd")):
            os.remove(old)
        dest = os.path.join(HERE, os.path.basename(built))
        shutil.copy(built, dest)
    return dest


if __name__ == "__main__":
    print(f"built {build_inplace(verbose=True)}")
