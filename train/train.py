"""The training loop.

`train(cfg)` runs one TrainConfig end to end: problems (from the task spec or a
data file), the tokenizer (trained on the train lines, or given, or the
init-from checkpoint's), the model, AdamW with warm-up + cosine decay and
gradient clipping, answer-only loss, periodic greedy exact-match evaluation on
val and holdout (per op, as JSON lines in metrics.jsonl and in a tqdm bar),
atomic checkpoints (ckpt.pt latest, best.pt best val), a final test evaluation,
exact resumption, SIGINT handling, DDP under torchrun.

Evaluation is greedy decoding, computed fast: one teacher-forced forward pass
over the split marks a problem right when every answer token and the EOS is the
argmax given the right prefix, which is exactly when greedy decoding reproduces
the answer token for token. Problems that fail that check are then really
decoded (KV cache, greedy) and compared as strings, which catches the rare
output that differs in tokens but not in text. The result is the greedy
decoder's exact-match at a fraction of its cost once most answers are right.

Speed on a small CPU (what `make bench-train` measures; 2 cores shared with other work):
- Per token, the step is 1.1-1.5x a plain PyTorch loop's (llama2.c's model, padded
  batches): no padding columns, logits only at answer positions, an explicit
  attention for short sequences (the CPU flash kernel costs per (batch, head)
  block, and softmax over a last dim < 16 is 5x slower than over 16), complex
  RoPE, a standalone foreach AdamW (torch.optim imports torch._dynamo: 2 s at
  start-up). Matmuls are ~40% of a step; the rest is many small element-wise ops.
- One thread by default: a second thread made small models 5-50x slower whenever
  the other core was busy (every parallel op waits for a descheduled thread).
- Most of the gain is in tokens: batch 64, lr 3e-3, 50 warm-up steps, cosine to 0
  over 2000 steps reaches 99% on the classic `+` test split after ~1.6M training
  tokens, where the plain loop (batch 256, AdamW 3e-3, constant) needs 5.1M.
- Measured and not used by default: torch.compile (~2 min to compile here, 12%
  faster steps, recompiles per shape unless dynamic); bf16 autocast on CPU (+17%
  at 100K params, +46% at 1M, -10% at 56K and batch 64; evaluation stays fp32);
  fusing the q/k/v or w1/w3 matmuls (slower: the split costs more than it saves);
  length bucketing (`bucket`, ~4% padding to save on `+`, more on mixed ops).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from tinymath import fileio

from .checkpoint import FORMAT_VERSION, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ModelSection, TrainConfig
from .data import IGNORE, Batches, Encoded, encode, load_splits
from .model import ModelConfig, Transformer


# ---- machine ---------------------------------------------------------------------------------

def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("train config: device is cuda but no CUDA device is available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("train config: device is mps but MPS is not available")
    return dev


def auto_threads(n_params: int, world: int = 1) -> int:
    """Intra-op threads for a CPU run (when the config leaves `threads` unset).

    One thread up to 5M parameters. The ops of a small model are short, and a second
    thread costs more in hand-offs than it gains; on a machine where other work runs,
    every parallel op waits for a descheduled thread, and two threads measured 5-50x
    slower than one here. Run two trainings side by side to use two cores.
    """
    cores = os.cpu_count() or 1
    per_rank = max(1, cores // max(1, world))
    return 1 if n_params < 5_000_000 else per_rank


class Dist:
    """torchrun's environment: rank, world size, and the collective ops the loop needs."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = False
        self.coll_device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            self.owns_group = True
        # NCCL reduces CUDA tensors only; gloo CPU tensors
        self.coll_device = device if dist.get_backend() == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            import torch.distributed as dist

            if t.device != self.coll_device:
                moved = t.to(self.coll_device)
                dist.all_reduce(moved, op=dist.ReduceOp.SUM)
                t.copy_(moved)
            else:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        return bool(self.sum_(t).item() > 0)

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


# ---- model, optimizer, schedule ----------------------------------------------------------------

def _hidden_for(dim: int) -> int:
    return max(4, int(round(dim * 8 / 3 / 4)) * 4)


def check_shape_fields(m: ModelSection) -> None:
    """Catch a shape that cannot work before any data or tokenizer work is done."""
    if m.params is not None:
        return
    dim = m.dim or ModelConfig.dim
    n_heads = m.n_heads or (dim // m.head_dim if dim % m.head_dim == 0 else ModelConfig.n_heads)
    probe = ModelConfig(dim=dim, n_layers=m.n_layers or ModelConfig.n_layers, n_heads=n_heads,
                        n_kv_heads=m.n_kv_heads or n_heads, hidden_dim=m.hidden_dim or _hidden_for(dim),
                        vocab_size=m.vocab_size or 8, max_seq_len=m.max_seq_len or 8, norm_eps=m.norm_eps,
                        rope_theta=m.rope_theta, tied=m.tied)
    probe.validate()


def resolve_model_config(m: ModelSection, vocab_size: int, longest: int) -> ModelConfig:
    """The ModelConfig for a model section, a tokenizer's vocabulary and the longest problem (tokens)."""
    if m.vocab_size is not None and m.vocab_size != vocab_size:
        raise ValueError(f"model config: vocab_size is {m.vocab_size}, but the tokenizer has {vocab_size} tokens "
                         f"(leave model.vocab_size out to take the tokenizer's)")
    if m.max_seq_len is not None and m.max_seq_len < longest:
        raise ValueError(f"model config: max_seq_len ({m.max_seq_len}) is shorter than the longest problem "
                         f"({longest} tokens with BOS and EOS)")
    seq = m.max_seq_len or longest
    if m.params is not None:
        cfg = ModelConfig.for_params(m.params, vocab_size, seq, n_layers=m.n_layers, head_dim=m.head_dim,
                                     tied=m.tied)
        cfg.norm_eps, cfg.rope_theta = m.norm_eps, m.rope_theta
        if m.n_kv_heads is not None:
            cfg.n_kv_heads = m.n_kv_heads
    else:
        dim = m.dim or ModelConfig.dim
        n_heads = m.n_heads or (dim // m.head_dim if dim % m.head_dim == 0 else ModelConfig.n_heads)
        cfg = ModelConfig(dim=dim, n_layers=m.n_layers or ModelConfig.n_layers, n_heads=n_heads,
                          n_kv_heads=m.n_kv_heads or n_heads, hidden_dim=m.hidden_dim or _hidden_for(dim),
                          vocab_size=vocab_size, max_seq_len=seq, norm_eps=m.norm_eps, rope_theta=m.rope_theta,
                          tied=m.tied)
    cfg.validate()
    return cfg


class AdamW:
    """torch.optim.AdamW's update (decoupled weight decay, bias correction) with foreach kernels.

    Same arithmetic as torch's foreach AdamW, but standalone: constructing any
    torch.optim optimizer imports torch._dynamo, which costs ~2 s at every start-up
    on a small CPU machine, noticeable when a study trains hundreds of small models.
    Offers the part of the Optimizer interface the loop uses: param_groups
    (with "lr"), zero_grad, step, state_dict, load_state_dict.
    """

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.param_groups = [{"params": list(g["params"]), "weight_decay": float(g.get("weight_decay", 0.0)),
                              "lr": lr, "betas": tuple(betas), "eps": eps} for g in groups]
        self.steps = 0
        self.exp_avg = [[torch.zeros_like(p, memory_format=torch.preserve_format) for p in g["params"]]
                        for g in self.param_groups]
        self.exp_avg_sq = [[torch.zeros_like(p, memory_format=torch.preserve_format) for p in g["params"]]
                           for g in self.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        t = self.steps
        for g, m, v in zip(self.param_groups, self.exp_avg, self.exp_avg_sq):
            live = [i for i, p in enumerate(g["params"]) if p.grad is not None]
            if not live:
                continue
            params = [g["params"][i] for i in live]
            grads = [g["params"][i].grad for i in live]
            m, v = [m[i] for i in live], [v[i] for i in live]
            lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(m, grads, 1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, 1 - b2)
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, math.sqrt(bc2))
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, m, denom, -lr / bc1)

    def state_dict(self) -> dict:
        return {"kind": "adamw", "steps": self.steps,
                "param_groups": [{"lr": g["lr"], "betas": list(g["betas"]), "eps": g["eps"],
                                  "weight_decay": g["weight_decay"], "n_params": len(g["params"])}
                                 for g in self.param_groups],
                "exp_avg": [list(x) for x in self.exp_avg], "exp_avg_sq": [list(x) for x in self.exp_avg_sq]}

    def load_state_dict(self, d: dict) -> None:
        if d.get("kind") != "adamw" or len(d["param_groups"]) != len(self.param_groups):
            raise ValueError("optimizer state in the checkpoint does not match this optimizer")
        for g, sg, m, v, sm, sv in zip(self.param_groups, d["param_groups"], self.exp_avg, self.exp_avg_sq,
                                       d["exp_avg"], d["exp_avg_sq"]):
            if len(sm) != len(m) or any(a.shape != b.shape for a, b in zip(m, sm)):
                raise ValueError("optimizer state in the checkpoint has other parameter shapes")
            g.update(lr=sg["lr"], betas=tuple(sg["betas"]), eps=sg["eps"], weight_decay=sg["weight_decay"])
            for a, b in zip(m + v, list(sm) + list(sv)):
                a.copy_(b)
        self.steps = int(d["steps"])


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> AdamW:
    """AdamW; weight decay on the matrices of the linear layers only (not norms, not embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # a tied classifier appears once, as tok_embeddings
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "tok_embeddings" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> None:
    """Scale all gradients so their global L2 norm is at most max_norm (torch's clip_grad_norm_)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))


def train_step(train_model: torch.nn.Module, model: Transformer, opt: AdamW, batches: Batches, step: int,
               grad_clip: float, device: torch.device, amp: Callable = contextlib.nullcontext,
               world: int = 1) -> tuple[torch.Tensor, int, int]:
    """One optimizer update on global batch `step` (this rank's share of it).

    The loss is the mean cross-entropy over the global batch's answer tokens (and
    EOS); only those positions go through the classifier. Returns (this rank's
    summed loss, its answer tokens, the global batch's problem tokens).
    """
    x, y, n_tok, n_ans = batches.get(step)
    yf = y.reshape(-1)
    sel = (yf != IGNORE).nonzero().squeeze(1)
    tgt = yf[sel]
    x, sel, tgt = x.to(device, non_blocking=True), sel.to(device), tgt.to(device)
    with amp():
        logits = train_model(x, select=sel)
    loss_total = F.cross_entropy(logits.float(), tgt, reduction="sum")
    # DDP averages gradients over ranks, hence the factor `world`
    loss = loss_total * (world / n_ans)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        clip_grad_norm(model, grad_clip)
    opt.step()
    return loss_total.detach(), len(tgt), n_tok


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update number `step` (0-based): linear warm-up, then cosine/linear/constant."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.lr * (cfg.min_lr + (1 - cfg.min_lr) * shape)


# ---- evaluation --------------------------------------------------------------------------------

def subset(enc: Encoded, idx: list[int]) -> Encoded:
    t = torch.tensor(idx, dtype=torch.long)
    return Encoded([enc.problems[i] for i in idx], enc.inputs[t], enc.targets[t], enc.lengths[t],
                   enc.n_prompt[t], [enc.prompts[i] for i in idx])


@torch.no_grad()
def evaluate(model: Transformer, enc: Encoded, tok, device: torch.device, batch_size: int = 1024,
             decode: bool = True, amp: Callable = contextlib.nullcontext, dist: Dist | None = None) -> dict:
    """Greedy exact-match of `model` on a split: {"acc", "n", "by_op": {op: acc}, "n_by_op"}.

    Under DDP each rank scores every world-th problem and the counts are summed.
    """
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
                if tok.decode_answer(g) == enc.problems[mine[j]].answer.strip():
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


# ---- the run ------------------------------------------------------------------------------------

class _Interrupt:
    """SIGINT sets a flag the loop checks after each step; a second SIGINT raises at once."""

    def __init__(self) -> None:
        self.flag = False
        self._old = None

    def __enter__(self) -> "_Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _tokenizer_files(path: Path) -> tuple[Path, Path | None]:
    """(tokenizer.bin, tokenizer.model or None) for a given .bin or .model path."""
    if path.suffix == ".model":
        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise FileNotFoundError(f"tokenizer {path}: no tokenizer.bin beside it (tinymath tokenizer writes both)")
        return bin_path, path
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer not found: {path}")
    model = path.with_suffix(".model")
    return path, model if model.is_file() else None


def _copy_tokenizer(src: Path, run_dir: Path) -> None:
    bin_path, model_path = _tokenizer_files(src)
    for s, name in ((bin_path, "tokenizer.bin"), (model_path, "tokenizer.model")):
        if s is None:
            continue
        dst = run_dir / name
        if dst.exists() and dst.resolve() == s.resolve():
            continue
        tmp = run_dir / f".{name}.tmp"
        shutil.copyfile(s, tmp)
        os.replace(tmp, dst)


def _ckpt_tokenizer(ckpt: dict, ckpt_path: Path) -> Path:
    """The tokenizer.bin a checkpoint names, or the one beside it if the run folder moved."""
    named = Path(ckpt.get("tokenizer") or "")
    if named.is_file():
        return named
    beside = ckpt_path.parent / "tokenizer.bin"
    if beside.is_file():
        return beside
    raise FileNotFoundError(f"checkpoint {ckpt_path}: its tokenizer {named} is missing (and no tokenizer.bin beside it)")


def _read_metrics(path: Path, upto_step: int) -> list[str]:
    if not path.is_file():
        return []
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn last line from a crash
        # an end-of-run record ("event": "final") is logged again when the resumed run ends: a run
        # killed after logging it but before exiting would otherwise end up with two
        if "event" not in record and record.get("step", 0) <= upto_step:
            keep.append(line)
    return keep


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _autocast(device: torch.device, dtype: str) -> Callable:
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train(cfg: TrainConfig, resume: str | os.PathLike | bool | None = None, *, overwrite: bool = False,
          on_eval: Callable[[dict, Transformer], bool | None] | None = None,
          interrupt_at: int | None = None) -> dict:
    """Run training; return a summary {"out_dir", "step", "tokens_seen", "elapsed", "metrics", "interrupted", ...}.

    resume: a checkpoint path, or True for `out_dir/ckpt.pt`: continue that run exactly.
    overwrite: start afresh even if out_dir already holds a run.
    on_eval(metrics, model): called after each periodic evaluation; returning True stops
        training (benchmarks use it); its time is not counted in `elapsed`.
    interrupt_at: act as if SIGINT arrived right after this step (tests).
    """
    cfg.validate()
    check_shape_fields(cfg.model)
    dist = Dist()
    device = resolve_device(cfg.device, dist.local_rank)
    dist.init(device)
    try:
        summary = _train(cfg, resume, overwrite, on_eval, interrupt_at, dist, device)
        # every rank reaches the end before any tears the group down: a rank that destroys it while
        # another still talks to it can abort in gloo's transport ("terminate called ..."). Only on
        # success: after an error the other ranks may never get here.
        dist.barrier()
        return summary
    finally:
        dist.close()


def _train(cfg, resume, overwrite, on_eval, interrupt_at, dist: Dist, device: torch.device) -> dict:
    t_start = time.perf_counter()
    out = Path(cfg.out_dir)
    ckpt_path, best_path, metrics_path = out / "ckpt.pt", out / "best.pt", out / "metrics.jsonl"

    # ---- checkpoints we start from (read first: a bad one stops everything early) ----------
    resume_ckpt, resume_path = None, None
    if resume:
        resume_path = ckpt_path if resume is True or str(resume) == "auto" else Path(resume)
        resume_ckpt = load_checkpoint(resume_path)
    elif ckpt_path.exists() and not overwrite:
        raise ValueError(f"{out} already holds a run (ckpt.pt): resume it (--resume), pick another out_dir, "
                         f"or overwrite it (--force)")
    init_ckpt = None
    if cfg.init_from and not resume:
        init_ckpt = load_checkpoint(cfg.init_from)

    # ---- problems and tokenizer -------------------------------------------------------------------
    splits, task_record = load_splits(cfg.task, cfg.data, cfg.seed)
    if not splits["train"]:
        raise ValueError("the task has no training problems")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        if resume_ckpt is not None:
            src = _ckpt_tokenizer(resume_ckpt, resume_path)
            if src.resolve() != (out / "tokenizer.bin").resolve():
                _copy_tokenizer(src, out)
        elif cfg.tokenizer:
            _copy_tokenizer(Path(cfg.tokenizer), out)
        elif init_ckpt is not None:
            _copy_tokenizer(_ckpt_tokenizer(init_ckpt, Path(cfg.init_from)), out)
        else:
            from tinymath.tokenizer import train_tokenizer

            train_tokenizer([p.line for p in splits["train"]], out, preset=cfg.tokenizer_preset,
                            vocab_size=cfg.tokenizer_vocab_size)
    dist.barrier()
    from tinymath.tokenizer import Tokenizer

    tok_path = (out / "tokenizer.bin").resolve()
    tok = Tokenizer.load(tok_path)
    tok_model = tok_path.with_suffix(".model")

    enc = {name: encode(probs, tok) for name, probs in splits.items()}
    longest = max(e.max_len for e in enc.values() if len(e))

    # ---- model ------------------------------------------------------------------------------------------
    if init_ckpt is not None:
        src_cfg = ModelConfig.from_dict(init_ckpt["model_config"])
        section = ModelSection(**{**cfg.model.__dict__, **{k: getattr(src_cfg, k) for k in (
            "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "norm_eps", "rope_theta", "tied")},
            "params": None, "max_seq_len": cfg.model.max_seq_len or max(src_cfg.max_seq_len, longest)})
        mcfg = resolve_model_config(section, tok.vocab_size, longest)
        if src_cfg.vocab_size != tok.vocab_size:
            raise ValueError(f"--init-from: {cfg.init_from} has vocab_size {src_cfg.vocab_size}, "
                             f"its tokenizer has {tok.vocab_size}")
    else:
        mcfg = resolve_model_config(cfg.model, tok.vocab_size, longest)
    if resume_ckpt is not None:
        old = resume_ckpt["model_config"]
        for k, v in mcfg.to_dict().items():
            if old.get(k) != v:
                raise ValueError(f"--resume: {resume_path} holds a model with {k}={old.get(k)!r}, but the config "
                                 f"asks for {k}={v!r} (same model shape needed to resume)")

    threads = cfg.threads or auto_threads(mcfg.n_params(), dist.world)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model = Transformer(mcfg)
    if init_ckpt is not None:
        state = init_ckpt["model"]
        model.load_state_dict(state)
    model.to(device)
    opt = make_optimizer(model, cfg, device)

    step, tokens_seen, elapsed, best_acc, metrics, loss_acc = 0, 0, 0.0, -1.0, {}, None
    # (sum of answer-token losses, answer tokens) since the last evaluation, for the logged loss
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    loss_sum = torch.zeros(2, dtype=acc_dtype, device=device)
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model"])
        opt.load_state_dict(resume_ckpt["optimizer"])
        step, tokens_seen = int(resume_ckpt["step"]), int(resume_ckpt["tokens_seen"])
        elapsed = float(resume_ckpt.get("elapsed", 0.0))
        best_acc = float(resume_ckpt.get("best_val_acc", -1.0))
        metrics = dict(resume_ckpt.get("metrics") or {})
        set_rng_state(resume_ckpt.get("rng") or {})
        loss_acc = resume_ckpt.get("loss_acc")

    if loss_acc is not None and dist.world == 1:
        loss_sum += torch.tensor(loss_acc, dtype=acc_dtype, device=device)
    train_model: torch.nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model, dynamic=True)
    amp = _autocast(device, cfg.dtype)

    batches = Batches(enc["train"], cfg.batch_size, cfg.seed, cfg.bucket, dist.rank, dist.world)
    rng = torch.Generator().manual_seed(cfg.seed + 17)
    val_enc, hold_enc = enc["val"], enc["holdout"]
    if cfg.eval_max:
        if len(val_enc) > cfg.eval_max:
            val_enc = subset(val_enc, sorted(torch.randperm(len(val_enc), generator=rng)[:cfg.eval_max].tolist()))
        if len(hold_enc) > cfg.eval_max:
            hold_enc = subset(hold_enc, sorted(torch.randperm(len(hold_enc), generator=rng)[:cfg.eval_max].tolist()))

    saved_config = cfg.to_dict()
    saved_config["task"] = task_record

    def checkpoint(m: dict) -> dict:
        return {
            "version": FORMAT_VERSION,
            "model_config": mcfg.to_dict(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "tokens_seen": tokens_seen,
            "train_config": saved_config,
            "task": task_record,
            "tokenizer": str(tok_path),
            "tokenizer_model": str(tok_model) if tok_model.is_file() else None,
            "metrics": m,
            "best_val_acc": best_acc,
            "elapsed": elapsed,
            "loss_acc": loss_sum.tolist(),
            "rng": rng_state(),
        }

    if dist.main:
        lines = _read_metrics(metrics_path, step) if resume_ckpt is not None else []
        # atomically: a kill here must not lose the history (metrics) or leave half a config
        fileio.write_text(metrics_path, "".join(line + "\n" for line in lines))
        fileio.write_text(out / "config.json", json.dumps(saved_config, indent=2, sort_keys=True) + "\n")

    def log(record: dict) -> None:
        if dist.main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    bar = None
    if cfg.progress and dist.main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {out.name}", unit="step", dynamic_ncols=True,
                   leave=True)

    def run_eval() -> dict:
        # evaluation in float32 even when training autocasts to bf16: the accuracy is the fp32
        # model's, the one export writes and the C runner runs
        val = evaluate(model, val_enc, tok, device, cfg.eval_batch_size, cfg.eval_decode, dist=dist)
        hold = (evaluate(model, hold_enc, tok, device, cfg.eval_batch_size, cfg.eval_decode, dist=dist)
                if len(hold_enc) else None)
        return {"val_acc": val["acc"], "val_by_op": val["by_op"], "val_n": val["n"],
                "holdout_acc": hold["acc"] if hold else None, "holdout_by_op": hold["by_op"] if hold else {},
                "holdout_n": hold["n"] if hold else 0}

    # ---- the loop ---------------------------------------------------------------------------------------------
    interrupted, stop_reason = False, None
    t0 = time.perf_counter()
    setup_s = t0 - t_start
    excluded = 0.0  # time spent in on_eval callbacks
    last_eval_step = step if resume_ckpt is not None else -1
    train_model.train()
    with _Interrupt() as intr:
        while True:
            done = step >= cfg.max_steps
            if not done:
                lr = lr_at(step, cfg)
                for g in opt.param_groups:
                    g["lr"] = lr
                loss_total, n_local, n_tok = train_step(train_model, model, opt, batches, step, cfg.grad_clip,
                                                        device, amp, dist.world)
                step += 1
                tokens_seen += n_tok
                loss_sum[0] += loss_total.to(acc_dtype)  # stays on the device: no sync per step
                loss_sum[1] += n_local
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(loss=f"{loss_sum[0].item() / max(1, loss_sum[1].item()):.4f}",
                                        lr=f"{lr:.2e}", val=_pct(metrics.get("val_acc")),
                                        hold=_pct(metrics.get("holdout_acc")), refresh=False)
            now_elapsed = elapsed + (time.perf_counter() - t0) - excluded
            want_stop = intr.flag or (interrupt_at is not None and step >= interrupt_at)
            if cfg.max_time is not None and now_elapsed >= cfg.max_time:
                stop_reason = stop_reason or "max_time"
            if dist.enabled:
                want_stop = dist.any(want_stop)
                if stop_reason is None and dist.any(cfg.max_time is not None and now_elapsed >= cfg.max_time):
                    stop_reason = "max_time"
            if want_stop:
                interrupted = True
                break
            if done and stop_reason is None:
                stop_reason = "max_steps"
            if step != last_eval_step and (step % cfg.eval_every == 0 or stop_reason is not None):
                last_eval_step = step
                dist.sum_(loss_sum)
                ev = run_eval()
                elapsed_now = elapsed + (time.perf_counter() - t0) - excluded
                metrics = {"step": step, "tokens": tokens_seen, "epoch": round(batches.epoch_of(step), 3),
                           "loss": loss_sum[0].item() / max(1.0, loss_sum[1].item()), "lr": lr_at(step - 1, cfg),
                           **ev, "time": round(elapsed_now, 3)}
                loss_sum.zero_()
                improved = metrics["val_acc"] is not None and metrics["val_acc"] > best_acc
                if improved:
                    best_acc = metrics["val_acc"]
                if dist.main:
                    # the record first, then the checkpoint: a kill between the two resumes from the
                    # previous checkpoint, which drops this record and logs it again (the other order
                    # would resume past this step without ever logging it)
                    log(metrics)
                    ck = checkpoint(metrics)
                    ck["elapsed"] = elapsed_now
                    if improved:  # before ckpt.pt, for the same reason: ckpt.pt already counts it as the best
                        save_checkpoint(best_path, ck)
                    save_checkpoint(ckpt_path, ck)
                if bar is not None:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}",
                                    val=_pct(metrics["val_acc"]), hold=_pct(metrics["holdout_acc"]), refresh=True)
                if cfg.target_acc is not None and (metrics["val_acc"] or 0) >= cfg.target_acc and stop_reason is None:
                    stop_reason = "target_acc"
                if on_eval is not None:
                    tc = time.perf_counter()
                    if on_eval(dict(metrics), model) and stop_reason is None:
                        stop_reason = "callback"
                    excluded += time.perf_counter() - tc
            if stop_reason is not None:
                break
    elapsed += (time.perf_counter() - t0) - excluded
    if bar is not None:
        bar.close()

    summary = {"out_dir": str(out), "step": step, "tokens_seen": tokens_seen, "elapsed": elapsed,
               "setup_s": setup_s, "interrupted": interrupted, "stop_reason": "interrupted" if interrupted else stop_reason,
               "ckpt": str(ckpt_path), "best": str(best_path), "n_params": mcfg.n_params(),
               "model_config": mcfg.to_dict(), "threads": threads, "device": str(device)}
    if interrupted:
        if dist.main:  # the state after the last completed step; resuming continues from exactly here
            ck = checkpoint(metrics)
            save_checkpoint(ckpt_path, ck)
        summary["metrics"] = metrics
        return summary

    # ---- the end: test, once -------------------------------------------------------------------------------------
    final = dict(metrics)
    if cfg.test_at_end and len(enc["test"]):
        test = evaluate(model, enc["test"], tok, device, cfg.eval_batch_size, True, dist=dist)
        final.update({"test_acc": test["acc"], "test_by_op": test["by_op"], "test_n": test["n"]})
    final["stop_reason"] = stop_reason
    if dist.main:
        ck = checkpoint(final)
        save_checkpoint(ckpt_path, ck)
        if best_path.is_file():
            best = load_checkpoint(best_path)
            if best["step"] == step:
                save_checkpoint(best_path, ck)
            elif cfg.test_at_end and len(enc["test"]):
                probe = Transformer(mcfg).to(device)
                probe.load_state_dict(best["model"])
                t = evaluate(probe, enc["test"], tok, device, cfg.eval_batch_size, True)
                best["metrics"] = {**best["metrics"], "test_acc": t["acc"], "test_by_op": t["by_op"], "test_n": t["n"]}
                save_checkpoint(best_path, best)
        log({"event": "final", **final})
    summary["metrics"] = final
    return summary
