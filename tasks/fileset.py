"""The file task: any text file of `PROMPT = ANSWER` lines.

Duplicate lines are merged (a problem in two splits would leak test into
training); the same prompt with two different answers, or a malformed line, is
an error naming the file and line number. Blank lines are skipped.
"""

from __future__ import annotations

from pathlib import Path

from .problem import Problem, op_of, parse_line
from .spec import TaskSpec


def read_problems(path: str | Path) -> list[Problem]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file not found: {path}")
    answers: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            prompt, answer = parse_line(line, where=f"{path}:{no}")
            if prompt in answers and answers[prompt][0] != answer:
                raise ValueError(f"{path}:{no}: {prompt!r} answered {answer!r}, but "
                                 f"{answers[prompt][0]!r} on line {answers[prompt][1]}")
            answers.setdefault(prompt, (answer, no))
    if not answers:
        raise ValueError(f"{path}: no problems in the file")
    return [Problem(p, a, op_of(p)) for p, (a, _) in answers.items()]


def generate(spec: TaskSpec) -> list[Problem]:
    return read_problems(spec.path)  # type: ignore[arg-type]  # validate() ensures a path
