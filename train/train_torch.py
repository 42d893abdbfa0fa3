"""The PyTorch engine's training loop (engine torch; train.train dispatches here).

`train_torch(cfg)` runs one TrainConfig end to end: problems (from the task spec or a
data file), the tokenizer (trained on the train lines, or given, or the
init-from checkpoint's), the model, AdamW with warm-up + cosine decay and
gradient clipping, answer-only loss, periodic greedy exact-match evaluation on
val and holdout (per op, as JSON lines in metrics.jsonl and in a tqdm bar),
atomic checkpoints (ckpt.pt latest, best.pt best val), a final test evaluation,
exact resumption, SIGINT handling, DDP under torchrun.

The loop reads top to bottom: the run's start (loop.open_run: the checkpoints it
starts from, the problems and the tokenizer, the shape), the model, then steps
with periodic evaluation, then the test split once. Its parts live beside it: the device and process group (device.py),
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
import os
import time
from typing import Callable

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import IGNORE, Batches
from .device import Dist, autocast, resolve_device
from .greedy_eval import evaluate
from .loop import Interrupt, auto_threads, checkpoint_fields, eval_sets, log_record, open_run, pct, start_files
from .model import Transformer
from .optim import AdamW, clip_grad_norm, make_optimizer
from .schedule import lr_at


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

def train_torch(cfg: TrainConfig, resume: str | os.PathLike | bool | None = None, *, overwrite: bool = False,
                on_eval: Callable[[dict, Transformer], bool | None] | None = None,
                interrupt_at: int | None = None) -> dict:
    """train.train for engine torch (the config already checked)."""
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
    run = open_run(cfg, resume, overwrite, main=dist.main, barrier=dist.barrier)
    out, mcfg, tok, enc, fmt = run.out, run.mcfg, run.tok, run.enc, run.fmt
    resume_ckpt, init_ckpt = run.resume_ckpt, run.init_ckpt
    ckpt_path, best_path = run.ckpt_path, run.best_path

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

    batches = Batches(enc["train"], cfg.batch_size, cfg.seed, cfg.bucket, dist.rank, dist.world)
    val_enc, hold_enc = eval_sets(run, cfg)

    def checkpoint(m: dict) -> dict:
        return checkpoint_fields(run, model=model.state_dict(), optimizer=opt.state_dict(), step=step,
                                 tokens_seen=tokens_seen, metrics=m, best_acc=best_acc, elapsed=elapsed,
                                 loss_acc=loss_sum.tolist(), rng=rng_state())

    if dist.main:
        start_files(run, step)

    def log(record: dict) -> None:
        if dist.main:
            log_record(run, record)

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
    with Interrupt() as intr:
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
                                        lr=f"{lr:.2e}", val=pct(metrics.get("val_acc")),
                                        hold=pct(metrics.get("holdout_acc")), refresh=False)
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
                                    val=pct(metrics["val_acc"]), hold=pct(metrics["holdout_acc"]), refresh=True)
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
