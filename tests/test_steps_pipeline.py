"""A model that shows its work, through the whole pipeline: trained on a steps format, exported,
answered by the C runner one at a time and by the batch engine, scored by `tinymath eval`.

The trained model is small and briefly trained; what must hold whatever it learned: the C engine's
greedy answers (steps and final answer) are PyTorch's token for token, and the scores count the
final answer and the steps' validity.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tinymath.export import export_checkpoint, read_bin  # noqa: E402
from tinymath.runc import Model  # noqa: E402
from tinymath.tasks import TaskSpec, build_splits  # noqa: E402
from tinymath.tasks.steps import MARK  # noqa: E402
from tinymath.tokenizer import Tokenizer  # noqa: E402
from tinymath.train.greedy_eval import same_answer  # noqa: E402
from tinymath.train.model import ModelConfig, Transformer  # noqa: E402

TASK = {"task": "arith", "ops": "+*", "lo": 0, "hi": 19, "holdout": None, "format": "steps"}


@pytest.fixture(scope="module")
def steps_model(tmp_path_factory) -> Path:
    from tinymath.train.config import TrainConfig
    from tinymath.train.train import train

    out = tmp_path_factory.mktemp("steps")
    cfg = TrainConfig.from_dict({"out_dir": str(out), "task": TASK, "progress": False,
                                 "model": {"dim": 32, "n_layers": 2, "n_heads": 4}, "max_steps": 300,
                                 "eval_every": 300, "batch_size": 64, "lr": 1e-2, "warmup_steps": 20})
    summary = train(cfg)
    assert summary["metrics"]["val_n"] > 0
    export_checkpoint(out / "ckpt.pt", "v1", out / "model.bin")
    return out / "model.bin"


def torch_answers(model_path: Path, prompts: list[str]) -> list[str]:
    bm = read_bin(model_path)
    model = Transformer(ModelConfig.from_dict(bm.config.model_config())).eval()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in bm.state_dict().items()})
    tok = Tokenizer.load(model_path.parent / "tokenizer.bin")
    ids = [tok.encode_prompt(p) for p in prompts]
    out = model.generate_greedy(ids, max_new=model.cfg.max_seq_len - max(len(x) for x in ids), stop=tok.eos_id)
    return [tok.decode_answer(o) for o in out]


def test_context_fits_the_longest_steps_answer(steps_model):
    splits = build_splits(TaskSpec.from_dict(TASK))
    tok = Tokenizer.load(steps_model.parent / "tokenizer.bin")
    longest = max(len(tok.encode_problem(p.prompt, p.answer)[0]) for s in splits.values() for p in s)
    assert read_bin(steps_model).config.max_seq_len >= longest
    assert any(len(p.answer) > 40 for p in splits["test"])  # multiplication steps are long answers


def test_c_engines_answer_as_pytorch(steps_model):
    splits = build_splits(TaskSpec.from_dict(TASK))
    prompts = [p.prompt for p in splits["val"] + splits["test"]]
    with Model(steps_model) as m:
        batch = m.solve(prompts, steps=True)
        single = m.solve(prompts, batch=False, steps=True)
    assert batch == single
    assert batch == torch_answers(steps_model, prompts)
    assert sum(MARK in a for a in batch) > len(batch) // 2  # it writes steps, then a final answer


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
