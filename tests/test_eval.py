"""`tinymath eval` on the shipped model: torch-free, scores equal to scoring the engine's own answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tinymath.runc import Model
from tinymath.tasks import TaskSpec, build_splits, score

ROOT = Path(__file__).resolve().parent.parent


def test_eval_without_torch_matches_direct_scoring(tmp_path):
    for name in ("tinymath.bin", "tinymath.json", "tokenizer.bin"):
        shutil.copy(ROOT / "models" / name, tmp_path / name)
    model = tmp_path / "tinymath.bin"
    code = ("import sys; sys.modules['torch'] = None\n"
            "from tinymath.cli import main\n"
            f"sys.exit(main(['eval', {str(model)!r}, '--splits', 'test']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "rel err" in r.stdout and "wrong (" in r.stdout
    saved = json.loads((tmp_path / "tinymath.eval.json").read_text())
    card = json.loads((tmp_path / "tinymath.json").read_text())
    spec = TaskSpec.from_dict(card["task"])
    test = build_splits(spec)["test"]
    with Model(str(model)) as m:
        answers = m.solve([p.prompt for p in test], steps=True)  # whole answers, a steps model's work too
    direct = score(test, answers, spec.answer_format()).to_dict()
    assert saved["splits"]["test"]["counts"] == direct["counts"]
    assert card["accuracy"]["test"]["all"]["exact"] == direct["groups"]["all"]["exact"]
    assert card["accuracy"]["test"]["all"]["n"] == len(test) == 3231
    for op in "+-*/":
        assert card["accuracy"]["test"][op]["exact"] == direct["groups"][f"op {op}"]["exact"]


def test_eval_errors_are_one_line(tmp_path):
    cases = [([str(tmp_path / "missing.bin")], "model file not found"),
             ([str(ROOT / "models" / "tinymath.bin"), "--data", str(tmp_path / "nodata")], "nodata")]
    for args, message in cases:
        r = subprocess.run([sys.executable, "-m", "tinymath.cli", "eval", *args], capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinymath", *args], capture_output=True, text=True, cwd=ROOT)


def test_eval_prints_test_first_and_splits_apart():
    r = _cli("eval", "models/tinymath.bin", "--no-write")
    assert r.returncode == 0, r.stderr
    tables = r.stdout.split("\n\n")[1:]
    assert tables[0].startswith("test:") and tables[1].startswith("holdout:"), r.stdout[:400]
    first_row = tables[0].splitlines()[3].split()
    assert first_row[:2] == ["all", "3231"]  # the headline row counts test problems only


def test_eval_names_a_tokenizer_file_and_version():
    r = _cli("eval", "models/tokenizer.bin")
    assert r.returncode == 2 and "is a tokenizer file, not a model" in r.stderr, r.stderr
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("tinymath ")


def test_output_closed_early_is_quiet():
    """`tinymath eval ... | head -1`: the reader goes after one line; no BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "tinymath", "eval", "models/tinymath.bin", "--no-write",
                          "--splits", "test"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = p.stdout.readline()
    p.stdout.close()  # as head does: every later write meets a closed pipe
    err = p.stderr.read().decode()
    p.wait(timeout=300)
    assert first.startswith(b"models/tinymath.bin: task")
    assert "Traceback" not in err and "BrokenPipe" not in err, err
