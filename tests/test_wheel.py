"""A built wheel really contains the compiled engine (setup.py's cffi_modules hook ran), and that engine
is the whole library: the single-sequence path and the batch engine, importable from the wheel alone.

    python -m pip wheel . --no-deps --no-build-isolation -w DIR

in a copy of the files git would commit, as from a fresh clone (about 10-30 s: it compiles runc.c and batch.c).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _clean_copy(dest: Path) -> Path:
    """The files git would commit (tracked, and new ones it does not ignore), as a fresh clone has them: a
    build in the working tree could pack what earlier builds left in build/ and *.egg-info/."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                       capture_output=True, check=True)
    for name in filter(None, r.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("cffi")
    pytest.importorskip("setuptools")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a checkout (the wheel is built from the files git tracks)")
    src = _clean_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w",
                        str(out), "-q"], cwd=src, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    wheels = list(out.glob("tinymath-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_the_compiled_engine(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    engines = [n for n in names if n.startswith("tinymath/runc/_engine") and n.endswith((".so", ".pyd"))]
    assert len(engines) == 1, [n for n in names if "runc/" in n]
    # a platform wheel, not a pure-Python one
    assert not wheel.name.endswith("-none-any.whl"), wheel.name


def test_wheel_carries_only_the_engines_c_sources(wheel):
    """The C the engine is built from (runc/build_engine.py), not the CLI, the C tests or the fuzzers."""
    names = zipfile.ZipFile(wheel).namelist()
    runc = [n for n in names if n.startswith("tinymath/runc/")]
    c_files = {n.rpartition("/")[2] for n in runc if not n.endswith((".py", ".so", ".pyd"))}
    assert c_files == {"runc.h", "runc_impl.h", "runc.c", "batch.c", "batch_kernels.c.inc", "train.h", "train.c",
                       "train_kernels.c.inc"}, sorted(c_files)
    assert not [n for n in runc if n.count("/") > 2], runc  # no subfolder (tests/, fuzz/)


def test_wheel_engine_imports_and_has_the_batch_engine(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from tinymath.runc import _engine\n"
        "assert _engine.__file__.startswith(sys.argv[1]), _engine.__file__\n"
        "lib = _engine.lib\n"
        "for name in ('runc_model_open', 'runc_solve', 'runc_batch_open', 'runc_batch_solve', 'runc_batch_close'):\n"
        "    assert hasattr(lib, name), name\n"
        "print('ok', lib.RUNC_BATCH_MAX_THREADS)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr
