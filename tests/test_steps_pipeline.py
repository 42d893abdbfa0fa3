"""A model that shows its work, through the whole pipeline: trained on a steps format (the conftest's
steps_model), exported, scored by `tinymath eval` on its final answer and its steps' validity.
tests/test_runc_steps.py checks its answers through the C runner and the bindings against PyTorch.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from tinymath.export import read_bin  # noqa: E402
from tinymath.runc import Model  # noqa: E402
from tinymath.tasks import TaskSpec, build_splits  # noqa: E402
from tinymath.tokenizer import Tokenizer  # noqa: E402
from tinymath.train.greedy_eval import same_answer  # noqa: E402

from conftest import STEPS_TASK  # noqa: E402

TASK = STEPS_TASK  # the conftest's steps_model was trained on it


def test_context_fits_the_longest_steps_answer(steps_model):
    splits = build_splits(TaskSpec.from_dict(TASK))
    tok = Tokenizer.load(steps_model.parent / "tokenizer.bin")
    longest = max(len(tok.encode_problem(p.prompt, p.answer)[0]) for s in splits.values() for p in s)
    assert read_bin(steps_model).config.max_seq_len >= longest
    assert any(len(p.answer) > 40 for p in splits["test"])  # multiplication steps are long answers


def test_eval_scores_final_answer_and_steps(steps_model):
    from tinymath.study.evaluate import evaluate

    res = evaluate(steps_model, splits=("test",), progress=False)
    groups = res["by_split"]["test"].to_dict()["groups"]
    assert 0 <= groups["all"]["steps_valid"] <= 1 and "first_wrong" in groups["all"]
    assert res["answer_tokens"]["test"]["*"] > res["answer_tokens"]["test"]["+"] > 10
    # exact counts final answers: the same count the trainer's evaluation gives on the same answers
    problems = build_splits(TaskSpec.from_dict(TASK))["test"]
    with Model(steps_model) as m:
        answers = m.solve([p.prompt for p in problems], steps=True)
    right = same_answer(TaskSpec.from_dict(TASK).answer_format())
    assert groups["all"]["exact"] == sum(right(p.answer, a) for p, a in zip(problems, answers)) / len(problems)
    card = json.loads(steps_model.with_suffix(".json").read_text())
    assert card["task"]["format"] == "steps"


def test_same_answer_counts_the_final_answer():
    from tinymath.tasks.formats import AnswerFormat

    steps = same_answer(AnswerFormat("steps"))
    assert steps("4+2=6+0=6 2+8=10+0=10#106.00", "4+2=7+0=7 2+8=10+0=10#106.00")  # wrong step, right final
    assert not steps("4+2=6+0=6 2+8=10+0=10#106.00", "4+2=6+0=6 2+8=10+0=10#107.00")
    assert not steps("4+2=6+0=6 2+8=10+0=10#106.00", "garbage")
    classic = same_answer(AnswerFormat("classic"))
    assert classic("106.00", "106.00") and not classic("106.00", "106.0")
