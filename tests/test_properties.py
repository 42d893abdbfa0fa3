"""Property tests (hypothesis) of the line parser, the answer formats and the scorer.

tests/test_tasks.py checks that format-then-parse gives the value back for problems in the
generators' ranges; this file widens that (any integers, negative results, any widths), ties the
formats to the line parser, and throws arbitrary text at the parser, the formats and the scorer,
which must answer (a value, None, a ValueError naming the line) and never crash or mis-count.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

# no per-example deadline: the suite shares its cores (make test, fuzzers), and a slow example is not a bug
quick = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

from tinymath.tasks import FORMATS, AnswerFormat, Problem, parse_line, score
from tinymath.tasks.formats import int_result
from tinymath.tasks.score import digit_accuracy, wilson

NUMERIC = [f for f in FORMATS if f != "text"]
INTEGER = ["int", "reversed", "padded", "padded-reversed"]
OPS = "+-*/"

# text without line breaks (a line's content), and "words" that are its building blocks
line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)
word = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=12)


# ---- the line parser ---------------------------------------------------------------------------

@quick
@given(st.lists(word, min_size=1, max_size=5), st.lists(word, min_size=1, max_size=3), st.sampled_from(["", "\n", "\r\n"]))
def test_parse_line_splits_prompt_and_answer(prompt_words, answer_words, ending):
    prompt, answer = " ".join(prompt_words), " ".join(answer_words)
    assume(" = " not in answer and answer != "=" and not answer.startswith("= "))
    got = parse_line(f"{prompt} = {answer}{ending}")
    assert got == (prompt + " =", answer)


@quick
@given(line_text, st.sampled_from(["", "\n", "\r\n"]))
def test_parse_line_never_crashes_and_reassembles(text, ending):
    try:
        prompt, answer = parse_line(text + ending, where="f.txt:7")
    except ValueError as e:
        assert str(e).startswith("f.txt:7: ")
        return
    # what it returns reads back as the line it came from
    assert prompt.endswith(" =") and prompt[:-2].strip() and prompt == prompt.lstrip()
    assert answer and answer == answer.strip() and " = " not in answer
    assert f"{prompt} {answer}" == text
    assert parse_line(f"{prompt} {answer}") == (prompt, answer)


@quick
@given(st.integers(0, 10**6), st.sampled_from(OPS), st.integers(1, 10**6), st.sampled_from(NUMERIC),
       st.integers(0, 10**6))
def test_every_generated_line_parses_back(a, op, b, name, max_operand):
    fmt = AnswerFormat(name, max_operand=max_operand)
    p = Problem(fmt.prompt(a, op, b), fmt.answer(a, op, b), op)
    assert parse_line(p.line) == (p.prompt, p.answer)


# ---- answer formats -------------------------------------------------------------------------------

@quick
@given(st.integers(-10**9, 10**9), st.integers(0, 10**9), st.sampled_from(OPS), st.sampled_from(INTEGER),
       st.integers(0, 10**5))
def test_integer_formats_round_trip_any_values(x, y, op, name, max_operand):
    fmt = AnswerFormat(name, max_operand=max_operand)
    values = [abs(x), y] if op == "/" else [x]  # a quotient and remainder are never negative
    assert fmt.parse(fmt.numbers(values, op)) == tuple(float(v) for v in values)


@quick
@given(st.integers(0, 10**4), st.sampled_from(OPS), st.integers(1, 10**4), st.sampled_from(NUMERIC),
       st.integers(0, 10**4))
def test_format_then_parse_matches_the_arithmetic(a, op, b, name, max_operand):
    fmt = AnswerFormat(name, max_operand=max_operand)
    ans = fmt.answer(a, op, b)
    parsed = fmt.parse(ans)
    assert parsed is not None
    if name == "classic":
        exact = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
        assert abs(parsed[0] - exact) <= 0.005 + 1e-9 * abs(exact)
    else:
        assert parsed == tuple(float(v) for v in int_result(a, op, b))
    # an answer has no line structure of its own, and surrounding spaces do not change its value
    assert "\n" not in ans and " = " not in ans and ans == ans.strip()
    assert fmt.parse(f"  {ans}\t") == parsed
    assert fmt.same_value(ans, f" {ans} ")


@quick
@given(st.text(max_size=30), st.sampled_from(FORMATS))
def test_parse_never_crashes(text, name):
    parsed = AnswerFormat(name).parse(text)
    assert parsed is None or (isinstance(parsed, tuple) and all(isinstance(v, float) for v in parsed))


@quick
@given(st.text(max_size=12), st.text(max_size=12), st.sampled_from(FORMATS))
def test_same_value_is_reflexive_and_symmetric(x, y, name):
    fmt = AnswerFormat(name)
    assert fmt.same_value(x, x)
    assert fmt.same_value(x, y) == fmt.same_value(y, x)


@quick
@given(st.integers(-10**6, 10**6), st.integers(0, 99))
def test_classic_values_match_at_two_decimals(whole, cents):
    fmt = AnswerFormat("classic")
    value = f"{whole}.{cents:02d}"
    assert fmt.same_value(value, value) and fmt.parse(value) is not None
    other = f"{whole}.{(cents + 1) % 100:02d}" if cents != 99 else f"{whole}.00"
    assert not fmt.same_value(value, other)


# ---- the scorer -------------------------------------------------------------------------------------

def problems_strategy():
    return st.lists(st.tuples(st.integers(0, 120), st.sampled_from(OPS), st.integers(1, 120),
                              st.sampled_from(["in", "holdout"])), min_size=1, max_size=30)


def make_problems(items, fmt):
    return [Problem(fmt.prompt(a, op, b), fmt.answer(a, op, b), op, region) for a, op, b, region in items]


@quick
@given(problems_strategy(), st.sampled_from(NUMERIC))
def test_perfect_predictions_score_one_everywhere(items, name):
    fmt = AnswerFormat(name, max_operand=120)
    probs = make_problems(items, fmt)
    r = score(probs, [f" {p.answer}\n" for p in probs], fmt)  # surrounding whitespace is stripped
    for g in r.groups.values():
        s = g.summary()
        assert s["exact"] == s["numeric"] == s["digits"] == s["length"] == 1.0
        assert s["mean_abs_err"] == 0.0 and s["parsed"] == s["n"]
    assert r.wrong == {}


@quick
@given(problems_strategy(), st.data(), st.sampled_from(NUMERIC))
def test_any_predictions_give_consistent_counts(items, data, name):
    fmt = AnswerFormat(name, max_operand=120)
    probs = make_problems(items, fmt)
    preds = data.draw(st.lists(st.one_of(st.text(max_size=10), st.sampled_from([p.answer for p in probs])),
                               min_size=len(probs), max_size=len(probs)))
    r = score(probs, preds, fmt)
    n = len(probs)
    assert r.groups["all"].n == n
    # each breakdown partitions the problems
    for kind in ("op", "region", "length"):
        assert sum(g.n for k, g in r.groups.items() if k.split()[0] == kind) == n
    assert sum(g.n for k, g in r.groups.items() if k.split()[0] in OPS) == n
    for g in r.groups.values():
        assert g.exact <= g.numeric <= g.n and g.length <= g.n and g.parsed <= g.n
        s = g.summary()
        for key in ("exact", "numeric", "digits", "length"):
            assert 0.0 <= s[key] <= 1.0
        lo, hi = s["exact_ci95"]
        assert 0.0 <= lo <= s["exact"] <= hi <= 1.0
        for key in ("mean_abs_err", "mean_rel_err"):
            assert s[key] is None or (s[key] >= 0 and math.isfinite(s[key]))
    n_exact = sum(p.strip() == q.answer for p, q in zip(preds, probs))
    assert r.groups["all"].exact == n_exact
    assert sum(len(v) for v in r.wrong.values()) <= n - n_exact
    # the report serialises, and the same pairs in another order count the same
    json.loads(r.to_json())
    order = list(range(n))
    random.Random(n).shuffle(order)
    r2 = score([probs[i] for i in order], [preds[i] for i in order], fmt)
    assert {k: (g.n, g.exact, g.numeric, g.length, g.parsed) for k, g in r.groups.items()} == \
           {k: (g.n, g.exact, g.numeric, g.length, g.parsed) for k, g in r2.groups.items()}


@quick
@given(st.text("0123456789.- r", max_size=10), st.text("0123456789.- r", max_size=10))
def test_digit_accuracy_bounds(e, p):
    d = digit_accuracy(e, p)
    assert 0.0 <= d <= 1.0 and (d == 1.0) == (p.endswith(e) if e else p == e)


@quick
@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_wilson_interval_holds_the_rate(k, n):
    assume(k <= n)
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= hi <= 1.0
    if n:
        assert lo <= k / n <= hi  # exactly: k = 0 gives lo == 0.0, k = n gives hi == 1.0
    assert wilson(0, max(n, 1))[0] == 0.0 and wilson(max(n, 1), max(n, 1))[1] == 1.0


def test_score_refuses_mismatched_lengths():
    fmt = AnswerFormat("classic")
    with pytest.raises(ValueError, match="1 problems but 0 predictions"):
        score(make_problems([(1, "+", 2, "in")], fmt), [], fmt)
