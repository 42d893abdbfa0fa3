"""A model that shows its work, through the C runner and the bindings (issue 20, point 4): `run` in
calc and batch mode and `Model.solve` give the final answer by default and the whole answer (steps,
'#', final answer) with `-v` / `steps=True`, and both are PyTorch's greedy decoding token for token.
A direct model's output does not depend on the flag (tests/test_runc_c.py checks that for the CLI).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tinymath.export import read_bin  # noqa: E402
from tinymath.runc import Model  # noqa: E402
from tinymath.tasks import TaskSpec, build_splits  # noqa: E402
from tinymath.tasks.steps import MARK  # noqa: E402
from tinymath.tokenizer import Tokenizer  # noqa: E402
from tinymath.train.model import ModelConfig, Transformer  # noqa: E402

from conftest import STEPS_TASK  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASK = STEPS_TASK  # the conftest's steps_model was trained on it


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    splits = build_splits(TaskSpec.from_dict(TASK))
    return [p.prompt for p in splits["val"] + splits["test"]][:300]


@pytest.fixture(scope="module")
def torch_greedy(steps_model, prompts) -> tuple[list[str], list[int]]:
    """PyTorch's greedy whole answers (steps, '#', final answer) and their tokens (EOS not counted)."""
    bm = read_bin(steps_model)
    model = Transformer(ModelConfig.from_dict(bm.config.model_config())).eval()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in bm.state_dict().items()})
    tok = Tokenizer.load(steps_model.parent / "tokenizer.bin")
    ids = [tok.encode_prompt(p) for p in prompts]
    # each prompt runs to the end of the context, as the C engine does: batched by prompt length, so
    # an answer that never stops gets exactly the tokens its own prompt leaves room for
    out: list = [None] * len(ids)
    for n in sorted({len(x) for x in ids}):
        rows = [i for i, x in enumerate(ids) if len(x) == n]
        for i, o in zip(rows, model.generate_greedy([ids[i] for i in rows], max_new=model.cfg.max_seq_len - n,
                                                    stop=tok.eos_id)):
            out[i] = o
    whole = [tok.decode_answer(o) for o in out]
    assert sum(MARK in a for a in whole) > len(whole) // 2  # it writes steps, then a final answer
    return whole, [len([t for t in o if t != tok.eos_id]) for o in out]


@pytest.fixture(scope="module")
def torch_whole(torch_greedy) -> list[str]:
    return torch_greedy[0]


def final(answer: str) -> str:
    return answer.rpartition(MARK)[2]


def test_solve_final_by_default_steps_on_request(steps_model, prompts, torch_whole, torch_greedy):
    with Model(steps_model) as m:
        assert m.solve(prompts, steps=True) == torch_whole
        assert m.solve(prompts, batch=False, steps=True) == torch_whole
        finals = [final(a) for a in torch_whole]
        assert m.solve(prompts) == finals
        assert m.solve(prompts, batch=False) == finals
        conf, conf_steps = m.solve(prompts, confidence=True), m.solve(prompts, confidence=True, steps=True)
        assert [a.text for a in conf] == finals and [a.text for a in conf_steps] == torch_whole
        # the tokens generated are the whole answer's, whichever text is returned
        assert [a.n_tokens for a in conf] == [a.n_tokens for a in conf_steps] == torch_greedy[1]
        assert conf == [a._replace(text=final(a.text)) for a in conf_steps]
        with pytest.raises(TypeError, match="steps"):
            m.solve(prompts[:1], steps="yes")


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None, reason="needs make and a C compiler")
def test_run_final_by_default_steps_with_v(steps_model, prompts, torch_whole):
    r = subprocess.run(["make", "runc/run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run = [str(ROOT / "runc" / "run"), str(steps_model)]
    stdin = "\n".join(prompts) + "\n"
    for extra, want in (([], [final(a) for a in torch_whole]), (["-v"], torch_whole)):
        b = subprocess.run(run + ["-m", "batch", *extra], input=stdin, capture_output=True, text=True, timeout=300)
        assert b.returncode == 0 and b.stdout.split("\n")[:-1] == want, b.stderr
        c = subprocess.run(run + ["-m", "calc", *extra], input=stdin.replace(" =\n", "\n"), capture_output=True,
                           text=True, timeout=300)
        assert c.returncode == 0 and c.stdout.split("\n")[:-1] == want, c.stderr
        i = max(range(len(prompts)), key=lambda k: len(torch_whole[k]))  # the longest answer, alone
        one = subprocess.run(run + ["-m", "calc", "-i", prompts[i], *extra], capture_output=True, text=True,
                             timeout=60)
        assert one.returncode == 0 and one.stdout == want[i] + "\n"
