"""The C engine against PyTorch on the shipped model's real trained weights.

The weights come from models/tinymath.bin through the numpy reader, so PyTorch
and C run exactly the same numbers: greedy answers must be identical on 400
unseen problems, and the int8 file must keep fp32's accuracy and nearly all its right answers.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tinymath.export import read_bin
from tinymath.runc import Model
from tinymath.tasks import TaskSpec, build_splits
from tinymath.tokenizer import Tokenizer
from tinymath.train.model import ModelConfig, Transformer

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def problems():
    card = json.loads((MODELS / "tinymath.json").read_text())
    splits = build_splits(TaskSpec.from_dict(card["task"]))
    return random.Random(0).sample(splits["test"], 400)  # ~70-token answers: PyTorch greedy is the cost


def torch_answers(prompts: list[str]) -> list[str]:
    bm = read_bin(MODELS / "tinymath.bin")
    model = Transformer(ModelConfig.from_dict(bm.config.model_config())).eval()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in bm.state_dict().items()})
    tok = Tokenizer.load(MODELS / "tokenizer.bin")
    ids = [tok.encode_prompt(p) for p in prompts]
    max_new = model.cfg.max_seq_len - max(len(x) for x in ids)
    out = model.generate_greedy(ids, max_new=max_new, stop=tok.eos_id)
    return [tok.decode_answer(o) for o in out]


def test_fp32_greedy_answers_equal_pytorch_on_400_problems(problems):
    prompts = [p.prompt for p in problems]
    with Model(MODELS / "tinymath.bin") as m:
        c = m.solve(prompts, steps=True)  # whole answers: a steps model's work too
    t = torch_answers(prompts)
    differ = [(p, a, b) for p, a, b in zip(prompts, c, t) if a != b]
    assert not differ, differ[:5]
    # and the model is no toy: most answers are right
    assert sum(a == p.answer for a, p in zip(c, problems)) / len(problems) > 0.5


def test_int8_keeps_fp32_accuracy_on_the_test_split():
    """int8 keeps the shipped model's accuracy (issue 9's bar: within 0.5 points on the whole test
    split) and, on a model this sure of itself, the same final answer on at least 99% of the test
    problems (issue 22's bar; the previous, direct default agreed on 96-97%, since on * and / it
    was often wrong and unsure, and a rounding flips one answer into another).
    `tinymath inspect quant` splits the flips into weight and activation rounding.
    """
    card = json.loads((MODELS / "tinymath.json").read_text())
    spec = TaskSpec.from_dict(card["task"])
    problems = build_splits(spec)["test"]
    prompts = [p.prompt for p in problems]
    with Model(MODELS / "tinymath.bin") as f32, Model(MODELS / "tinymath.q8.bin") as q8:
        a, b = f32.solve(prompts, steps=True), q8.solve(prompts, steps=True)
    fmt = spec.answer_format()
    final_a, final_b = ([x.rpartition("#")[2] for x in xs] for xs in (a, b))  # runc_final_answer's rule
    agree = sum(x == y for x, y in zip(final_a, final_b)) / len(prompts)
    right = [i for i, p in enumerate(problems) if fmt.is_right(p.answer, a[i])]
    kept = sum(fmt.is_right(problems[i].answer, b[i]) for i in right) / len(right)
    acc32 = len(right) / len(problems)
    acc8 = sum(fmt.is_right(p.answer, b[i]) for i, p in enumerate(problems)) / len(problems)
    print(f"int8 = fp32 on {100 * agree:.1f}% of {len(prompts)} problems; on {100 * kept:.1f}% of the "
          f"{len(right)} fp32 gets right; accuracy fp32 {100 * acc32:.2f}%, int8 {100 * acc8:.2f}%")
    assert abs(acc8 - acc32) <= 0.005
    assert agree >= 0.99 and kept >= 0.99
