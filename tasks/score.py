"""Scoring answers: exact, numeric and partial correctness, broken down by op, region and length.

Measures, for each problem:
- exact     the predicted string equals the expected one;
- numeric   the values are equal at the format's precision (`106` for `106.00`);
- digits    per-character accuracy aligned from the right (the ones digit with
            the ones digit), over the expected answer's characters;
- length    the predicted answer has the expected length;
- abs/rel   absolute and relative error of the (first) number, when both parse;
- chars     the predicted answer's length in characters (its cost: one token each).

Formats that show their work (steps, partial) are scored on their final answer,
the same bars as the classic format: exact, numeric, digits, length and the
errors compare the final answers. Each answer's steps are also recomputed from
the operands (tasks/steps.py): `steps_valid` is the share whose every step is
right, `right_wrong_steps` the share with the right final answer but a wrong
step (memorised, or lucky), and `first_wrong` counts the kind of each answer's
first wrong step (`unparsed` for an answer that does not follow the grammar,
which also scores wrong).

Groups: all; by op; by region (in / holdout); by op x region; by op x which operand is
held out (`/ held b`: the divisor 90-99; arith problems built by the task); by expected
answer length. Each rate has a 95% Wilson interval, so small groups show their
uncertainty.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from . import steps
from .formats import AnswerFormat
from .problem import Problem

WRONG_EXAMPLES = 5


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval always holds p (rounding could put 0 outside [2.8e-17, ...] for k = 0)
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def digit_accuracy(expected: str, predicted: str) -> float:
    """Share of the expected answer's characters matched, aligning both strings from the right."""
    if not expected:
        return float(predicted == expected)
    hits = sum(1 for e, p in zip(reversed(expected), reversed(predicted)) if e == p)
    return hits / len(expected)


@dataclass
class GroupStats:
    n: int = 0
    exact: int = 0
    numeric: int = 0
    length: int = 0
    digits: float = 0.0       # sum of per-problem digit accuracy
    parsed: int = 0           # predictions that parse as a number of the format
    abs_err: float = 0.0      # sums over parsed predictions
    rel_err: float = 0.0
    chars: int = 0            # sum of predicted answer lengths
    checked: int = 0          # answers whose steps were checked (formats that show their work)
    steps_valid: int = 0      # ... with every step right
    right_wrong_steps: int = 0  # ... with the right final answer but a wrong step
    first_wrong: dict[str, int] = field(default_factory=dict)  # kind of the first wrong step -> answers

    def add(self, exact: bool, numeric: bool, length: bool, digits: float, err: tuple[float, float] | None,
            chars: int = 0, check: steps.Check | None = None) -> None:
        self.n += 1
        self.exact += exact
        self.numeric += numeric
        self.length += length
        self.digits += digits
        self.chars += chars
        if err is not None:
            self.parsed += 1
            self.abs_err += err[0]
            self.rel_err += err[1]
        if check is not None:
            self.checked += 1
            self.steps_valid += check.valid
            self.right_wrong_steps += exact and not check.valid
            if check.wrong is not None:
                self.first_wrong[check.wrong] = self.first_wrong.get(check.wrong, 0) + 1

    def summary(self) -> dict:
        n = max(self.n, 1)
        lo, hi = wilson(self.exact, self.n)
        checked = self.checked or None
        return {
            "n": self.n, "exact": self.exact / n, "exact_ci95": [lo, hi], "numeric": self.numeric / n,
            "digits": self.digits / n, "length": self.length / n, "parsed": self.parsed,
            "mean_abs_err": self.abs_err / self.parsed if self.parsed else None,
            "mean_rel_err": self.rel_err / self.parsed if self.parsed else None,
            "mean_chars": self.chars / n,
            "steps_valid": self.steps_valid / checked if checked else None,
            "right_wrong_steps": self.right_wrong_steps / checked if checked else None,
            "first_wrong": dict(sorted(self.first_wrong.items(), key=lambda kv: -kv[1])) if checked else None,
        }


@dataclass
class ScoreReport:
    groups: dict[str, GroupStats] = field(default_factory=dict)
    wrong: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)  # op -> (prompt, expected, predicted)

    def group(self, name: str) -> GroupStats:
        return self.groups.setdefault(name, GroupStats())

    @property
    def exact(self) -> float:
        return self.groups["all"].summary()["exact"] if "all" in self.groups else 0.0

    def to_dict(self) -> dict:
        return {"groups": {k: v.summary() for k, v in self.groups.items()},
                "counts": {k: asdict(v) for k, v in self.groups.items()},
                "wrong": {k: [list(t) for t in v] for k, v in self.wrong.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        head = (f"{'group':<16}{'n':>7}  {'exact %':>8} {'95% CI':>13}  {'numeric':>7} {'digits':>7} {'length':>7} "
                f"{'abs err':>9} {'rel err':>9}")
        with_steps = any(g.checked for g in self.groups.values())
        if with_steps:
            head += f" {'chars':>6} {'steps ok':>8} {'right, bad steps':>16}"
        rows = [head, "-" * len(head)]
        for name, g in self.groups.items():
            s = g.summary()
            mae = "-" if s["mean_abs_err"] is None else f"{s['mean_abs_err']:.3g}"
            mre = "-" if s["mean_rel_err"] is None else f"{s['mean_rel_err']:.3g}"
            ci = f"{100 * s['exact_ci95'][0]:.1f}-{100 * s['exact_ci95'][1]:.1f}"
            row = (f"{name:<16}{s['n']:>7}  {100 * s['exact']:>8.2f} {ci:>13}  "
                   f"{100 * s['numeric']:>7.2f} {100 * s['digits']:>7.2f} {100 * s['length']:>7.2f} {mae:>9} {mre:>9}")
            if with_steps:
                row += f" {s['mean_chars']:>6.1f} {100 * (s['steps_valid'] or 0):>8.2f} {100 * (s['right_wrong_steps'] or 0):>16.2f}"
            rows.append(row)
        if with_steps and self.groups["all"].first_wrong:
            kinds = self.groups["all"].summary()["first_wrong"]
            rows.append("first wrong step: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
        for op, items in self.wrong.items():
            rows.append(f"wrong ({op}): " + "; ".join(f"{p} {e} (model: {w or '<empty>'})" for p, e, w in items))
        return "\n".join(rows)


def score(problems: Sequence[Problem], predictions: Sequence[str], fmt: AnswerFormat) -> ScoreReport:
    """Score `predictions[i]` against `problems[i].answer`."""
    if len(problems) != len(predictions):
        raise ValueError(f"{len(problems)} problems but {len(predictions)} predictions")
    report = ScoreReport()
    judge = AnswerFormat("classic") if fmt.shows_steps else fmt  # steps formats: judged on the final answer
    for prob, pred in zip(problems, predictions):
        pred = pred.strip()
        exp, got, check = prob.answer, pred, None
        if fmt.shows_steps:
            check = _check(prob, pred, fmt.name)
            exp, got = steps.final_answer(prob.answer) or prob.answer, check.final
        exact = got == exp
        numeric = exact or judge.same_value(exp, got)
        e, p = judge.parse(exp), judge.parse(got)
        err = None
        if e is not None and p is not None:
            diff = abs(p[0] - e[0])
            err = (diff, diff / max(abs(e[0]), 1.0))
        args = (exact, numeric, len(got) == len(exp), digit_accuracy(exp, got), err, len(pred), check)
        names = ["all", f"op {prob.op}", f"region {prob.region}", f"{prob.op} {prob.region}", f"length {len(exp)}"]
        if prob.held:  # an arith problem knows which operand is held out: did the model compute or guess?
            names.append(f"{prob.op} held {prob.held}")
        for name in names:
            report.group(name).add(*args)
        if not exact and len(report.wrong.setdefault(prob.op, [])) < WRONG_EXAMPLES:
            report.wrong[prob.op].append((prob.prompt, exp, pred))
    report.wrong = {k: v for k, v in report.wrong.items() if v}
    report.groups = dict(sorted(report.groups.items(), key=lambda kv: _group_order(kv[0])))
    return report


def _check(prob: Problem, answer: str, fmt: str) -> steps.Check:
    """The steps verdict on `answer` to `prob` (unparsed where the prompt is not `a op b =`)."""
    ops = steps.operands(prob.prompt)
    return steps.check(answer, *ops, fmt) if ops else steps.Check("", None, "unparsed")


def _group_order(name: str) -> tuple[int, str]:
    kind = name.split()[0]
    rank = {"all": 0, "op": 1, "region": 2, "length": 4}.get(kind, 3)
    if kind == "length":
        return rank, name.split()[1].zfill(6)
    return rank, name
