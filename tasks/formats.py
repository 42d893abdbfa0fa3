"""Answer formats: how a problem and its result are written as text, and read back.

The format is one of the strongest levers on how small a model can be, so each
is a first-class option:

- classic   `24 + 82 = 106.00`, `27 / 86 = 0.31`: the original TinyMath data set's
            rule, f"{result:.2f}" with quotients first rounded by round(a / b, 2),
            float quirks included (`1 / 8 = 0.12`, `67 / 8 = 8.38`).
- int       integers; division as quotient and remainder: `27 / 4 = 6 r 3`.
- reversed  as int, each number's digits least-significant first (sign kept in
            front): `24 + 82 = 601`, `58 / 5 = 11 r 3`.
- padded    as int, operands and each answer number zero-padded to a fixed width
            set by the largest operand: `07 + 05 = 012`.
- padded-reversed  both: operands zero-padded, each answer number zero-padded and
            least-significant first: `07 + 05 = 210`, `18 - 25 = -70`. Every
            answer digit then stands at a fixed distance from the operand digits it
            needs, and the carry it needs comes from digits already written
            (the layout of the smallest published addition models).
- text      free text (tasks whose answers are not numbers of one shape).

Formats that show their work (tasks/steps.py) write steps, then `#`, then the
classic answer; they are scored on that final answer:

- steps     digit-level steps: `24 + 82 = 4+2=6+0=6 2+8=10+0=10#106.00`.
- partial   coarser steps: `76 * 56 = 76*6=456 76*50=3800+456=4256#4256.00`.
- steps-msd  `steps` with the columns most significant first (a digit-order lever):
            `24 + 82 = 2+8=10+0=10 4+2=6+0=6#106.00`.
- steps-lsd  `steps` with long division's numbers least significant first (the same lever
            for `/`): `27 / 12 = 2q0:0 72q0-21=51q1-21=3q2:2 ...#2.25`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OPS = "+-*/"

_CLASSIC = re.compile(r"-?\d+\.\d\d")
_INT = re.compile(r"-?\d+")
_QR = re.compile(r"(\d+) r (\d+)")


def classic_result(a: int, op: str, b: int) -> str:
    """The original data set's answer string for `a op b`."""
    if op == "+":
        r: float = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    elif op == "/":
        r = round(a / b, 2)
    else:
        raise ValueError(f"unknown op {op!r} (known: {' '.join(OPS)})")
    return f"{r:.2f}"


def int_result(a: int, op: str, b: int) -> list[int]:
    """Result as integers: [value], or [quotient, remainder] for division."""
    if op == "+":
        return [a + b]
    if op == "-":
        return [a - b]
    if op == "*":
        return [a * b]
    if op == "/":
        return [a // b, a % b]
    raise ValueError(f"unknown op {op!r} (known: {' '.join(OPS)})")


def _rev(n: int, width: int = 0) -> str:
    """n's digits least significant first (zero-padded to width first), the sign kept in front."""
    s = str(abs(n)).zfill(width)[::-1]
    return "-" + s if n < 0 else s


def _unrev(s: str) -> int:
    return -int(s[1:][::-1]) if s.startswith("-") else int(s[::-1])


def _pad(n: int, width: int) -> str:
    s = str(abs(n)).zfill(width)
    return "-" + s if n < 0 else s


@dataclass(frozen=True)
class AnswerFormat:
    """Writes and parses one answer format. `max_operand` sets the padded widths."""

    name: str
    max_operand: int = 99

    def __post_init__(self) -> None:
        if self.name not in FORMATS + STEP_FORMATS:
            raise ValueError(f"unknown answer format {self.name!r} (known: {', '.join(FORMATS + STEP_FORMATS)})")

    @property
    def shows_steps(self) -> bool:
        """The answer is steps then a final classic answer (tasks/steps.py)."""
        return self.name in STEP_FORMATS

    # ---- writing -----------------------------------------------------------------
    def operand(self, x: int) -> str:
        return str(x).zfill(len(str(self.max_operand))) if self.name in ("padded", "padded-reversed") else str(x)

    def prompt(self, a: int, op: str, b: int) -> str:
        return f"{self.operand(a)} {op} {self.operand(b)} ="

    def widths(self, op: str) -> list[int]:
        """Padded widths of each answer number for `op`, from the largest operand."""
        m = self.max_operand
        return {"+": [len(str(2 * m))], "-": [len(str(m))], "*": [len(str(m * m))],
                "/": [len(str(m)), len(str(max(m - 1, 0)))]}[op]

    def numbers(self, values: list[int], op: str) -> str:
        """Write integer result(s) in this format (int, reversed, padded or padded-reversed)."""
        if self.name == "reversed":
            parts = [_rev(v) for v in values]
        elif self.name == "padded":
            parts = [_pad(v, w) for v, w in zip(values, self.widths(op))]
        elif self.name == "padded-reversed":
            parts = [_rev(v, w) for v, w in zip(values, self.widths(op))]
        else:
            parts = [str(v) for v in values]
        return " r ".join(parts)

    def answer(self, a: int, op: str, b: int) -> str:
        if self.name == "classic":
            return classic_result(a, op, b)
        if self.shows_steps:
            from .steps import answer  # steps.py builds on this module

            return answer(a, op, b, self.name)
        if self.name == "text":
            raise ValueError("the text format has no arithmetic answers")
        return self.numbers(int_result(a, op, b), op)

    # ---- reading -----------------------------------------------------------------
    def parse(self, answer: str) -> tuple[float, ...] | None:
        """The number(s) an answer string stands for, or None if it is not well formed
        (a steps answer stands for its final answer)."""
        s = answer.strip()
        if self.shows_steps:
            from .steps import final_answer

            final = final_answer(s)
            return None if final is None else (float(final),)
        if self.name == "classic":
            return (float(s),) if _CLASSIC.fullmatch(s) else None
        if self.name == "text":
            try:
                return (float(s),)
            except ValueError:
                return None
        m = _QR.fullmatch(s)
        parts = [m.group(1), m.group(2)] if m else [s] if _INT.fullmatch(s) else None
        if parts is None:
            return None
        if self.name in ("reversed", "padded-reversed"):
            return tuple(float(_unrev(p)) for p in parts)
        return tuple(float(int(p)) for p in parts)

    def is_right(self, expected: str, predicted: str) -> bool:
        """Exact match as the bars count it: the whole answer, or for a format that shows its work
        the final answer of a well-formed answer (its steps may still be wrong; score() tells)."""
        if not self.shows_steps:
            return predicted.strip() == expected.strip()
        from .steps import final_answer

        got = final_answer(predicted.strip())
        return got is not None and got == final_answer(expected.strip())

    def same_value(self, expected: str, predicted: str) -> bool:
        """Numeric match: equal values at the format's precision (text: equal strings)."""
        e, p = self.parse(expected), self.parse(predicted)
        if e is None or p is None:
            return expected.strip() == predicted.strip()
        if self.name == "classic" or self.shows_steps:
            return round(e[0] * 100) == round(p[0] * 100)
        return e == p


FORMATS = ("classic", "int", "reversed", "padded", "padded-reversed", "text")
"""Direct answers: the answer is the result itself."""
STEP_FORMATS = ("steps", "partial", "steps-msd", "steps-lsd")
"""Answers that show their work, then the classic answer (tasks/steps.py)."""
