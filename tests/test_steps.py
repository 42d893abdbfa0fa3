"""Answers that show their work: the steps and partial formats, their checker, scoring and fact coverage."""

from __future__ import annotations

import argparse
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinymath.tasks import AnswerFormat, Problem, TaskSpec, build_splits, parse_line, score
from tinymath.tasks import cli as gen_cli
from tinymath.tasks import steps
from tinymath.tasks.coverage import fact_coverage
from tinymath.tasks.formats import STEP_FORMATS, classic_result
from tinymath.tasks.steps import Chain, Check, Compare, Link, Steps, Tally, check, parse, round_quotient

quick = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

MUL = "6*6=36 7*6=42 6*5=30 7*5=35 6+0=6 3+2=5+0=5+0=5 4+3=7+5=12+0=12 3+1=4#4256.00"
DIV = "2q0:0 27q0-12=15q1-12=3q2:2 30q0-12=18q1-12=6q2:22 60q0-12=48q1-12=36q2-12=24q3-12=12q4-12=0q5:225 0q0:2250#2.25"


def classic_problems():
    for op in "+-*/":
        for a in range(100):
            for b in range(1 if op == "/" else 0, 100):
                yield a, op, b


@pytest.mark.parametrize("fmt", STEP_FORMATS)
def test_every_classic_answer_passes_the_checker_and_ends_in_the_classic_answer(fmt):
    chars: dict[str, list[int]] = {op: [] for op in "+-*/"}
    for a, op, b in classic_problems():
        text = steps.answer(a, op, b, fmt)
        verdict = check(text, a, op, b, fmt)
        assert verdict.valid, (a, op, b, text, verdict)
        assert verdict.final == classic_result(a, op, b) and text.endswith("#" + verdict.final)
        assert text.count("#") == 1 and " = " not in text and text == text.strip()
        assert parse(text).text() == text  # type: ignore[union-attr]
        chars[op].append(len(text))
    assert sum(map(len, chars.values())) == 4 * 100 * 100 - 100
    # the module docstring's table of mean lengths is what the format writes
    row = re.search(rf"^ {{4}}{fmt} +(.*)$", steps.__doc__ or "", re.M)
    assert row is not None
    means = dict(zip(row.group(1).split()[::2], map(float, row.group(1).split()[1::2])))
    assert means == {op: round(sum(v) / len(v), 1) for op, v in chars.items()}


def test_the_docstring_examples_are_what_the_formats_write():
    examples = re.findall(r"^ {4}(\d+) ([-+*/]) (\d+) = (.+)$", steps.__doc__ or "", re.M)
    assert len(examples) == 8
    for a, op, b, text in examples:
        assert text in [steps.answer(int(a), op, int(b), fmt) for fmt in STEP_FORMATS]


@pytest.mark.parametrize("a, op, b, fmt, text", [
    (24, "+", 82, "steps", "4+2=6+0=6 2+8=10+0=10#106.00"),
    (19, "-", 52, "steps", "1<5 12-9=3-0=3 15-1=14-1=13#-33.00"),
    (76, "*", 56, "steps", MUL),
    (27, "/", 12, "steps", DIV),
    (76, "*", 56, "partial", "76*6=456 76*50=3800+456=4256#4256.00"),
    (67, "/", 8, "partial", "67/8=8r3 30/8=3r6 60/8=7r4 40/8=5r0#8.38"),
    (24, "+", 82, "partial", "4+2=6+0=6 2+8=10+0=10#106.00"),
    (45, "-", 45, "steps", "5=5 15-5=10-0=10 14-4=10-0=10#0.00"),
    (7, "-", 52, "steps", "0<5 12-7=5-0=5 15-0=15-1=14#-45.00"),
    (1, "/", 8, "steps", "1q0:0 10q0-8=2q1:1 20q0-8=12q1-8=4q2:12 40q0-8=32q1-8=24q2-8=16q3-8=8q4-8=0q5:125#0.12"),
    (3, "*", 2, "steps", "3*2=06 6+0=6 0+0=0#6.00"),
    (24, "+", 82, "steps-msd", "2+8=10+0=10 4+2=6+0=6#106.00"),
    (19, "-", 52, "steps-msd", "1<5 15-1=14-1=13 12-9=3-0=3#-33.00"),
    (76, "*", 56, "steps-msd", "6*6=36 7*6=42 6*5=30 7*5=35 3+1=4 4+3=7+5=12+0=12 3+2=5+0=5+0=5 6+0=6#4256.00"),
    (27, "/", 12, "steps-msd", DIV),
    (24, "+", 82, "steps-lsd", "4+2=6+0=6 2+8=10+0=10#106.00"),
    (76, "*", 56, "steps-lsd", MUL),
    (12, "/", 77, "steps-lsd", "1q0:0 21q0:0 021q0-77=34q1:1 034q0-77=353q1-77=672q2-77=991q3-77=221q4-77=54q5:15 "
                               "054q0-77=373q1-77=692q2-77=912q3-77=241q4-77=56q5:155#0.16"),
])
def test_known_answers(a, op, b, fmt, text):
    assert steps.answer(a, op, b, fmt) == text


def test_parse_gives_the_structure_and_round_trips():
    got = parse("1<5 12-9=3-0=3#-33.00")
    assert got == Steps((Compare("1", "<", "5"), Chain("12", (Link("-", "9", "3"), Link("-", "0", "3")))), "-33.00")
    div = parse(DIV)
    assert div is not None and div.steps[1] == Tally("27", (("12", "15", "1"), ("12", "3", "2")), "2")
    assert div.final == "2.25" and parse("8q0:0#0.00") == Steps((Tally("8", (), "0"),), "0.00")
    assert parse("1*7=07#7.00").steps[0].links[0].out == "07"  # type: ignore[union-attr]  # kept as written
    assert steps.write(76, "*", 56) == parse(MUL)


@pytest.mark.parametrize("text", ["", " ", "#", "4256.00", "#4256.00", "6*6=36#", "6*6=36#4256", "6*6=36#4256.0",
                                  "6*6=36 #4256.00", "6*6=36  7*6=42#4256.00", "6*6=36#42#56.00", "6*6=#4256.00",
                                  "6x6=36#4256.00", "1" * 50 + "+1=2#2.00", "1<<5#1.00", "12<5#1.00", "6/8=0#0.00",
                                  "27q1:0#2.00", "27q0-12=15q:1#1.00", "27q0-12=15q10:1#1.00", "27q0-12q1:1#1.00",
                                  "27q0-12=15q1#1.00", "27q0-12=15q1:#1.00"])
def test_garbage_is_unparsed_not_an_error(text):
    assert parse(text) is None
    verdict = check(text, 76, "*", 56)
    assert verdict == Check("", None, "unparsed") and not verdict.valid and not verdict.parsed


def test_every_truncation_of_a_right_answer_is_unparsed():
    for fmt in STEP_FORMATS:
        for a, op, b in [(76, "*", 56), (67, "/", 8), (19, "-", 52), (99, "+", 99)]:
            text = steps.answer(a, op, b, fmt)
            for cut in range(len(text)):
                assert check(text[:cut], a, op, b, fmt).wrong == "unparsed", text[:cut]


@pytest.mark.parametrize("a, op, b, fmt, text, at, kind", [
    (76, "*", 56, "steps", MUL.replace("7*6=42", "7*6=43"), 1, "mul"),
    (76, "*", 56, "steps", MUL.replace("7*6=42", "8*6=48"), 1, "copy"),
    (76, "*", 56, "steps", MUL.replace("3+2=5+0=5+0=5", "3+2=6+0=6+0=6"), 5, "add"),
    (76, "*", 56, "steps", MUL.replace("3+1=4#", "3+0=3#"), 11, "carry"),
    (76, "*", 56, "steps", MUL.replace("#4256.00", "#4265.00"), 12, "final"),
    (76, "*", 56, "steps", MUL.replace(" 3+1=4", ""), 11, "shape"),
    (76, "*", 56, "steps", MUL.replace("#", " 0+0=0#"), 12, "shape"),
    (76, "*", 56, "partial", "76*6=456 76*50=3800+456=4265#4265.00", 2, "sum"),
    (19, "-", 52, "steps", "1>5 12-9=3-0=3 15-1=14-1=13#-33.00", 0, "compare"),
    (19, "-", 52, "steps", "1<5 12-9=3-1=2 15-1=14-1=13#-32.00", 2, "carry"),
    (19, "-", 52, "steps", "1<5 12-9=4-0=4 15-1=14-1=13#-34.00", 1, "sub"),
    (24, "+", 82, "steps", "4+2=6+0=6 2+8=10+1=11#116.00", 3, "carry"),
    (24, "+", 82, "steps-msd", "2+8=10+1=11 4+2=6+0=6#116.00", 3, "carry"),  # first in the units-first order
    (24, "+", 82, "steps-msd", "4+2=6+0=6 2+8=10+0=10#106.00", 0, "copy"),  # steps' order is wrong here
    (27, "/", 12, "steps", DIV.replace("-12=15q1-12=3q2", "-12=16q1-12=4q2"), 4, "sub"),
    (27, "/", 12, "steps-lsd", steps.answer(27, "/", 12, "steps-lsd").replace("-21=51q1", "-21=15q1"), 4, "sub"),
    (27, "/", 12, "steps-lsd", steps.answer(27, "/", 12, "steps-lsd").replace("03q0", "30q0"), 8, "copy"),
    (27, "/", 12, "steps-lsd", DIV, 3, "copy"),  # steps' digit order is wrong here: 27 read as 72
    (27, "/", 12, "steps", DIV.replace("-12=3q2", "-12=3q3"), 5, "count"),
    (27, "/", 12, "steps", DIV.replace("27q0-12=15q1-12=3q2:2 30q0", "27q0-12=15q1:1 150q0"), 5, "divide"),
    (27, "/", 12, "steps", DIV.replace("30q0", "31q0"), 8, "copy"),
    (27, "/", 12, "steps", DIV.replace("-12=18q1", "-13=17q1"), 9, "copy"),
    (27, "/", 12, "steps", DIV.replace(":22 ", ":23 "), 12, "quotient"),
    (27, "/", 12, "steps", DIV.replace(" 0q0:2250", ""), 21, "shape"),
    (27, "/", 12, "steps", DIV.replace("2.25", "2.26"), 24, "round"),
    (67, "/", 8, "partial", "67/8=7r11 30/8=3r6 60/8=7r4 40/8=5r0#8.38", 0, "divide"),
    (1, "/", 8, "steps", "1q0:0 10q0-8=2q1:1 20q0-8=12q1-8=4q2:12 40q0-8=32q1-8=24q2-8=16q3-8=8q4-8=0q5:125#0.13",
     20, "round"),
])
def test_the_first_wrong_step_and_its_kind(a, op, b, fmt, text, at, kind):
    verdict = check(text, a, op, b, fmt)
    assert (verdict.wrong_at, verdict.wrong) == (at, kind) and not verdict.valid and verdict.parsed


def test_right_final_answer_with_wrong_steps_is_told_apart():
    text = MUL.replace("7*6=42 6*5=30", "7*6=43 6*5=29")  # two wrong products whose sum is right
    verdict = check(text, 76, "*", 56)
    assert verdict.final == "4256.00" == classic_result(76, "*", 56)
    assert not verdict.valid and (verdict.wrong_at, verdict.wrong) == (1, "mul")
    assert check(MUL, 76, "*", 56) == Check("4256.00")


ALPHABET = "0123456789+-*/=rq:<># ."


@quick
@given(st.text(ALPHABET, max_size=60), st.integers(0, 120), st.sampled_from("+-*/"), st.integers(1, 120),
       st.sampled_from(STEP_FORMATS))
def test_checker_never_raises_on_text(text, a, op, b, fmt):
    verdict = check(text, a, op, b, fmt)
    assert verdict.parsed == (parse(text) is not None)
    assert verdict.valid == (verdict.wrong is None)


@quick
@given(st.integers(0, 10**6), st.sampled_from("+-*/"), st.integers(1, 10**6), st.sampled_from(STEP_FORMATS),
       st.data())
def test_any_operands_check_and_one_changed_character_is_caught_or_harmless(a, op, b, fmt, data):
    text = steps.answer(a, op, b, fmt)
    assert check(text, a, op, b, fmt) == Check(classic_result(a, op, b))
    i = data.draw(st.integers(0, len(text) - 1))
    mutant = text[:i] + data.draw(st.sampled_from(ALPHABET)) + text[i + 1:]
    verdict = check(mutant, a, op, b, fmt)
    if verdict.valid:  # only an edit that keeps every step true survives: then it is the right answer
        assert verdict.final == classic_result(a, op, b)


def test_rounding_rule_on_every_division_problem():
    halves_by_float = 0
    for a in range(100):
        for b in range(1, 100):
            thousandths, rest = divmod(1000 * a, b)
            assert round_quotient(thousandths, rest == 0) == classic_result(a, "/", b), (a, b)
            halves_by_float += rest == 0 and thousandths % 10 == 5 and (8 * a) % b != 0
    assert halves_by_float == 60  # b = 40 and 80: the exact halves that are not doubles
    assert [round_quotient(t, True) for t in (125, 8375, 75, 25, 995)] == ["0.12", "8.38", "0.07", "0.03", "0.99"]
    assert [round_quotient(t, False) for t in (75, 995, 124)] == ["0.08", "1.00", "0.12"]  # a remainder: past the digits


def test_answer_format_and_spec():
    fmt = AnswerFormat("steps")
    assert fmt.shows_steps and not AnswerFormat("classic").shows_steps
    assert fmt.prompt(76, "*", 56) == "76 * 56 =" and fmt.answer(76, "*", 56) == MUL
    assert fmt.parse(MUL) == (4256.0,) and fmt.parse("junk") is None
    assert fmt.same_value(MUL, MUL.replace("7*6=42", "7*6=43")) and not fmt.same_value(MUL, MUL.replace(".00", ".01"))
    with pytest.raises(ValueError, match="known: classic, int, reversed, padded, padded-reversed, text, steps, partial"):
        AnswerFormat("step")
    with pytest.raises(ValueError, match="known: .*steps, partial"):
        TaskSpec(format="bogus").validate()
    with pytest.raises(ValueError, match="mod task has no 'steps' format .its formats: int, reversed, padded"):
        TaskSpec(task="mod", ops="+", format="steps").validate()
    splits = build_splits(TaskSpec(lo=0, hi=9, holdout=None, format="partial"))
    for p in splits["train"]:
        prompt, answer = parse_line(p.line)
        a, op, b = steps.operands(prompt)  # type: ignore[misc]
        assert check(answer, a, op, b, "partial").valid


def test_gen_writes_the_classic_task_with_steps(tmp_path):
    parser = argparse.ArgumentParser()
    gen_cli.add_arguments(parser)
    assert gen_cli.run(parser.parse_args(["arith", "--format", "steps", "--out", str(tmp_path)])) == 0
    assert json.loads((tmp_path / "spec.json").read_text())["spec"]["format"] == "steps"
    lines = (tmp_path / "holdout.txt").read_text().splitlines()
    assert len(lines) == 4 * (100 * 100 - 90 * 90) - 10  # no division by 0
    for line in lines[::7]:
        prompt, answer = parse_line(line)
        a, op, b = steps.operands(prompt)  # type: ignore[misc]
        assert check(answer, a, op, b) == Check(classic_result(a, op, b))


def test_score_counts_the_final_answer_and_step_validity():
    fmt = AnswerFormat("steps")
    probs = [Problem(f"{a} {op} {b} =", fmt.answer(a, op, b), op, "in")
             for a, op, b in [(76, "*", 56), (76, "*", 56), (27, "/", 12), (19, "-", 52), (24, "+", 82)]]
    preds = [MUL, MUL.replace("7*6=42 6*5=30", "7*6=43 6*5=29"), DIV.replace("2.25", "2.26"), "nonsense", "106.00"]
    r = score(probs, preds, fmt)
    s = r.to_dict()["groups"]["all"]
    assert r.groups["all"].exact == 2  # both finals of 76 * 56; the right classic answer without steps is unparsed
    assert s["steps_valid"] == pytest.approx(1 / 5) and s["right_wrong_steps"] == pytest.approx(1 / 5)
    assert s["first_wrong"] == {"unparsed": 2, "mul": 1, "round": 1}
    assert s["mean_chars"] == pytest.approx(sum(map(len, preds)) / 5)
    assert s["length"] == pytest.approx(3 / 5) and s["parsed"] == 3
    assert r.to_dict()["groups"]["op /"]["mean_abs_err"] == pytest.approx(0.01)
    assert r.wrong["/"] == [("27 / 12 =", "2.25", DIV.replace("2.25", "2.26"))]
    assert "first wrong step: unparsed 2, mul 1, round 1" in r.table() and "steps ok" in r.table()
    classic = score(probs[:1], ["4256.00"], AnswerFormat("classic")).to_dict()["groups"]["all"]
    assert classic["steps_valid"] is None and classic["first_wrong"] is None and classic["mean_chars"] == 7


def test_facts_are_position_free():
    assert steps.facts("4+2=6+0=6 2+8=10+0=10#106.00") == {(4, "+", 2, 6), (6, "+", 0, 6), (2, "+", 8, 10),
                                                           (10, "+", 0, 10)}
    assert steps.facts("1<5 67/8=8r3#1.00") == {(1, "<", 5), (67, "/", 8, 8, 3)}
    assert steps.facts("2q0:0 27q0-12=15q1-12=3q2:2#2.25") == {(27, "-", 12, 15), (15, "-", 12, 3), (3, "<", 12)}
    with pytest.raises(ValueError, match="not a steps answer"):
        steps.facts("4256.00")


def test_fact_coverage_on_a_hand_example():
    def probs(*texts):
        return [Problem(f"{t} =", "", "+") for t in texts]
    # 21 + 43 needs 1+3 and 2+4, which 12 + 34 writes in the other places; 13 + 24 needs 3+4, never written
    assert fact_coverage(probs("12 + 34"), probs("21 + 43", "13 + 24", "2 + 4"), "steps") == pytest.approx(2 / 3)
    assert fact_coverage(probs("12 + 34", "3 + 4", "1 + 2"), probs("13 + 24"), "steps") == 1.0  # 3+4=7, 1+2=3
    with pytest.raises(ValueError, match="no held-out problems"):
        fact_coverage(probs("1 + 2"), [], "steps")


def test_held_out_products_need_no_new_fact():
    """Issue 22's lesson: digit steps cover every held-out product; partial products cover none."""
    splits = build_splits(TaskSpec(ops="*"))
    train = splits["train"] + splits["val"] + splits["test"]
    assert fact_coverage(train, splits["holdout"], "steps") == 1.0
    assert fact_coverage(train, splits["holdout"][::10], "steps-msd") == 1.0  # the same facts, another order
    assert fact_coverage(train, splits["holdout"][::50], "partial") == 0.0


def test_held_out_dividends_are_covered_by_tallies_and_divisors_never():
    """Repeated subtraction brings a held-out dividend down digit by digit, so most of its facts are
    trained; a held-out divisor is subtracted in every link, a fact no training problem writes."""
    splits = build_splits(TaskSpec(ops="/"))
    train = splits["train"] + splits["val"] + splits["test"]
    a_held = [p for p in splits["holdout"] if p.held == "a"]
    b_held = [p for p in splits["holdout"] if p.held in ("b", "both")]
    assert fact_coverage(train, a_held, "steps") > 0.5 > fact_coverage(train, a_held, "partial")
    assert fact_coverage(train, b_held[::10], "steps") < 0.05
    # steps-lsd writes the same facts in another digit order: the same coverage, problem by problem
    for p in a_held[::20] + b_held[::20]:
        ops = steps.operands(p.prompt)
        assert steps.facts(steps.answer(*ops, "steps-lsd"), "steps-lsd") == steps.facts(steps.answer(*ops))  # type: ignore[misc]


def test_is_right_is_the_scorers_exact():
    """One rule for 'right' (trainer, server, scorer): the final answer of a well-formed answer."""
    from tinymath.tasks import Problem, score

    fmt = AnswerFormat("steps")
    exp = fmt.answer(24, "+", 82)
    cases = [exp, exp.replace("6+0=6", "6+0=7", 1), exp.split("#")[0] + "#107.00", "#106.00", "garbage", ""]
    for pred in cases:
        rep = score([Problem("24 + 82 =", exp)], [pred], fmt)
        assert fmt.is_right(exp, pred) == (rep.groups["all"].exact == 1), pred
    assert AnswerFormat("classic").is_right("106.00", " 106.00") and not AnswerFormat("classic").is_right("106.00", "106")
