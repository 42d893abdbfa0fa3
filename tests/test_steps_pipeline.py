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


def test_c_engines_evaluator_scores_steps_answers_whole(steps_model):
    """The C training engine's evaluator (runc's batch engine) scores a steps answer on its whole text:
    problems whose expected answer is the model's own well-formed answer are all right, and it
    agrees with the PyTorch evaluator on the task's own problems."""
    from tinymath.tasks import Problem
    from tinymath.tasks.steps import final_answer
    from tinymath.train.data import encode
    from tinymath.train.greedy_eval import evaluate
    from tinymath.train.model import ModelConfig, Transformer
    from tinymath.train.runc_eval import RuncEvaluator

    bm = read_bin(steps_model)
    mcfg = ModelConfig.from_dict(bm.config.model_config())
    weights = {k: v.copy() for k, v in bm.state_dict().items()}
    tok_path = steps_model.parent / "tokenizer.bin"
    tok = Tokenizer.load(tok_path)
    spec = TaskSpec.from_dict(TASK)
    fmt = spec.answer_format()
    problems = build_splits(spec)["val"] + build_splits(spec)["test"]
    with Model(steps_model) as m:
        whole = m.solve([p.prompt for p in problems], steps=True)
    own = [Problem(p.prompt, a, p.op) for p, a in zip(problems, whole) if final_answer(a) is not None]
    assert own
    runc_eval = RuncEvaluator(mcfg, tok_path, fmt)
    assert runc_eval.evaluate(weights, encode(own, tok))["acc"] == 1.0
    model = Transformer(mcfg).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    enc = encode(problems, tok)
    assert runc_eval.evaluate(weights, enc)["acc"] == evaluate(model, enc, tok, torch.device("cpu"), fmt=fmt)["acc"]
