"""Modular arithmetic: `a op b mod p = c` for a, b in 0..p-1, ops + - * (exhaustive).

The grokking studies' task: p = 97 or 113; every pair is enumerated, no holdout
range (generalisation is measured on the unseen pairs of the test split).
"""

from __future__ import annotations

from .problem import Problem
from .spec import TaskSpec


def generate(spec: TaskSpec) -> list[Problem]:
    p = spec.modulus
    fmt = spec.answer_format()
    if fmt.name in ("classic", "text"):
        raise ValueError(f"task spec: mod answers are integers; format {fmt.name!r} does not apply (use int, reversed, padded or padded-reversed)")
    calc = {"+": lambda a, b: (a + b) % p, "-": lambda a, b: (a - b) % p, "*": lambda a, b: (a * b) % p}
    return [Problem(f"{fmt.operand(a)} {op} {fmt.operand(b)} mod {p} =", fmt.numbers([calc[op](a, b)], "-"), op)
            for op in spec.ops for a in range(p) for b in range(p)]
