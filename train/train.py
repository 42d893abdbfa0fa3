"""The training loop.

`train(cfg)` runs one TrainConfig end to end: problems (from the task spec or a
data file), the tokenizer (trained on the train lines, or given, or the
init-from checkpoint's), the model, AdamW with warm-up + cosine decay and
gradient clipping, answer-only loss, periodic greedy exact-match evaluation on
val and holdout (per op, as JSON lines in metrics.jsonl and in a tqdm bar),
atomic checkpoints (ckpt.pt latest, best.pt best val), a final test evaluation,
exact resumption, SIGINT handling, DDP under torchrun.

The loop reads top to bottom: the checkpoints it starts from, the problems and
the tokenizer, the model, then steps with periodic evaluation, then the test
split once. Its parts live beside it: the device and process group (device.py),
the shape (shape.py), AdamW and the schedule (optim.py), the greedy evaluation
(greedy_eval.py), checkpoint I/O (checkpoint.py) and the run folder's other files
(run_files.py).

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
import os
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
from .data import IGNORE, Batches, answer_format, encode, load_splits
from .device import Dist, auto_threads, autocast, resolve_device
from .greedy_eval import evaluate, subset
from .model import ModelConfig, Transformer
from .optim import AdamW, clip_grad_norm, lr_at, make_optimizer
from .run_files import ckpt_tokenizer, copy_tokenizer, read_metrics
from .shape import check_shape_fields, resolve_model_config


# ---- one step ---------------------------------------------------------------------------------

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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


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
    device = resolve_device("cpu" if cfg.engine == "c" else cfg.device, dist.local_rank)
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
    fmt = answer_format(task_record)
    if not splits["train"]:
        raise ValueError("the task has no training problems")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        if resume_ckpt is not None:
            src = ckpt_tokenizer(resume_ckpt, resume_path)
            if src.resolve() != (out / "tokenizer.bin").resolve():
                copy_tokenizer(src, out)
        elif cfg.tokenizer:
            copy_tokenizer(Path(cfg.tokenizer), out)
        elif init_ckpt is not None:
            copy_tokenizer(ckpt_tokenizer(init_ckpt, Path(cfg.init_from)), out)
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
    amp = autocast(device, cfg.dtype)
    c_engine = None  # engine c: runc/train.c takes the steps; model and opt mirror it (engine_c.TorchBridge)
    if cfg.engine == "c":
        if dist.enabled:
            raise ValueError("train config: engine c runs in one process (its threads split the batch), not "
                             "under torchrun")
        from .engine_c import TorchBridge

        c_engine = TorchBridge(model, opt, cfg, threads)

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
        lines = read_metrics(metrics_path, step) if resume_ckpt is not None else []
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
        val = evaluate(model, val_enc, tok, device, cfg.eval_batch_size, cfg.eval_decode, dist=dist, fmt=fmt)
        hold = (evaluate(model, hold_enc, tok, device, cfg.eval_batch_size, cfg.eval_decode, dist=dist, fmt=fmt)
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
                if c_engine is not None:
                    loss_total, n_local, n_tok = c_engine.step(batches, step, lr)
                else:
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
                if c_engine is not None:
                    c_engine.sync()
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
               "setup_s": setup_s, "interrupted": interrupted,
               "stop_reason": "interrupted" if interrupted else stop_reason,
               "ckpt": str(ckpt_path), "best": str(best_path), "n_params": mcfg.n_params(),
               "model_config": mcfg.to_dict(), "threads": threads, "device": str(device),
               "engine": cfg.engine}
    if c_engine is not None:
        c_engine.sync()
        c_engine.close()
    if interrupted:
        if dist.main:  # the state after the last completed step; resuming continues from exactly here
            ck = checkpoint(metrics)
            save_checkpoint(ckpt_path, ck)
        summary["metrics"] = metrics
        return summary

    # ---- the end: test, once -------------------------------------------------------------------------------------
    final = dict(metrics)
    if cfg.test_at_end and len(enc["test"]):
        test = evaluate(model, enc["test"], tok, device, cfg.eval_batch_size, True, dist=dist, fmt=fmt)
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
                t = evaluate(probe, enc["test"], tok, device, cfg.eval_batch_size, True, fmt=fmt)
                best["metrics"] = {**best["metrics"], "test_acc": t["acc"], "test_by_op": t["by_op"], "test_n": t["n"]}
                save_checkpoint(best_path, best)
        log({"event": "final", **final})
    summary["metrics"] = final
    return summary
