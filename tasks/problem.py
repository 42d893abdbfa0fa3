"""A problem: a prompt the model is given and the answer it must produce.

On disk a problem is one line, `PROMPT ANSWER`, where the prompt ends with " ="
(`24 + 82 = 106.00`). The answer is everything after the last " = ".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TYPED = re.compile(r"\s*(\d+)\s*([-+*/])\s*(\d+)\s*=?\s*")


@dataclass(frozen=True)
class Problem:
    prompt: str           # "24 + 82 =" (ends with " =")
    answer: str           # "106.00"
    op: str = "?"         # "+", "-", "*", "/", or a task's own label (a dmmath module, "mod+")
    region: str = "in"    # "in": operands in the trained range; "holdout": an operand in the held-out range
    held: str = field(default="", compare=False)  # which operands are held out: "a", "b", "both" or ""

    @property
    def line(self) -> str:
        return f"{self.prompt} {self.answer}"


def parse_line(line: str, where: str = "line") -> tuple[str, str]:
    """Split `PROMPT = ANSWER` into ("PROMPT =", "ANSWER"); ValueError naming `where` if malformed."""
    text = line.rstrip("\r\n")
    head, sep, answer = text.rpartition(" = ")
    if not sep or not head.strip() or not answer.strip():
        raise ValueError(f"{where}: expected 'PROMPT = ANSWER', got {text!r}")
    if answer != answer.strip() or head != head.lstrip():
        raise ValueError(f"{where}: stray spaces around the prompt or answer in {text!r}")
    return head + " =", answer


def op_of(prompt: str) -> str:
    """The arithmetic operator of a `A op B =` prompt, or "?" for anything else."""
    parts = prompt.split()
    if len(parts) >= 4 and parts[1] in ("+", "-", "*", "/"):
        return parts[1]
    return "?"


def typed_prompt(text: str) -> str:
    """What a person types, in the prompt form the models were trained on: `24+82`, `  12   +   3`
    and `5+5=` become `24 + 82 =`, `12 + 3 =`, `5 + 5 =`. Text of another shape is trimmed and
    given its closing ` =` (a model of another task reads it as it is)."""
    m = _TYPED.fullmatch(text)
    if m:
        return f"{int(m.group(1))} {m.group(2)} {int(m.group(3))} ="
    text = text.strip()
    return text if text.endswith("=") else (text + " =" if text else "=")
