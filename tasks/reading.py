"""Reading problems: operand digits copied into the `steps` layout, with no arithmetic in them.

Under the strict holdout (no operand 90-99 in training) a model has never copied a 9 into a slot
that takes an operand's tens digit, and that copy is where most held-out answers first go wrong
(RESULTS.md section 8). A reading problem shows the numbers 0-99, held-out ones included, in the
slots an op's steps put them in, and masks every number the steps compute with one `.`, so the
model may learn that 93 exists, never what 93 * 45 is. Models trained with them are reported apart
from the strict holdout (issue 22's reading exposure). The prompt starts with `?`, so no reading
problem shares a prompt with a problem of the task:

    ? 93 * 45 =   3*5=. 9*5=. 3*4=. 9*4=.                   the lattice's digit products
    ? 93 + 45 =   3+5=.+.=. 9+4=.+.=.                       the columns
    ? 93 - 45 =   9.4 13-5=.-.=. 19-4=.-.=.                 the columns, the comparison masked
    ? 93 / 45 =   9q0-45=.q.:. .3q0-45=.q.:. .0q0-45=.q.:.  one tally per piece brought down
                  .0q0-45=.q.:. .0q0-45=.q.:.               (one subtraction each, counts masked)

Nothing in a reading answer depends on the problem's result: the number of steps follows the
operands' digit counts, `-` puts either operand on top of its columns by a coin toss (the steps put
the larger there, which would tell the sign), and `/` writes one subtraction per tally whatever the quotient
digit. Reading problems join the training split only; they are never scored.
"""

from __future__ import annotations

import numpy as np

from .problem import Problem
from .steps import DECIMALS, _digits, deciding_digits

MARK = "?"   # the prompt's first token: a reading problem, not arithmetic
OP = "read"  # the problems' op label (never scored)


def _add(a: int, b: int) -> list[str]:
    n = max(len(str(a)), len(str(b)))
    return [f"{x}+{y}=.+.=." for x, y in zip(_digits(a, n), _digits(b, n))]


def _sub(a: int, b: int, a_on_top: bool) -> list[str]:
    n = max(len(str(a)), len(str(b)))
    top, low = (a, b) if a_on_top else (b, a)
    return [".".join(deciding_digits(a, b, n))] + [f"1{x}-{y}=.-.=." for x, y in zip(_digits(top, n), _digits(low, n))]


def _mul(a: int, b: int) -> list[str]:
    return [f"{x}*{y}=." for y in _digits(b) for x in _digits(a)]


def _div(a: int, b: int) -> list[str]:
    pieces = _digits(a)[::-1] + [0] * DECIMALS
    return [f"{'' if i == 0 else '.'}{p}q0-{b}=.q.:." for i, p in enumerate(pieces)]


def answer(a: int, op: str, b: int, a_on_top: bool = True) -> str:
    """The reading answer of `a op b` (a_on_top: which operand `-` writes on top)."""
    if op == "+":
        steps = _add(a, b)
    elif op == "-":
        steps = _sub(a, b, a_on_top)
    elif op == "*":
        steps = _mul(a, b)
    elif op == "/":
        steps = _div(a, b)
    else:
        raise ValueError(f"unknown op {op!r} (known: + - * /)")
    return " ".join(steps)


def problems(n: int, ops: str, lo: int, hi: int, seed: int) -> list[Problem]:
    """n distinct reading problems, operands lo..hi and ops drawn uniformly (seeded)."""
    if n <= 0:
        return []
    space = len(ops) * (hi - lo + 1) ** 2
    if n > space // 2:
        raise ValueError(f"task spec: reading = {n} asks for more than half of the {space} reading prompts "
                         f"of ops {ops!r} on {lo}-{hi}")
    rng = np.random.default_rng([seed, 0x7EAD])
    out: dict[str, Problem] = {}
    while len(out) < n:
        op = ops[int(rng.integers(len(ops)))]
        a, b = (int(x) for x in rng.integers(lo, hi + 1, size=2))
        on_top = bool(rng.integers(2))
        if op == "/" and b == 0:
            continue
        prompt = f"{MARK} {a} {op} {b} ="
        out.setdefault(prompt, Problem(prompt, answer(a, op, b, on_top), OP, "read"))
    return list(out.values())
