"""The README's cheap commands, run, and checked against what the README says they print.

Only commands that take seconds: `make run`, the `make calc` example, `make help`, `tinymath eval`
of the shipped model (fp32 and int8, the figures of its table) and `tinymath inspect confidence`
(the AUROC sentence). The rest of the README (training, sweeps, `make bench`, `make model`) takes
minutes to hours and is checked by hand. Files are copied to a temporary folder first: eval and
inspect write beside the model and into ./inspect.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
needs_make = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")


def _make(*args: str, stdin: str | None = None) -> str:
    r = subprocess.run(["make", "-s", *args], cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@needs_make
def test_make_run_and_the_calc_example_print_what_the_readme_shows():
    m = re.search(r"`make run` needs only .*?\n```\n(.*?)```", README, re.S)
    assert m, "the README's `make run` output block is gone"
    assert _make("run").splitlines() == m.group(1).splitlines()
    m = re.search(r"\(`(\d+ [-+*/] \d+)` gives\s+`([^`]+)`\)", README)
    assert m, "the README's `make calc` example is gone"
    assert _make("calc", stdin=m.group(1) + "\n").strip() == m.group(2)


@needs_make
def test_make_help_lists_every_make_target_the_readme_names():
    help_text = _make("help")
    named = set(re.findall(r"`make ([a-z][a-z-]*)", README))
    assert {"run", "test", "calc", "model", "bench"} <= named
    missing = sorted(t for t in named if not re.search(rf"\bmake {re.escape(t)}(?![a-z-])", help_text))
    assert not missing, f"README names make targets that `make help` does not list: {missing}"


def test_the_shipped_models_figures_are_what_eval_and_inspect_print(tmp_path, monkeypatch, capsys):
    """The shipped-default table row and the confidence sentence, against `tinymath eval` and
    `tinymath inspect confidence` run now on the shipped files."""
    from tinymath.cli import main

    for f in ("tinymath.bin", "tinymath.json", "tinymath.q8.bin", "tinymath.q8.json", "tokenizer.bin",
              "tokenizer.model"):
        shutil.copy(ROOT / "models" / f, tmp_path / f)
    assert main(["eval", str(tmp_path / "tinymath.bin")]) == 0
    assert main(["eval", str(tmp_path / "tinymath.q8.bin")]) == 0
    fp32 = json.loads((tmp_path / "tinymath.eval.json").read_text())["splits"]
    int8 = json.loads((tmp_path / "tinymath.q8.eval.json").read_text())["splits"]
    card = json.loads((tmp_path / "tinymath.json").read_text())
    row = next(ln for ln in README.splitlines() if ln.startswith("| `models/tinymath.bin`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    pct = lambda g: f"{100 * g['exact']:.2f}%"  # noqa: E731
    test, all_ = fp32["test"]["groups"], fp32["test"]["groups"]["all"]
    lo, hi = all_["exact_ci95"]
    assert cells[1:] == [f"{card['n_params']:,}", *(pct(test[f"{op} in"]) for op in "+-*/"),
                         f"{pct(all_)} ({100 * lo:.1f}-{100 * hi:.1f})", pct(fp32["holdout"]["groups"]["all"]),
                         pct(int8["test"]["groups"]["all"])]
    assert (f"Test n = {all_['n']:,}, holdout n = {fp32['holdout']['groups']['all']['n']:,}, "
            f"seed {card['seed']}.") in README  # the training seed
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "confidence", "tinymath.bin"]) == 0
    capsys.readouterr()
    conf = json.loads((tmp_path / "inspect" / "tinymath_confidence.json").read_text())
    t99 = next(t for t in conf["thresholds"] if t["target"] == 0.99)
    said = re.search(r"AUROC is ([0-9.]+) \(n = ([0-9,]+) test problems\), and answering only above ([0-9.]+) "
                     r"gives\s+99% accuracy on (\d+)% of them", README)
    assert said, "the README's confidence sentence is gone"
    assert said.groups() == (f"{conf['auroc']:.3f}", f"{conf['n']:,}", f"{t99['threshold']:.3f}",
                             f"{100 * t99['coverage']:.0f}")
