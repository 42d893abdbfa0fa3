"""Training speed: this trainer against a plain PyTorch loop, on the same models.

Prints, in one run:
1. training tokens/s (problem tokens, padding not counted) for ~10K, ~100K and
   ~1M-parameter models on the classic `+` task, for this trainer's step and for
   a plain loop: llama2.c's model code (model.py: real-arithmetic RoPE,
   F.scaled_dot_product_attention(is_causal=True)), fp32 eager, batches of 256
   padded to the longest problem, torch.optim.AdamW(lr=3e-3), loss on the answer
   tokens only (ignore_index), torch's default thread count;
2. time to 99% exact-match on the classic `+` test split (dim 48, 2 layers, ~56K
   params) for both. The clock counts training only: the test split is scored
   every `--check-every` steps with the clock stopped (greedy exact-match), the
   same way for both loops. This trainer's time includes its own periodic val
   evaluations and checkpoints. Then a plain `tinymath train`-style run that
   stops on val accuracy alone, wall time from start-up, and its test accuracy.

    python bench/bench_train.py            # ~5-8 minutes on 2 CPU cores
    python bench/bench_train.py --quick    # a smoke run

Both loops start from the same initial weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tinymath.tasks import TaskSpec, build_splits
from tinymath.tokenizer import Tokenizer, train_tokenizer
from tinymath.train.config import TrainConfig
from tinymath.train.data import IGNORE, Batches, encode
from tinymath.train.model import ModelConfig, Transformer
from tinymath.train.train import auto_threads, evaluate, make_optimizer, train, train_step

TASK = {"task": "arith", "ops": "+"}  # classic: operands 0-89, 90-99 held out, answers like 106.00
DEFAULT_THREADS = torch.get_num_threads()


# ---- the reference: llama2.c's model.py, as written there ------------------------------------------

def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    t = torch.arange(end, device=freqs.device)
    freqs = torch.outer(t, freqs).float()
    return torch.cos(freqs), torch.sin(freqs)


def reshape_for_broadcast(freqs_cis, x):
    shape = [d if i == 1 or i == x.ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(shape)


def apply_rotary_emb(xq, xk, freqs_cos, freqs_sin):
    xq_r, xq_i = xq.float().reshape(xq.shape[:-1] + (-1, 2)).unbind(-1)
    xk_r, xk_i = xk.float().reshape(xk.shape[:-1] + (-1, 2)).unbind(-1)
    freqs_cos = reshape_for_broadcast(freqs_cos, xq_r)
    freqs_sin = reshape_for_broadcast(freqs_sin, xq_r)
    xq_out_r = xq_r * freqs_cos - xq_i * freqs_sin
    xq_out_i = xq_r * freqs_sin + xq_i * freqs_cos
    xk_out_r = xk_r * freqs_cos - xk_i * freqs_sin
    xk_out_i = xk_r * freqs_sin + xk_i * freqs_cos
    xq_out = torch.stack([xq_out_r, xq_out_i], dim=-1).flatten(3)
    xk_out = torch.stack([xk_out_r, xk_out_i], dim=-1).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)


class RefRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        out = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight


class RefAttention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = c.n_heads, c.n_kv_heads, c.dim // c.n_heads
        self.wq = nn.Linear(c.dim, c.n_heads * self.hd, bias=False)
        self.wk = nn.Linear(c.dim, c.n_kv_heads * self.hd, bias=False)
        self.wv = nn.Linear(c.dim, c.n_kv_heads * self.hd, bias=False)
        self.wo = nn.Linear(c.n_heads * self.hd, c.dim, bias=False)

    def forward(self, x, freqs_cos, freqs_sin):
        b, t, _ = x.shape
        xq = self.wq(x).view(b, t, self.n_heads, self.hd)
        xk = self.wk(x).view(b, t, self.n_kv, self.hd)
        xv = self.wv(x).view(b, t, self.n_kv, self.hd)
        xq, xk = apply_rotary_emb(xq, xk, freqs_cos, freqs_sin)
        rep = self.n_heads // self.n_kv
        if rep > 1:
            xk = xk[:, :, :, None, :].expand(b, t, self.n_kv, rep, self.hd).reshape(b, t, self.n_heads, self.hd)
            xv = xv[:, :, :, None, :].expand(b, t, self.n_kv, rep, self.hd).reshape(b, t, self.n_heads, self.hd)
        xq, xk, xv = xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2)
        out = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=None, dropout_p=0.0, is_causal=True)
        return self.wo(out.transpose(1, 2).contiguous().view(b, t, -1))


class RefFeedForward(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.hidden_dim, bias=False)
        self.w2 = nn.Linear(c.hidden_dim, c.dim, bias=False)
        self.w3 = nn.Linear(c.dim, c.hidden_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class RefBlock(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.attention = RefAttention(c)
        self.feed_forward = RefFeedForward(c)
        self.attention_norm = RefRMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = RefRMSNorm(c.dim, c.norm_eps)

    def forward(self, x, freqs_cos, freqs_sin):
        h = x + self.attention.forward(self.attention_norm(x), freqs_cos, freqs_sin)
        return h + self.feed_forward.forward(self.ffn_norm(h))


class RefTransformer(nn.Module):
    """llama2.c's Transformer (same parameter names as tinymath's, so weights load across)."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.cfg = c
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(RefBlock(c) for _ in range(c.n_layers))
        self.norm = RefRMSNorm(c.dim, c.norm_eps)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.tok_embeddings.weight = self.output.weight
        cos, sin = precompute_freqs_cis(c.dim // c.n_heads, c.max_seq_len, c.rope_theta)
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)

    def forward(self, tokens, targets):
        t = tokens.shape[1]
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, self.freqs_cos[:t], self.freqs_sin[:t])
        logits = self.output(self.norm(h))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


class PlainLoop:
    """The reference training loop: padded batches of 256 drawn from epoch permutations, AdamW 3e-3."""

    def __init__(self, mcfg: ModelConfig, enc, init_state: dict, batch_size: int = 256, lr: float = 3e-3,
                 seed: int = 0):
        self.model = RefTransformer(mcfg)
        self.model.load_state_dict(init_state)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.x = enc.inputs  # padded to the longest problem
        self.y = enc.targets.masked_fill(enc.targets == IGNORE, -1)
        self.lengths = enc.lengths
        self.n, self.b = len(enc), batch_size
        self.g = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(self.n, generator=self.g), 0
        self.tokens = 0

    def step(self) -> float:
        if self.pos + self.b > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.g), 0
        idx = self.perm[self.pos:self.pos + self.b]
        self.pos += self.b
        loss = self.model(self.x[idx], self.y[idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.tokens += int(self.lengths[idx].sum())
        return loss.item()

    def as_tinymath(self) -> Transformer:
        m = Transformer(self.model.cfg)
        m.load_state_dict(self.model.state_dict())
        return m


# ---- helpers ----------------------------------------------------------------------------------------

def setup(workdir: Path):
    splits = build_splits(TaskSpec.from_dict(TASK))
    tok = Tokenizer.load(train_tokenizer([p.line for p in splits["train"]], workdir / "tok"))
    enc = {k: encode(v, tok) for k, v in splits.items()}
    longest = max(e.max_len for e in enc.values())
    return tok, enc, longest


def initial_state(mcfg: ModelConfig, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return Transformer(mcfg).state_dict()


def throughput_ours(mcfg: ModelConfig, enc, seconds: float, batch_size: int = 256, threads: int | None = None) -> float:
    threads = threads or auto_threads(mcfg.n_params())
    torch.set_num_threads(threads)
    model = Transformer(mcfg)
    model.load_state_dict(initial_state(mcfg))
    cfg = TrainConfig(batch_size=batch_size)
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    for g in opt.param_groups:
        g["lr"] = 1e-3
    batches = Batches(enc["train"], batch_size, 0)
    dev = torch.device("cpu")
    for s in range(3):
        train_step(model, model, opt, batches, s, 1.0, dev)
    tokens, s, t0 = 0, 3, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        tokens += train_step(model, model, opt, batches, s, 1.0, dev)[2]
        s += 1
    return tokens / (time.perf_counter() - t0)


def throughput_plain(mcfg: ModelConfig, enc, seconds: float) -> float:
    torch.set_num_threads(DEFAULT_THREADS)
    loop = PlainLoop(mcfg, enc["train"], initial_state(mcfg))
    for _ in range(3):
        loop.step()
    loop.tokens, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loop.step()
    return loop.tokens / (time.perf_counter() - t0)


def plain_time_to(mcfg, enc, tok, target: float, check_every: int, limit_s: float) -> dict:
    torch.set_num_threads(DEFAULT_THREADS)
    loop = PlainLoop(mcfg, enc["train"], initial_state(mcfg))
    clock, steps = 0.0, 0
    acc = 0.0
    while clock < limit_s:
        t0 = time.perf_counter()
        for _ in range(check_every):
            loop.step()
        clock += time.perf_counter() - t0
        steps += check_every
        acc = evaluate(loop.as_tinymath(), enc["test"], tok, torch.device("cpu"))["acc"]
        if acc >= target:
            return {"time": clock, "steps": steps, "tokens": loop.tokens, "acc": acc, "reached": True}
    return {"time": clock, "steps": steps, "tokens": loop.tokens, "acc": acc, "reached": False}


# The trainer's settings for the time-to-accuracy runs (see the report in the module docstring of train.py)
FAST = {"batch_size": 128, "lr": 1e-2, "warmup_steps": 50, "max_steps": 1500, "schedule": "cosine", "min_lr": 0.0,
        "weight_decay": 0.1, "beta2": 0.99, "grad_clip": 1.0, "eval_every": 100, "eval_max": 400}


def ours_time_to(workdir: Path, mcfg: ModelConfig, enc, tok, target: float, check_every: int, limit_s: float,
                 overrides: dict | None = None) -> dict:
    settings = {**FAST, **(overrides or {}), "eval_every": check_every}
    cfg = TrainConfig.from_dict({
        "out_dir": str(workdir / "ours"), "task": dict(TASK), "progress": False, "test_at_end": False,
        "max_time": limit_s, "model": {"dim": mcfg.dim, "n_layers": mcfg.n_layers, "n_heads": mcfg.n_heads,
                                       "hidden_dim": mcfg.hidden_dim}, **settings})
    state: dict = {}

    def on_eval(m: dict, model: Transformer) -> bool:
        acc = evaluate(model, enc["test"], tok, torch.device("cpu"))["acc"]
        state["acc"] = acc
        if acc >= target:
            state.update(time=m["time"], steps=m["step"], tokens=m["tokens"])
            return True
        return False

    s = train(cfg, overwrite=True, on_eval=on_eval)
    if "time" in state:
        return {**state, "reached": True, "threads": s["threads"]}
    return {"time": s["elapsed"], "steps": s["step"], "tokens": s["tokens_seen"], "acc": state.get("acc", 0.0),
            "reached": False, "threads": s["threads"]}


def ours_val_stopped(workdir: Path, mcfg: ModelConfig, target_val: float) -> dict:
    """What `tinymath train --target-acc` does: stop on val only, then score test once. Wall time from start."""
    t0 = time.perf_counter()
    cfg = TrainConfig.from_dict({
        "out_dir": str(workdir / "val_stopped"), "task": dict(TASK), "progress": False, "target_acc": target_val,
        "model": {"dim": mcfg.dim, "n_layers": mcfg.n_layers, "n_heads": mcfg.n_heads, "hidden_dim": mcfg.hidden_dim},
        **FAST})
    s = train(cfg, overwrite=True)
    return {"wall": time.perf_counter() - t0, "train": s["elapsed"], "steps": s["step"],
            "val": s["metrics"]["val_acc"], "test": s["metrics"]["test_acc"], "stop": s["stop_reason"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (numbers not meaningful)")
    ap.add_argument("--seconds", type=float, default=6.0, help="measuring time per throughput cell")
    ap.add_argument("--target", type=float, default=0.99, help="test exact-match to reach")
    ap.add_argument("--check-every", type=int, default=100, help="steps between test checks")
    ap.add_argument("--limit", type=float, default=240.0, help="give up on a time-to-accuracy run after this")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.limit = 1.0, 5.0

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"bench-train: torch {torch.__version__}, {os.cpu_count()} CPU cores, default threads {DEFAULT_THREADS}, "
          f"load average {load:.2f}")
    results: dict = {"throughput": [], "time_to_acc": {}}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        workdir = Path(tmp)
        tok, enc, longest = setup(workdir)
        n_train = len(enc["train"])
        print(f"task: classic + (operands 0-89), {n_train} train / {len(enc['test'])} test problems, "
              f"longest {longest} tokens, mean {enc['train'].lengths.float().mean():.1f}\n")

        print("1. training tokens/s (problem tokens; padding not counted), batch 256")
        print(f"   {'params':>9}  {'shape':<16} {'plain loop':>11} {'this trainer':>13} {'ratio':>6}  threads")
        for target in (10_000, 100_000, 1_000_000):
            mcfg = ModelConfig.for_params(target, tok.vocab_size, longest)
            plain = throughput_plain(mcfg, enc, args.seconds)
            ours = throughput_ours(mcfg, enc, args.seconds)
            shape = f"d{mcfg.dim} L{mcfg.n_layers} h{mcfg.n_heads}"
            print(f"   {mcfg.n_params():>9,}  {shape:<16} {plain:>11,.0f} {ours:>13,.0f} {ours / plain:>5.2f}x  "
                  f"{DEFAULT_THREADS} / {auto_threads(mcfg.n_params())}", flush=True)
            results["throughput"].append({"params": mcfg.n_params(), "plain": plain, "ours": ours})

        mcfg = ModelConfig(dim=48, n_layers=2, n_heads=6, n_kv_heads=6, hidden_dim=128,
                           vocab_size=tok.vocab_size, max_seq_len=longest)
        print(f"\n2. time to {100 * args.target:.0f}% exact-match on the test split "
              f"({mcfg.n_params():,} params: dim 48, 2 layers), training time, test checked every "
              f"{args.check_every} steps off the clock")
        plain = plain_time_to(mcfg, enc, tok, args.target, args.check_every, args.limit)
        print(f"   plain loop    : {_fmt(plain)}", flush=True)
        ours = ours_time_to(workdir, mcfg, enc, tok, args.target, args.check_every, args.limit)
        print(f"   this trainer  : {_fmt(ours)}  (batch {FAST['batch_size']}, lr {FAST['lr']}, "
              f"warm-up {FAST['warmup_steps']} + cosine over {FAST['max_steps']} steps, {ours['threads']} thread(s))",
              flush=True)
        if plain["reached"] and ours["reached"]:
            print(f"   speed-up      : {plain['time'] / ours['time']:.2f}x in time, "
                  f"{plain['tokens'] / ours['tokens']:.2f}x in tokens")
        results["time_to_acc"] = {"plain": plain, "ours": ours}
        if not args.quick:
            v = ours_val_stopped(workdir, mcfg, 0.995)
            print(f"   val-stopped run (target_acc 0.995 on val, test scored once at the end): "
                  f"{v['wall']:.1f} s wall from start-up ({v['train']:.1f} s training), {v['steps']} steps, "
                  f"val {100 * v['val']:.2f}%, test {100 * v['test']:.2f}%")
            results["val_stopped"] = v
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _fmt(r: dict) -> str:
    mark = "" if r["reached"] else f" (not reached; test {100 * r['acc']:.2f}%)"
    return (f"{r['time']:6.1f} s, {r['steps']} steps, {r['tokens'] / 1e6:.2f}M tokens, "
            f"{r['tokens'] / max(r['time'], 1e-9):,.0f} tok/s{mark}")


if __name__ == "__main__":
    sys.exit(main())
