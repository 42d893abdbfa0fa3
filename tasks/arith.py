"""Arithmetic problems: `A op B = R` with + - * / (the classic task), and counting.

The classic space (operands 0-99, four ops) has 40,000 - 100 problems, so it is
enumerated exactly; a space larger than ENUMERATE_LIMIT is sampled (n unique
problems, seeded). Problems with an operand in the holdout range are marked
region "holdout".
"""

from __future__ import annotations

import numpy as np

from .formats import AnswerFormat
from .problem import Problem
from .spec import TaskSpec

ENUMERATE_LIMIT = 2_000_000


def _values(lo: int, hi: int, holdout: tuple[int, int] | None) -> np.ndarray:
    vals = set(range(lo, hi + 1))
    if holdout is not None:
        vals |= set(range(holdout[0], holdout[1] + 1))
    return np.array(sorted(vals), dtype=np.int64)


def _is_held(x: int, holdout: tuple[int, int] | None) -> bool:
    return holdout is not None and holdout[0] <= x <= holdout[1]


def _problem(fmt: AnswerFormat, a: int, op: str, b: int, holdout: tuple[int, int] | None) -> Problem:
    ha, hb = _is_held(a, holdout), _is_held(b, holdout)
    held = "both" if ha and hb else "a" if ha else "b" if hb else ""
    return Problem(fmt.prompt(a, op, b), fmt.answer(a, op, b), op, "holdout" if held else "in", held)


def generate(spec: TaskSpec) -> list[Problem]:
    a_vals = _values(*spec.a_range, spec.holdout)
    b_vals = _values(*spec.b_range, spec.holdout)
    fmt = spec.answer_format()
    out: list[Problem] = []
    for op in spec.ops:
        bs = b_vals[b_vals != 0] if op == "/" else b_vals
        if len(bs) == 0:
            raise ValueError("task spec: division needs a nonzero second operand, but its range is only 0")
        if len(a_vals) * len(bs) <= ENUMERATE_LIMIT:
            pairs = [(int(a), int(b)) for a in a_vals for b in bs]
        else:
            pairs = _sample_pairs(a_vals, bs, spec.n, np.random.default_rng([spec.seed, ord(op)]))
        out += [_problem(fmt, a, op, b, spec.holdout) for a, b in pairs]
    return out


def _sample_pairs(a_vals: np.ndarray, b_vals: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """n distinct (a, b) pairs drawn uniformly, in draw order."""
    seen: dict[tuple[int, int], None] = {}
    while len(seen) < n:
        a = rng.choice(a_vals, size=n)
        b = rng.choice(b_vals, size=n)
        for pair in zip(a.tolist(), b.tolist()):
            seen.setdefault(pair)
            if len(seen) == n:
                break
    return list(seen)


def generate_count(spec: TaskSpec) -> list[Problem]:
    """Successor problems `a + 1 = a+1`: the first step of the counting curriculum."""
    a_vals = _values(*spec.a_range, spec.holdout)
    fmt = spec.answer_format()
    return [_problem(fmt, int(a), "+", 1, spec.holdout) for a in a_vals]


def original_lines(n: int = 90_000, seed: int = 0) -> list[str]:
    """The original TinyMath data set's distribution: first operand 0-89, second 1-89,
    ops uniform, n lines sampled with replacement, classic format."""
    if n <= 0:
        raise ValueError(f"count must be positive, got {n}")
    rng = np.random.default_rng(seed)
    fmt = AnswerFormat("classic")
    ops = rng.choice(list("+-*/"), size=n)
    a = rng.integers(0, 90, size=n)
    b = rng.integers(1, 90, size=n)
    return [f"{fmt.prompt(int(x), str(o), int(y))} {fmt.answer(int(x), str(o), int(y))}" for x, o, y in zip(a, ops, b)]
