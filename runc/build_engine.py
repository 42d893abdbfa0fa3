"""cffi (API mode) builder of `tinymath.runc._engine`: runc.c, batch.c and train.c in one Python extension.

setup.py names it (`cffi_modules=["runc/build_engine.py:ffibuilder"]`), so
`pip install .` / `pip install -e .` compile the engine; an editable install
compiles it into runc/ itself (runc/_engine.abi3.so on Linux).

In a source checkout that build is the only one, and it must not be older than
the C it was compiled from: `python runc/build_engine.py` (`make venv` and the
tests' conftest.py run it) rebuilds it when it is, the way `pip install -e .`
does (setuptools' build_ext --inplace, so under the same name), and does
nothing otherwise.

The declarations are the region of runc.h between the RUNC-CDEF markers, so
the header stays the single source of truth for the C API. In API mode cffi
releases the GIL around every call into C.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
# the engine's C (pyproject.toml's package-data ships the same files): three files compiled, and
# what they include
COMPILED = ("runc.c", "batch.c", "train.c")
SOURCES = (*COMPILED, "runc.h", "runc_impl.h", "batch_kernels.c.inc", "train.h", "train_kernels.c.inc")


def _rel(path: str) -> str:
    """setuptools wants source paths relative to the project root (the cwd of a build)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def cdef_source() -> str:
    """runc.h's RUNC-CDEF region (inference), then train.h's RUNC-TRAIN-CDEF region (training)."""
    parts = []
    for header, marker in (("runc.h", "RUNC-CDEF"), ("train.h", "RUNC-TRAIN-CDEF")):
        with open(os.path.join(HERE, header), encoding="utf-8") as f:
            text = f.read()
        m = re.search(rf"/\* {marker}-BEGIN \*/(.*?)/\* {marker}-END \*/", text, re.S)
        if m is None:
            raise RuntimeError(f"{header} lacks the {marker}-BEGIN / {marker}-END markers")
        parts.append(m.group(1))
    return "\n".join(parts)


def make_builder() -> FFI:
    ffi = FFI()
    ffi.cdef(cdef_source())
    threads = ["-pthread"] if os.name == "posix" else []
    ffi.set_source(
        "tinymath.runc._engine",
        '#include "runc.h"\n#include "train.h"\n',
        # runc.c: one sequence at a time; batch.c: the batch engine (its kernels,
        # batch_kernels.c.inc, are compiled portably and for AVX2 / AVX-512VL, picked
        # at run time by the CPU's features: no -march flag is needed here); train.c:
        # the training engine (its kernels, train_kernels.c.inc, picked the same way)
        sources=[_rel(os.path.join(HERE, name)) for name in COMPILED],
        include_dirs=[_rel(HERE)],
        depends=[_rel(os.path.join(HERE, name)) for name in SOURCES if name not in COMPILED],
        extra_compile_args=["-O3", "-std=c99", *threads],
        extra_link_args=threads,
        libraries=["m"] if os.name == "posix" else [],
    )
    return ffi


ffibuilder = make_builder()


def builds(folder: str | os.PathLike = HERE) -> list[Path]:
    """The compiled engines in folder (a checkout's runc/)."""
    return sorted(p for p in Path(folder).glob("_engine*") if p.suffix in (".so", ".pyd"))


def stale(folder: str | os.PathLike = HERE) -> str | None:
    """Why the build in folder cannot be used as it is, or None: it must be the only one (with two,
    Python imports whichever suffix it tries first) and newer than every source and this file."""
    found = builds(folder)
    if len(found) != 1:
        return f"{len(found)} builds of the engine in {folder}" if found else f"no build of the engine in {folder}"
    inputs = [Path(folder, name) for name in SOURCES] + [Path(folder, "build_engine.py")]
    newer = [p.name for p in inputs if p.stat().st_mtime > found[0].stat().st_mtime]
    return f"{', '.join(newer)} newer than {found[0].name}" if newer else None


def install(built: Path, folder: str | os.PathLike = HERE) -> Path:
    """Move a freshly built engine into folder by one rename, then remove any other build there: a
    process importing the engine meanwhile (a sweep starting beside `make test`) finds the old build
    or the new one, never none and never half a file. built must be on folder's file system."""
    dest = Path(folder) / built.name
    os.replace(built, dest)
    for old in builds(folder):
        if old != dest:
            old.unlink()
    return dest


def refresh(force: bool = False) -> str | None:
    """In a source checkout, rebuild the engine in runc/ when it is stale (or force): setuptools'
    build_ext from the project root (as `pip install -e .` builds it) into a folder under build/, then
    install() into runc/. Returns why it rebuilt, or None (fresh, or not a source checkout: an
    installed package)."""
    root = Path(HERE).parent
    if not (root / "setup.py").is_file():
        return None
    why = "asked to" if force else stale(HERE)
    if why is None:
        return None
    out = root / "build" / f"engine-{os.getpid()}"
    try:
        r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out)], cwd=root,
                           capture_output=True, text=True)
        made = [p for p in out.rglob("_engine*") if p.suffix in (".so", ".pyd")]
        if r.returncode != 0 or len(made) != 1:
            raise RuntimeError(f"building the C engine failed ({why}):\n{(r.stdout + r.stderr)[-4000:]}")
        install(made[0], HERE)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    still = stale(HERE)
    if still:
        raise RuntimeError(f"the C engine built ({why}) but is still stale: {still}")
    return why


if __name__ == "__main__":
    reason = refresh(force="--force" in sys.argv[1:])
    if reason:
        print(f"rebuilt {builds(HERE)[0]} ({reason})")
