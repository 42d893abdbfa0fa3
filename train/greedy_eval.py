"""Greedy exact-match of a model on an encoded split, as training evaluates it.

One teacher-forced forward pass over the split marks a problem right when every
answer token and the EOS is the argmax given the right prefix, which is exactly
when greedy decoding reproduces the answer token for token. Problems that fail
that check are then really decoded (KV cache, greedy) and compared as strings,
which catches the rare output that differs in tokens but not in text. The result
is the greedy decoder's exact-match at a fraction of its cost once most answers
are right. A format that shows its work counts a right final answer after wrong
steps as right (the decoded check), as the classic bars count it.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from tinymath.tasks.formats import AnswerFormat

from .data import IGNORE, Encoded, same_answer
from .device import Dist
from .model import Transformer


@torch.no_grad()
def evaluate(model: Transformer, enc: Encoded, tok, device: torch.device, batch_size: int = 1024,
             decode: bool = True, amp: Callable = contextlib.nullcontext, dist: Dist | None = None,
             fmt: AnswerFormat | None = None) -> dict:
    """Greedy exact-match of `model` on a split: {"acc", "n", "by_op": {op: acc}, "n_by_op"}.

    fmt: the task's answer format (steps formats count the final answer; see same_answer).
    Under DDP each rank scores every world-th problem and the counts are summed.
    """
    right = same_answer(fmt)
    ops = sorted({p.op for p in enc.problems})
    rank, world = (dist.rank, dist.world) if dist is not None and dist.enabled else (0, 1)
    mine = list(range(rank, len(enc), world))
    was_training = model.training
    model.eval()
    ok = torch.zeros(len(mine), dtype=torch.bool)
    for s in range(0, len(mine), batch_size):
        rows = torch.tensor(mine[s:s + batch_size], dtype=torch.long)
        width = int(enc.lengths[rows].max()) - 1
        x = enc.inputs[rows, :width]
        yf = enc.targets[rows, :width].reshape(-1)
        sel = (yf != IGNORE).nonzero().squeeze(1)
        with amp():
            logits = model(x.to(device), select=sel.to(device))
        hit = logits.argmax(-1).cpu() == yf[sel]
        bad = torch.zeros(len(rows), dtype=torch.bool)
        bad[(sel // width)[~hit]] = True
        ok[s:s + len(rows)] = ~bad
    if decode:
        miss = (~ok).nonzero().squeeze(1).tolist()
        for s in range(0, len(miss), batch_size):
            chunk = miss[s:s + batch_size]
            prompts = [enc.prompts[mine[j]] for j in chunk]
            with amp():
                gens = model.generate_greedy(prompts, model.cfg.max_seq_len, tok.eos_id)
            for j, g in zip(chunk, gens):
                if right(enc.problems[mine[j]].answer, tok.decode_answer(g)):
                    ok[j] = True
    if was_training:
        model.train()
    counts = torch.zeros(2 * len(ops) + 2, dtype=torch.float64)
    op_index = {op: i for i, op in enumerate(ops)}
    for j, good in zip(mine, ok.tolist()):
        k = op_index[enc.problems[j].op]
        counts[2 * k] += 1
        counts[2 * k + 1] += good
    counts[-2], counts[-1] = len(mine), float(ok.sum())
    if dist is not None:
        dist.sum_(counts)
    n, correct = int(counts[-2]), int(counts[-1])
    return {
        "acc": correct / n if n else None,
        "n": n,
        "by_op": {op: (counts[2 * i + 1].item() / counts[2 * i].item()) for i, op in enumerate(ops)
                  if counts[2 * i] > 0},
        "n_by_op": {op: int(counts[2 * i]) for i, op in enumerate(ops)},
    }
