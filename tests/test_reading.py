"""Reading problems (tasks/reading.py): the steps layout's operand slots, and nothing computed."""

from __future__ import annotations

import re

import pytest

from tinymath.tasks import TaskSpec, build_splits
from tinymath.tasks import reading, steps

PAIRS = [(a, b) for a in range(0, 100, 7) for b in range(1, 100, 6)] + [(0, 0), (9, 0), (99, 99), (5, 93)]


def masked(op: str, a: int, b: int) -> str:
    """The steps answer of `a op b` with every number it computes masked by one `.` (copies kept)."""
    parsed = steps.parse(steps.answer(a, op, b))
    out = []
    for s in parsed.steps:
        if isinstance(s, steps.Compare):
            out.append(f"{s.left}.{s.right}")
        elif isinstance(s, steps.Chain) and op == "*" and s.links[0].op == "*":
            out.append(f"{s.start}*{s.links[0].arg}=.")
        elif isinstance(s, steps.Chain) and op in "+-":
            first = s.links[0]
            out.append(f"{s.start}{first.op}{first.arg}=." + "".join(f"{k.op}.=." for k in s.links[1:]))
        elif isinstance(s, steps.Tally):
            out.append(("." if out else "") + f"{s.start[-1]}q0-{b}=.q.:.")
    return " ".join(out)


@pytest.mark.parametrize("op", "+-*/")
def test_reading_puts_each_operand_digit_in_its_steps_slot(op):
    """Same steps, same slots: the reading answer is the steps answer with what it computes masked
    (`-` with the larger operand on top, as the steps write it)."""
    for a, b in PAIRS:
        if op == "/" and b == 0:
            continue
        assert reading.answer(a, op, b, a_on_top=a >= b) == masked(op, a, b), (a, op, b)


def test_reading_answers_hold_no_result():
    """A reading answer is made of operand digits, masks and layout marks only: with every digit of
    the operands (and `-`'s borrowed 1, `/`'s decimal 0s) taken out, no digit is left."""
    for a, b in PAIRS:
        for op in "+-*/":
            if op == "/" and b == 0:
                continue
            for on_top in (True, False):
                text = reading.answer(a, op, b, on_top)
                left = re.sub(r"q0|1(?=\d-)", "", text)
                digits = set(str(a)) | set(str(b)) | ({"0"} if op in "+-/" else set())  # padding, decimals
                assert set(re.findall(r"\d", left)) <= digits, (a, op, b, text)
    # `-`'s top operand is a coin toss, not the larger one (that would give the sign away)
    assert reading.answer(12, "-", 45, a_on_top=True) != reading.answer(12, "-", 45, a_on_top=False)


def test_reading_problems_join_train_only_and_are_seeded():
    spec = {"task": "arith", "format": "steps", "reading": 400}
    splits = build_splits(TaskSpec.from_dict(spec))
    plain = build_splits(TaskSpec.from_dict({**spec, "reading": 0}))
    extra = [p for p in splits["train"] if p.op == reading.OP]
    assert len(extra) == 400 and len(splits["train"]) == len(plain["train"]) + 400
    assert all(p.prompt.startswith("? ") and p.region == "read" for p in extra)
    assert any(int(n) >= 90 for p in extra for n in re.findall(r"\d+", p.prompt))  # held-out numbers are read
    for name in ("val", "test", "holdout"):
        assert splits[name] == plain[name]
    assert extra == [p for p in build_splits(TaskSpec.from_dict(spec))["train"] if p.op == reading.OP]
    with pytest.raises(ValueError, match="steps"):
        TaskSpec.from_dict({"task": "arith", "reading": 10}).validate()
    with pytest.raises(ValueError, match="reading"):
        TaskSpec.from_dict({**spec, "reading": -1}).validate()
    with pytest.raises(ValueError, match="more than half"):
        build_splits(TaskSpec.from_dict({**spec, "ops": "+", "reading": 9000}))
