"""Shared test set-up: never test a stale build of the C engine.

In a source checkout (editable install) the engine is compiled into runc/ by
`pip install -e .`; `make test` redoes that when the engine's sources change,
but a developer running pytest directly after editing runc.c would otherwise
test yesterday's C. So the engine is rebuilt here when a source is newer than it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _refresh_engine() -> None:
    import tinymath.runc

    here = Path(tinymath.runc.__file__).resolve().parent
    sources = [here / n for n in ("runc.c", "runc.h", "runc_impl.h", "batch.c", "batch_kernels.c.inc", "build_engine.py")]
    if not all(p.exists() for p in sources) or (here / "_engine.py").exists():
        return
    engines = list(here.glob("_engine*.so")) + list(here.glob("_engine*.pyd"))
    # exactly one build, newer than its sources (with two, Python might import the older one)
    if len(engines) == 1 and engines[0].stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return
    subprocess.run([sys.executable, str(here / "build_engine.py")], check=True, capture_output=True)


_refresh_engine()
