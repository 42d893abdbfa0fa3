"""Fact coverage: has training written every fact that a held-out problem's steps need?

A steps answer states facts (`steps.facts`: `7*6=42`, `5+0=5`, `67/8=8r3`, each
its inputs and its output, wherever in the answer it stands). A held-out problem
is covered when every fact of its steps also occurs in the steps of some
training problem. A layout whose held-out problems are not covered asks the
model for facts it never wrote; measure this before training a layout.

`python -m tinymath.tasks.coverage` prints it for the classic split (train: every
in-range problem, operands 0-89, an upper bound on what a model sees; holdout:
an operand in 90-99), per format and op: the covered share of the held-out
problems, then by which operand is held out, then against the facts of all four
ops' training (one model learns them all), and the mean answer length.
"""

from __future__ import annotations

from statistics import mean
from typing import Iterable, Sequence

from . import steps
from .formats import STEP_FORMATS
from .problem import Problem
from .spec import TaskSpec, build_splits


def _operands(prob: Problem) -> tuple[int, str, int]:
    ops = steps.operands(prob.prompt)
    if ops is None:
        raise ValueError(f"not an arithmetic prompt: {prob.prompt!r}")
    return ops


def problem_facts(prob: Problem, fmt: str) -> set[steps.Fact]:
    """The facts of `prob`'s answer written in steps format `fmt`."""
    return steps.facts(steps.answer(*_operands(prob), fmt), fmt)


def trained_facts(train: Iterable[Problem], fmt: str) -> set[steps.Fact]:
    """Every fact the training problems' steps write."""
    seen: set[steps.Fact] = set()
    for p in train:
        seen |= problem_facts(p, fmt)
    return seen


def fact_coverage(train: Iterable[Problem], holdout: Sequence[Problem], fmt: str) -> float:
    """Share of `holdout` problems whose every step fact occurs in some `train` problem's steps."""
    if not holdout:
        raise ValueError("no held-out problems to cover")
    seen = trained_facts(train, fmt)
    return sum(problem_facts(p, fmt) <= seen for p in holdout) / len(holdout)


def coverage_table(spec: TaskSpec | None = None) -> str:
    """Coverage and mean answer length per steps format and op for an arith spec (default: the classic task)."""
    spec = spec or TaskSpec()
    if spec.holdout is None:
        raise ValueError("task spec: coverage needs a holdout range")
    lo = spec.holdout[0]
    splits = build_splits(spec)
    train = [p for p in splits["train"] + splits["val"] + splits["test"] if p.region != "read"]
    rows = [f"{'format':<8} {'op':<3} {'covered':>8} {'a held':>7} {'b held':>7} {'both':>6} "
            f"{'all-ops train':>13} {'chars':>6}"]
    for fmt in STEP_FORMATS:
        everything = trained_facts(train, fmt)
        for op in spec.ops:
            held = [p for p in splits["holdout"] if p.op == op]
            seen = trained_facts((p for p in train if p.op == op), fmt)
            by: dict[str, list[bool]] = {"a": [], "b": [], "both": []}
            for p in held:
                a, _, b = _operands(p)
                by["both" if a >= lo and b >= lo else "a" if a >= lo else "b"].append(problem_facts(p, fmt) <= seen)
            shares = [f"{100 * mean(v):.1f}" if v else "-" for v in by.values()]
            covered = mean(x for v in by.values() for x in v)
            wide = mean(problem_facts(p, fmt) <= everything for p in held)
            chars = mean(len(steps.answer(*_operands(p), fmt)) for p in train + held if p.op == op)
            rows.append(f"{fmt:<8} {op:<3} {100 * covered:>8.1f} {shares[0]:>7} {shares[1]:>7} {shares[2]:>6} "
                        f"{100 * wide:>13.1f} {chars:>6.1f}")
    return "\n".join(rows)


if __name__ == "__main__":
    print(coverage_table())
