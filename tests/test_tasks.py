"""Problem generation: formats against independent arithmetic, split invariants, determinism, bad input."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymath.tasks import AnswerFormat, TaskSpec, build_splits, parse_line
from tinymath.tasks.arith import original_lines
from tinymath.tasks.fileset import read_problems


def classic_reference(a: int, op: str, b: int) -> str:
    """The classic rule computed another way: exact decimal arithmetic on the float quotient."""
    if op == "/":
        exact = Decimal(a / b)  # the binary value Python's round() sees, exactly
        return str(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"{value}.00"


@pytest.mark.parametrize("line", ["24 + 82 = 106.00", "27 / 86 = 0.31", "1 / 8 = 0.12", "3 / 40 = 0.07",
                                  "67 / 8 = 8.38", "19 - 52 = -33.00", "76 * 56 = 4256.00", "0 / 5 = 0.00"])
def test_classic_known_lines(line):
    a, op, b, _, _ = line.split()
    fmt = AnswerFormat("classic")
    assert f"{fmt.prompt(int(a), op, int(b))} {fmt.answer(int(a), op, int(b))}" == line


def test_every_classic_problem_matches_independent_arithmetic():
    splits = build_splits(TaskSpec())
    n = 0
    for problems in splits.values():
        for p in problems:
            a, op, b, eq = p.prompt.split()
            assert eq == "=" and p.op == op
            assert p.answer == classic_reference(int(a), op, int(b)), p.line
            n += 1
    assert n == 100 * 100 * 4 - 100  # operands 0-99, no division by zero


def test_classic_split_sizes_and_invariants():
    splits = build_splits(TaskSpec())
    prompts = {k: {p.prompt for p in v} for k, v in splits.items()}
    for k, v in splits.items():
        assert len(prompts[k]) == len(v), f"{k} repeats a problem"
    names = list(prompts)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not prompts[x] & prompts[y], f"{x} and {y} share problems"
    in_range = [p for k in ("train", "val", "test") for p in splits[k]]
    assert len(in_range) == 90 * 90 * 4 - 90
    for p in in_range:
        a, _, b, _ = p.prompt.split()
        assert int(a) <= 89 and int(b) <= 89 and p.region == "in"
    for p in splits["holdout"]:
        a, _, b, _ = p.prompt.split()
        assert int(a) >= 90 or int(b) >= 90
        assert p.region == "holdout"
    # every op gets the same share of test problems
    per_op = Counter(p.op for p in splits["test"])
    assert set(per_op) == set("+-*/")
    assert max(per_op.values()) - min(per_op.values()) <= 10


def test_same_seed_same_splits_other_seed_differs():
    a, b, c = (build_splits(TaskSpec(seed=s)) for s in (3, 3, 4))
    assert [p.line for p in a["train"]] == [p.line for p in b["train"]]
    assert {p.prompt for p in a["test"]} != {p.prompt for p in c["test"]}


@pytest.mark.parametrize("fmt_name", ["int", "reversed", "padded", "padded-reversed"])
def test_integer_formats_parse_back_to_the_true_result(fmt_name):
    spec = TaskSpec(format=fmt_name)
    fmt = spec.answer_format()
    for p in build_splits(spec)["test"]:
        a, op, b, _ = p.prompt.split()
        a, b = int(a), int(b)
        truth = divmod(a, b) if op == "/" else ({"+": a + b, "-": a - b, "*": a * b}[op],)
        assert fmt.parse(p.answer) == tuple(float(x) for x in truth), p.line


def test_format_examples():
    assert AnswerFormat("int").answer(27, "/", 4) == "6 r 3"
    assert AnswerFormat("reversed").answer(24, "+", 82) == "601"
    assert AnswerFormat("reversed").answer(19, "-", 52) == "-33"
    assert AnswerFormat("reversed").answer(58, "/", 5) == "11 r 3"
    padded = AnswerFormat("padded", max_operand=99)
    assert padded.prompt(7, "+", 5) == "07 + 05 =" and padded.answer(7, "+", 5) == "012"
    assert padded.answer(3, "*", 4) == "0012" and padded.answer(5, "-", 9) == "-04"
    padrev = AnswerFormat("padded-reversed", max_operand=99)
    assert padrev.prompt(7, "+", 5) == "07 + 05 =" and padrev.answer(7, "+", 5) == "210"
    assert padrev.answer(18, "-", 25) == "-70" and padrev.answer(58, "/", 5) == "11 r 30"


@given(st.integers(0, 999), st.sampled_from("+-*/"), st.integers(1, 999),
       st.sampled_from(["classic", "int", "reversed", "padded", "padded-reversed"]))
def test_format_then_parse_gives_the_value_back(a, op, b, name):
    fmt = AnswerFormat(name, max_operand=999)
    parsed = fmt.parse(fmt.answer(a, op, b))
    assert parsed is not None
    if name == "classic":
        assert parsed[0] == pytest.approx(round(a / b, 2) if op == "/" else eval(f"{a}{op}{b}"))
    else:
        assert parsed == tuple(float(x) for x in (divmod(a, b) if op == "/" else (eval(f"{a}{op}{b}"),)))


def test_mod_is_exhaustive_and_correct():
    spec = TaskSpec(task="mod", ops="+*", modulus=13)
    splits = build_splits(spec)
    problems = [p for v in splits.values() for p in v]
    assert len(problems) == 2 * 13 * 13 and not splits["holdout"]
    for p in problems:
        a, op, b, _, p_, _ = p.prompt.split()
        assert p_ == "13" and int(p.answer) == eval(f"({a}{op}{b}) % 13")


def test_count_and_digits():
    count = build_splits(TaskSpec(task="count", lo=0, hi=29, holdout=(30, 39)))
    for p in count["holdout"]:
        assert int(p.prompt.split()[0]) >= 30
    for p in count["train"]:
        a, op, one, _ = p.prompt.split()
        assert op == "+" and one == "1" and p.answer == f"{int(a) + 1}.00"
    digits = build_splits(TaskSpec(lo=0, hi=9, holdout=None))
    assert sum(len(v) for v in digits.values()) == 4 * 100 - 10 and not digits["holdout"]


def test_large_ranges_are_sampled_deterministically():
    spec = TaskSpec(ops="+", lo=0, hi=9999, holdout=None, n=5000)
    a, b = build_splits(spec), build_splits(spec)
    assert [p.line for p in a["test"]] == [p.line for p in b["test"]]
    assert sum(len(v) for v in a.values()) == 5000


def test_max_train_caps_training_only():
    full, capped = build_splits(TaskSpec()), build_splits(TaskSpec(max_train=1000))
    assert len(capped["train"]) == 1000
    assert [p.line for p in capped["test"]] == [p.line for p in full["test"]]
    assert {p.prompt for p in capped["train"]} <= {p.prompt for p in full["train"]}


def test_original_preset_distribution():
    lines = original_lines(90_000, seed=0)
    assert len(lines) == 90_000
    ops, a_vals, b_vals = Counter(), set(), set()
    for line in lines[:20_000]:
        a, op, b, _, r = line.split()
        assert r == classic_reference(int(a), op, int(b))
        ops[op] += 1
        a_vals.add(int(a))
        b_vals.add(int(b))
    assert min(a_vals) == 0 and max(a_vals) == 89 and min(b_vals) == 1 and max(b_vals) == 89
    assert all(4500 < c < 5500 for c in ops.values())
    assert len(set(lines)) < len(lines)  # sampled with replacement


@pytest.mark.parametrize("fields, message", [
    ({"ops": "+%"}, "unknown op '%'"),
    ({"ops": ""}, "ops is empty"),
    ({"lo": 10, "hi": 5}, "empty"),
    ({"lo": -3}, ">= 0"),
    ({"holdout": (0, 100)}, "swallows"),
    ({"n": -5}, "n must be positive"),
    ({"n": 0}, "n must be positive"),
    ({"max_train": 0}, "max_train"),
    ({"test_frac": 0}, "test_frac"),
    ({"task": "nope"}, "unknown task"),
    ({"format": "roman"}, "unknown answer format"),
    ({"ops": "/", "lo": 0, "hi": 0, "holdout": None}, "nonzero second operand"),
    ({"task": "mod", "ops": "+", "format": "classic"}, "mod answers are integers"),
    ({"task": "file"}, "needs a path"),
])
def test_bad_specs_are_clear_errors(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_splits(TaskSpec(**fields))


def test_spec_round_trips_through_json():
    spec = TaskSpec(ops="+-", format="reversed", holdout=(80, 99), seed=7)
    again = TaskSpec.from_dict(spec.to_dict())
    assert again == spec
    with pytest.raises(ValueError, match="unknown fields"):
        TaskSpec.from_dict({"task": "arith", "opz": "+"})


def test_file_task(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("1 + 2 = 3.00\n\n4 * 5 = 20.00\n1 + 2 = 3.00\n")
    problems = read_problems(path)
    assert [p.line for p in problems] == ["1 + 2 = 3.00", "4 * 5 = 20.00"]
    assert problems[1].op == "*"
    path.write_text("1 + 2 = 3.00\nthis line has no answer\n")
    with pytest.raises(ValueError, match=r"p\.txt:2"):
        read_problems(path)
    path.write_text("1 + 2 = 3.00\n1 + 2 = 4.00\n")
    with pytest.raises(ValueError, match=r"p\.txt:2.*line 1"):
        read_problems(path)


def test_parse_line():
    assert parse_line("Solve 2*x = 4 for x. = 2") == ("Solve 2*x = 4 for x. =", "2")
    with pytest.raises(ValueError):
        parse_line("24 + 82 =")


def test_dmmath_generates_with_the_compat_shim():
    pytest.importorskip("mathematics_dataset", reason="dmmath extra not installed")
    spec = TaskSpec(task="dmmath", modules=("arithmetic__add_or_sub", "arithmetic__mul", "arithmetic__div",
                                            "algebra__linear_1d"), n=30)
    a, b = build_splits(spec), build_splits(spec)
    assert [p.line for p in a["train"]] == [p.line for p in b["train"]]
    problems = [p for v in a.values() for p in v]
    assert Counter(p.op for p in problems) == {m: 30 for m in spec.modules}
    for p in problems:
        assert parse_line(p.line) == (p.prompt, p.answer)
    # a linear equation's answer solves it
    for p in problems:
        if p.op == "algebra__linear_1d" and p.prompt.startswith("Solve "):
            eq, var = p.prompt[len("Solve "):-len(" =")].rsplit(" for ", 1)
            var = var.rstrip(".")
            lhs, rhs = eq.split(" = ")
            env = {var: int(p.answer)}
            assert eval(lhs.replace("^", "**"), env) == eval(rhs.replace("^", "**"), env)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinymath.cli", *args], capture_output=True, text=True)


def test_gen_writes_identical_files_for_the_same_seed(tmp_path):
    for out in ("a", "b"):
        r = run_cli("gen", "classic", "--seed", "5", "--out", str(tmp_path / out))
        assert r.returncode == 0, r.stderr
    for name in ("train.txt", "val.txt", "test.txt", "holdout.txt", "spec.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert "24 + 82 = 106.00\n" in (tmp_path / "a" / "train.txt").read_text() + \
        (tmp_path / "a" / "val.txt").read_text() + (tmp_path / "a" / "test.txt").read_text()
    spec = TaskSpec.load(tmp_path / "a" / "spec.json")
    assert [p.line + "\n" for p in build_splits(spec)["test"]] == \
        (tmp_path / "a" / "test.txt").read_text().splitlines(keepends=True)


@pytest.mark.parametrize("args, message", [
    (["arith", "--ops", "+x"], "unknown op 'x'"),
    (["arith", "--range", "9-3"], "empty"),
    (["arith", "--range", "0-9", "--holdout", "0-20"], "swallows"),
    (["arith", "--n", "-1"], "n must be positive"),
    (["original", "--n", "0"], "count must be positive"),
    (["arith", "--ops", "/", "--range", "0-0", "--holdout", "none"], "nonzero"),
])
def test_gen_bad_input_is_one_clear_line_and_no_files(tmp_path, args, message):
    out = tmp_path / "out"
    r = run_cli("gen", *args, "--out", str(out))
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_score_cli(tmp_path):
    data = tmp_path / "d"
    assert run_cli("gen", "digits", "--out", str(data)).returncode == 0
    test_lines = (data / "test.txt").read_text().splitlines()
    preds = [line if i % 2 else line.rsplit(" = ", 1)[0] + " = 0.01" for i, line in enumerate(test_lines)]
    (tmp_path / "preds.txt").write_text("\n".join(preds) + "\n")
    r = run_cli("score", str(tmp_path / "preds.txt"), "--data", str(data), "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    import json
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["groups"]["all"]["n"] == len(test_lines)
    assert s["counts"]["all"]["exact"] == sum(1 for i in range(len(test_lines)) if i % 2)
    (tmp_path / "bad.txt").write_text("500 + 500 = 1000.00\n")
    r = run_cli("score", str(tmp_path / "bad.txt"), "--data", str(data))
    assert r.returncode == 2 and "not a problem of this task" in r.stderr


def test_typed_prompt_one_rule_for_what_people_type():
    from tinymath.tasks import typed_prompt

    assert typed_prompt("24+82") == "24 + 82 ="
    assert typed_prompt("  12   +   3") == "12 + 3 ="
    assert typed_prompt("5+5=") == "5 + 5 ="
    assert typed_prompt("36 / 3 =") == "36 / 3 ="
    assert typed_prompt("007 * 8") == "7 * 8 ="
    assert typed_prompt("what is 2") == "what is 2 ="  # another task's text: only trimmed and closed
    assert typed_prompt("  x =  ") == "x ="


def test_range_note_names_operands_never_trained_on():
    from tinymath.tasks import TaskSpec
    from tinymath.tasks.spec import range_note

    spec = TaskSpec()  # classic: 0-89, 90-99 held out
    assert range_note(spec, "24 + 82 =") is None
    assert range_note(spec, "91 - 45 =") == "91 is a held-out operand (never trained on)"
    assert range_note(spec, "100 + 1 =") == "100 is outside the trained range 0-89"
    assert range_note(TaskSpec(task="mod"), "100 + 1 =") is None
