"""`tinymath score`: score a file of predicted `PROMPT = ANSWER` lines against a task's answers."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinymath import fileio

from .problem import Problem
from .score import score
from .spec import TaskSpec, build_splits


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("predictions", help="a file of `PROMPT = ANSWER` lines (the model's answers; an answer may be empty)")
    p.add_argument("--data", required=True, help="the folder `tinymath gen` wrote (its spec.json rebuilds the answers)")
    p.add_argument("--json", help="also write the scores as JSON to this path")


def read_predictions(path: Path) -> list[tuple[str, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            head, sep, answer = text.rpartition(" =")
            if not sep:
                raise ValueError(f"{path}:{no}: expected 'PROMPT = ANSWER', got {text!r}")
            out.append((head + " =", answer.strip()))
    return out


def run(args: argparse.Namespace) -> int:
    spec = TaskSpec.load(Path(args.data) / "spec.json")
    by_prompt: dict[str, Problem] = {p.prompt: p for split in build_splits(spec).values() for p in split}
    problems, answers = [], []
    for no, (prompt, answer) in enumerate(read_predictions(Path(args.predictions)), 1):
        if prompt not in by_prompt:
            raise ValueError(f"{args.predictions}: prediction {no} is for {prompt!r}, which is not a problem of this task")
        problems.append(by_prompt[prompt])
        answers.append(answer)
    if not problems:
        raise ValueError(f"{args.predictions}: no predictions")
    report = score(problems, answers, spec.answer_format())
    print(report.table())
    if args.json:
        fileio.write_text(args.json, report.to_json())
    return 0
