"""The scorer on hand-made cases."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymath.tasks import AnswerFormat, Problem, score
from tinymath.tasks.score import digit_accuracy, wilson

P = [Problem("24 + 82 =", "106.00", "+", "in"),
     Problem("19 - 52 =", "-33.00", "-", "in"),
     Problem("27 / 86 =", "0.31", "/", "in"),
     Problem("95 + 3 =", "98.00", "+", "holdout")]


def test_hand_made_cases():
    r = score(P, ["106.00", "-33", "0.13", ""], AnswerFormat("classic"))
    g = r.to_dict()["counts"]
    assert g["all"]["n"] == 4 and g["all"]["exact"] == 1
    # "-33" is not the classic format: not exact, not parsed, so not a numeric match either
    assert g["all"]["numeric"] == 1
    assert g["op +"]["exact"] == 1 and g["op +"]["n"] == 2
    assert g["region holdout"]["exact"] == 0 and g["region holdout"]["n"] == 1
    assert g["+ in"]["exact"] == 1
    assert g["length 4"]["n"] == 1  # "0.31"
    s = r.to_dict()["groups"]
    # 0.13 vs 0.31: right-aligned, "1" vs "3" and "3" vs "1" wrong; "0" and "." right
    assert s["op /"]["digits"] == pytest.approx(0.5)
    assert s["op /"]["mean_abs_err"] == pytest.approx(0.18)
    assert s["op /"]["mean_rel_err"] == pytest.approx(0.18)  # |e| < 1: relative to 1
    assert r.wrong["+"] == [("95 + 3 =", "98.00", "")]
    assert "<empty>" in r.table()


def test_numeric_match_at_format_precision():
    fmt = AnswerFormat("classic")
    r = score([P[0]], ["106.001"], fmt)
    assert r.groups["all"].numeric == 0  # not the format: 3 decimals
    assert fmt.same_value("106.00", "106.00") and not fmt.same_value("106.00", "106.01")
    assert AnswerFormat("int").same_value("6 r 3", "6 r 3") and not AnswerFormat("int").same_value("6 r 3", "6 r 4")
    assert AnswerFormat("reversed").same_value("601", "601")
    assert AnswerFormat("padded").same_value("0106", "106")


def test_relative_error_and_length():
    r = score([Problem("50 * 2 =", "100.00", "*")], ["110.00"], AnswerFormat("classic"))
    s = r.to_dict()["groups"]["all"]
    assert s["mean_abs_err"] == pytest.approx(10) and s["mean_rel_err"] == pytest.approx(0.1)
    assert s["length"] == 1.0 and s["exact"] == 0.0


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-3)


@given(st.text("0123456789.-", max_size=8), st.text("0123456789.-", max_size=8))
def test_digit_accuracy_is_a_fraction_and_one_only_when_equal(e, p):
    d = digit_accuracy(e, p)
    assert 0.0 <= d <= 1.0
    if e == p:
        assert d == 1.0
    if e and d == 1.0:
        assert p.endswith(e)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 problems but 1 predictions"):
        score(P[:2], ["1"], AnswerFormat("classic"))


def test_json_serialises():
    r = score(P, ["106.00", "-33.00", "0.31", "98.00"], AnswerFormat("classic"))
    d = json.loads(r.to_json())
    assert d["groups"]["all"]["exact"] == 1.0


def test_inference_side_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import tinymath.tasks, tinymath.tokenizer, tinymath.cli\n"
            "from tinymath.tasks import build_splits, TaskSpec; build_splits(TaskSpec(lo=0, hi=9, holdout=None))\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_held_out_problems_are_grouped_by_the_operand_held():
    from tinymath.tasks import TaskSpec, build_splits

    held = build_splits(TaskSpec(ops="/", lo=0, hi=9, holdout=(7, 9), val_frac=0.1, test_frac=0.2))["holdout"]
    by = {h: [p for p in held if p.held == h] for h in ("a", "b", "both")}
    for p in held:  # the field says which operand of the prompt is 7-9
        a, b = int(p.prompt.split()[0]), int(p.prompt.split()[2])
        assert p.held == {(True, False): "a", (False, True): "b", (True, True): "both"}[(a >= 7, b >= 7)]
    assert [len(v) for v in by.values()] == [3 * 6, 7 * 3, 3 * 3]  # divisors 1-9, dividends 0-9
    answers = [p.answer if p.held == "a" else "" for p in held]
    g = score(held, answers, AnswerFormat("classic")).to_dict()["counts"]
    assert (g["/ held a"]["exact"], g["/ held a"]["n"]) == (18, 18)
    assert (g["/ held b"]["exact"], g["/ held both"]["exact"]) == (0, 0) and g["/ held both"]["n"] == 9
    assert all(not k.startswith("/ held") for k in score(P, ["", "", "", ""], AnswerFormat("classic")).groups)
