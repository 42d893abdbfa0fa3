"""Greedy exact-match for the C engine's loop, without torch: runc's batch engine on the current weights.

The weights go through export's v1 (fp32) writer into an in-memory llama2.c file that
tinymath.runc.Model opens with the run's tokenizer.bin; `Model.solve` decodes every
problem greedily (KV cache, worker threads) and the task format's rule scores the
answer, as `tinymath eval` scores an exported model. Why runc and not a numpy
forward pass: runc is the runner the exported model is judged by, it is C and
threaded (a numpy decoder would spend most of an evaluation in Python), and it
needs no code beyond what the project already tests. Its greedy answers are the
PyTorch evaluator's (train/greedy_eval.py) but for an argmax tie within float32
rounding; tests/test_train_c_notorch.py checks the two agree on a trained run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import Encoded, same_answer
from .model_config import ModelConfig


class RuncEvaluator:
    """evaluate(weights, split) -> {"acc", "n", "by_op", "n_by_op"}, as greedy_eval.evaluate returns it."""

    def __init__(self, mcfg: ModelConfig, tokenizer: Path, fmt, threads: int = 1):
        self.mcfg, self.threads = mcfg, threads
        self.tokenizer = Path(tokenizer).read_bytes()
        self.right = same_answer(fmt)

    def _model_bytes(self, weights: dict[str, np.ndarray]) -> bytes:
        from tinymath.export.source import from_state_dict
        from tinymath.export.writers import encode_bin

        return encode_bin(from_state_dict(self.mcfg.to_dict(), weights, {}, what="model"), "v1")

    def evaluate(self, weights: dict[str, np.ndarray], enc: Encoded) -> dict:
        from tinymath.runc import Model

        problems = enc.problems
        with Model.from_bytes(self._model_bytes(weights), self.tokenizer, threads=self.threads) as model:
            # the whole answer: a steps format is scored on it (its final answer after its steps)
            answers = model.solve([p.prompt for p in problems], steps=True) if problems else []
        ops = sorted({p.op for p in problems})
        n_by_op = {op: 0 for op in ops}
        right_by_op = {op: 0 for op in ops}
        for p, got in zip(problems, answers):
            n_by_op[p.op] += 1
            right_by_op[p.op] += bool(self.right(p.answer, got))
        n, correct = len(problems), sum(right_by_op.values())
        return {"acc": correct / n if n else None, "n": n,
                "by_op": {op: right_by_op[op] / n_by_op[op] for op in ops}, "n_by_op": n_by_op}
