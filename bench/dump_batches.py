"""Dump a model shape and a few real training batches for runc/tests/prof_train.c (profiling the C engine).

    python bench/dump_batches.py OUT.bin --task '{"task":"arith","ops":"/","format":"steps"}' --params 25000 \
        --batch 128 --n 8

The layout is prof_train.c's (int32): dim hidden_dim n_layers n_heads n_kv_heads vocab max_seq_len tied batch
n_batches, then per batch its width, tokens and targets (batch x width each).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from tinymath.tasks import TaskSpec, build_splits
from tinymath.tokenizer import Tokenizer, train_tokenizer
from tinymath.train.data import Batches, encode
from tinymath.train.model_config import ModelConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--task", default='{"task": "arith", "ops": "+"}')
    ap.add_argument("--params", type=int, default=25_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args()
    splits = build_splits(TaskSpec.from_dict(json.loads(args.task)))
    with tempfile.TemporaryDirectory() as tmp:
        tok = Tokenizer.load(train_tokenizer([p.line for p in splits["train"]], Path(tmp) / "tok"))
    enc = encode(splits["train"], tok)
    seq = max(encode(v, tok).max_len for v in splits.values())
    m = ModelConfig.for_params(args.params, tok.vocab_size, seq)
    batches = Batches(enc, args.batch, 0)
    head = [m.dim, m.hidden_dim, m.n_layers, m.n_heads, m.n_kv_heads, m.vocab_size, m.max_seq_len, int(m.tied),
            args.batch, args.n]
    lens = []
    with open(args.out, "wb") as f:
        f.write(np.asarray(head, dtype="<i4").tobytes())
        for k in range(1, args.n + 1):
            x, y, n_tok, _ = batches.get(k)
            x, y = np.asarray(x, dtype="<i4"), np.asarray(y, dtype="<i4")
            f.write(np.asarray([x.shape[1]], dtype="<i4").tobytes())
            f.write(x.tobytes())
            f.write(y.tobytes())
            lens.append(n_tok / args.batch)
    print(f"{args.out}: {m.n_params():,} params (dim {m.dim}, hidden {m.hidden_dim}, {m.n_layers} layers, "
          f"{m.n_heads} heads, vocab {m.vocab_size}, max_seq_len {m.max_seq_len}), batch {args.batch}, "
          f"{args.n} batches, mean {np.mean(lens):.1f} tokens per row")


if __name__ == "__main__":
    main()
