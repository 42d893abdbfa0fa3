"""Scoring answers: exact, numeric and partial correctness, broken down by op, region and length.

Measures, for each problem:
- exact     the predicted string equals the expected one;
- numeric   the values are equal at the format's precision (`106` for `106.00`);
- digits    per-character accuracy aligned from the right (the ones digit with
            the ones digit), over the expected answer's characters;
- length    the predicted answer has the expected length;
- abs/rel   absolute and relative error of the (first) number, when both parse.

Groups: all; by op; by region (in / holdout); by op x region; by expected
answer length. Each rate has a 95% Wilson interval, so small groups show their
uncertainty.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

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

    def add(self, exact: bool, numeric: bool, length: bool, digits: float, err: tuple[float, float] | None) -> None:
        self.n += 1
        self.exact += exact
        self.numeric += numeric
        self.length += length
        self.digits += digits
        if err is not None:
            self.parsed += 1
            self.abs_err += err[0]
            self.rel_err += err[1]

    def summary(self) -> dict:
        n = max(self.n, 1)
        lo, hi = wilson(self.exact, self.n)
        return {
            "n": self.n, "exact": self.exact / n, "exact_ci95": [lo, hi], "numeric": self.numeric / n,
            "digits": self.digits / n, "length": self.length / n, "parsed": self.parsed,
            "mean_abs_err": self.abs_err / self.parsed if self.parsed else None,
            "mean_rel_err": self.rel_err / self.parsed if self.parsed else None,
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
        rows = [head, "-" * len(head)]
        for name, g in self.groups.items():
            s = g.summary()
            mae = "-" if s["mean_abs_err"] is None else f"{s['mean_abs_err']:.3g}"
            mre = "-" if s["mean_rel_err"] is None else f"{s['mean_rel_err']:.3g}"
            ci = f"{100 * s['exact_ci95'][0]:.1f}-{100 * s['exact_ci95'][1]:.1f}"
            rows.append(f"{name:<16}{s['n']:>7}  {100 * s['exact']:>8.2f} {ci:>13}  "
                        f"{100 * s['numeric']:>7.2f} {100 * s['digits']:>7.2f} {100 * s['length']:>7.2f} {mae:>9} {mre:>9}")
        for op, items in self.wrong.items():
            rows.append(f"wrong ({op}): " + "; ".join(f"{p} {e} (model: {w or '<empty>'})" for p, e, w in items))
        return "\n".join(rows)


def score(problems: Sequence[Problem], predictions: Sequence[str], fmt: AnswerFormat) -> ScoreReport:
    """Score `predictions[i]` against `problems[i].answer`."""
    if len(problems) != len(predictions):
        raise ValueError(f"{len(problems)} problems but {len(predictions)} predictions")
    report = ScoreReport()
    for prob, pred in zip(problems, predictions):
        pred = pred.strip()
        exp = prob.answer
        exact = pred == exp
        numeric = exact or fmt.same_value(exp, pred)
        e, p = fmt.parse(exp), fmt.parse(pred)
        err = None
        if e is not None and p is not None:
            diff = abs(p[0] - e[0])
            err = (diff, diff / max(abs(e[0]), 1.0))
        args = (exact, numeric, len(pred) == len(exp), digit_accuracy(exp, pred), err)
        for name in ("all", f"op {prob.op}", f"region {prob.region}", f"{prob.op} {prob.region}", f"length {len(exp)}"):
            report.group(name).add(*args)
        if not exact and len(report.wrong.setdefault(prob.op, [])) < WRONG_EXAMPLES:
            report.wrong[prob.op].append((prob.prompt, exp, pred))
    report.wrong = {k: v for k, v in report.wrong.items() if v}
    report.groups = dict(sorted(report.groups.items(), key=lambda kv: _group_order(kv[0])))
    return report


def _group_order(name: str) -> tuple[int, str]:
    kind = name.split()[0]
    rank = {"all": 0, "op": 1, "region": 2, "length": 4}.get(kind, 3)
    if kind == "length":
        return rank, name.split()[1].zfill(6)
    return rank, name
