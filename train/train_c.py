"""The C engine's training loop (engine c): runc/train.c takes every step, and nothing here needs torch.

`train_c(cfg)` is what `train(cfg)` runs for engine c, with the PyTorch loop's
behaviour: the same data stream (batch k of a run is the PyTorch engine's batch k,
data.Batches), the learning-rate schedule (schedule.lr_at), periodic greedy
exact-match on val and holdout and the test split once at the end (runc_eval:
runc's batch engine on the current weights), metrics.jsonl, tqdm, best.pt and
ckpt.pt written atomically, exact resumption (bit for bit with the same thread
count), SIGINT after a step, on_eval callbacks. What it shares with the PyTorch
loop (the run's start, evaluation subsets, checkpoint fields, run files, SIGINT)
lives in loop.py.

Checkpoints are in checkpoint.py's arrays format (a zip of .npy arrays and JSON):
written and read without torch, read by the PyTorch engine too (--resume,
--init-from), by export and by inspect. Either engine resumes the other's
checkpoints (torch's format needs torch installed to read).

Initial weights: torch's (Transformer under torch.manual_seed(seed), the PyTorch
engine's start, so the two engines track each other) when torch is installed,
else numpy's draw of the same distributions (normal 0.02, residual projections
0.02/sqrt(2 n_layers), norms 1) from seed. The summary's "init" says which; a
resumed or --init-from run starts from its checkpoint's weights either way.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import numpy as np

from .checkpoint import load_checkpoint, save_array_checkpoint
from .config import TrainConfig
from .data import Batches
from .engine_c import CEngine, CEngineError
from .loop import Interrupt, RunStart, auto_threads, checkpoint_fields, eval_sets, log_record, open_run, pct, start_files
from .model_config import ModelConfig
from .runc_eval import RuncEvaluator
from .schedule import lr_at

NAN_STATUS = 21  # RUNC_E_WEIGHT: a NaN or infinite loss or gradient; nothing was updated


def initial_weights(mcfg: ModelConfig, seed: int, tensors: list[tuple[str, int, tuple[int, ...], bool]]
                    ) -> tuple[dict[str, np.ndarray], str]:
    """(weights, "torch" or "numpy"): see the module docstring."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        from .model import Transformer

        torch.manual_seed(seed)
        return {k: v.numpy() for k, v in Transformer(mcfg).state_dict().items()}, "torch"
    rng = np.random.default_rng(seed)
    weights = {}
    for name, _, shape, _ in tensors:
        if len(shape) == 1:
            weights[name] = np.ones(shape, dtype=np.float32)
        else:
            residual = name.endswith("wo.weight") or name.endswith("w2.weight")
            std = 0.02 / math.sqrt(2 * mcfg.n_layers) if residual else 0.02
            weights[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return weights, "numpy"


def train_c(cfg: TrainConfig, resume=None, *, overwrite: bool = False,
            on_eval: Callable[[dict, CEngine], bool | None] | None = None, interrupt_at: int | None = None) -> dict:
    """train.train for engine c (same arguments and summary; on_eval gets the CEngine, whose
    state_dict() holds the weights as numpy arrays)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("train config: engine c runs in one process (its threads split the batch), not under torchrun")
    t_start = time.perf_counter()
    run = open_run(cfg, resume, overwrite, numpy=True)
    threads = cfg.threads or auto_threads(run.mcfg.n_params())
    with CEngine(run.mcfg, max_batch=cfg.batch_size, threads=threads, beta1=cfg.beta1, beta2=cfg.beta2,
                 adam_eps=cfg.adam_eps, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip) as eng:
        return _Loop(cfg, run, eng, threads, t_start).run(on_eval, interrupt_at)


class _Loop:
    """One run's state: the engine, counters, the latest metrics; `run` steps until a stop."""

    def __init__(self, cfg: TrainConfig, run: RunStart, eng: CEngine, threads: int, t_start: float):
        self.cfg, self.run_start, self.eng, self.threads, self.t_start = cfg, run, eng, threads, t_start
        self.step, self.tokens_seen, self.elapsed, self.best_acc, self.metrics = 0, 0, 0.0, -1.0, {}
        self.loss_acc = [0.0, 0]  # (summed answer-token loss, answer tokens) since the last evaluation
        ck = run.resume_ckpt or run.init_ckpt
        if ck is not None:
            eng.load_state_dict(ck["model"])
            self.init = "checkpoint"
        else:
            weights, self.init = initial_weights(run.mcfg, cfg.seed, eng.tensors)
            eng.load_state_dict(weights)
        if run.resume_ckpt is not None:
            r = run.resume_ckpt
            eng.load_optimizer_state_dict(r["optimizer"])
            self.step, self.tokens_seen = int(r["step"]), int(r["tokens_seen"])
            self.elapsed = float(r.get("elapsed", 0.0))
            self.best_acc = float(r.get("best_val_acc", -1.0))
            self.metrics = dict(r.get("metrics") or {})
            if r.get("loss_acc") is not None:
                self.loss_acc = [float(r["loss_acc"][0]), r["loss_acc"][1]]
        self.batches = Batches(run.enc["train"], cfg.batch_size, cfg.seed, cfg.bucket)
        self.val, self.hold = eval_sets(run, cfg)
        self.evaluator = RuncEvaluator(run.mcfg, run.tok_path, run.fmt, threads)

    # ---- pieces -------------------------------------------------------------------------------------
    def checkpoint(self, metrics: dict, weights: dict | None = None) -> dict:
        cfg = self.cfg
        opt = self.eng.optimizer_state_dict(lr_at(max(0, self.step - 1), cfg), cfg.weight_decay,
                                            (cfg.beta1, cfg.beta2), cfg.adam_eps)
        return checkpoint_fields(self.run_start, model=weights or self.eng.state_dict(), optimizer=opt,
                                 step=self.step, tokens_seen=self.tokens_seen, metrics=metrics,
                                 best_acc=self.best_acc, elapsed=self.elapsed, loss_acc=list(self.loss_acc), rng={})

    def take_step(self) -> float:
        lr = lr_at(self.step, self.cfg)
        x, y, n_tok, _ = self.batches.get(self.step)
        try:
            loss_sum, n_ans = self.eng.step(x, y, lr)
        except CEngineError as e:
            if e.code == NAN_STATUS:
                raise FloatingPointError(f"step {self.step}: {e} (training stopped; the last checkpoint is the "
                                         f"last good state)") from None
            raise
        self.step += 1
        self.tokens_seen += n_tok
        self.loss_acc[0] += loss_sum
        self.loss_acc[1] += n_ans
        return lr

    def evaluate(self, weights: dict) -> dict:
        val = self.evaluator.evaluate(weights, self.val)
        hold = self.evaluator.evaluate(weights, self.hold) if len(self.hold) else None
        return {"val_acc": val["acc"], "val_by_op": val["by_op"], "val_n": val["n"],
                "holdout_acc": hold["acc"] if hold else None, "holdout_by_op": hold["by_op"] if hold else {},
                "holdout_n": hold["n"] if hold else 0}

    def test(self, weights: dict) -> dict:
        t = self.evaluator.evaluate(weights, self.run_start.enc["test"])
        return {"test_acc": t["acc"], "test_by_op": t["by_op"], "test_n": t["n"]}

    def loss(self) -> float:
        return self.loss_acc[0] / max(1, self.loss_acc[1])

    # ---- the loop (train_torch.py's, step for step) --------------------------------------------------
    def run(self, on_eval, interrupt_at) -> dict:
        cfg, run = self.cfg, self.run_start
        start_files(run, self.step)
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc=f"train {run.out.name}", unit="step",
                       dynamic_ncols=True, leave=True)
        interrupted, stop_reason = False, None
        t0 = time.perf_counter()
        setup_s = t0 - self.t_start
        excluded = 0.0  # time spent in on_eval callbacks
        last_eval_step = self.step if run.resume_ckpt is not None else -1
        with Interrupt() as intr:
            while True:
                done = self.step >= cfg.max_steps
                if not done:
                    lr = self.take_step()
                    if bar is not None:
                        bar.update(1)
                        if self.step % 10 == 0:
                            bar.set_postfix(loss=f"{self.loss():.4f}", lr=f"{lr:.2e}",
                                            val=pct(self.metrics.get("val_acc")),
                                            hold=pct(self.metrics.get("holdout_acc")), refresh=False)
                now_elapsed = self.elapsed + (time.perf_counter() - t0) - excluded
                if cfg.max_time is not None and now_elapsed >= cfg.max_time:
                    stop_reason = stop_reason or "max_time"
                if intr.flag or (interrupt_at is not None and self.step >= interrupt_at):
                    interrupted = True
                    break
                if done and stop_reason is None:
                    stop_reason = "max_steps"
                if self.step != last_eval_step and (self.step % cfg.eval_every == 0 or stop_reason is not None):
                    last_eval_step = self.step
                    stop_reason = self.periodic(bar, t0, excluded, stop_reason)
                    if on_eval is not None:
                        tc = time.perf_counter()
                        if on_eval(dict(self.metrics), self.eng) and stop_reason is None:
                            stop_reason = "callback"
                        excluded += time.perf_counter() - tc
                if stop_reason is not None:
                    break
        self.elapsed += (time.perf_counter() - t0) - excluded
        if bar is not None:
            bar.close()
        summary = {"out_dir": str(run.out), "step": self.step, "tokens_seen": self.tokens_seen,
                   "elapsed": self.elapsed, "setup_s": setup_s, "interrupted": interrupted,
                   "stop_reason": "interrupted" if interrupted else stop_reason, "ckpt": str(run.ckpt_path),
                   "best": str(run.best_path), "n_params": run.mcfg.n_params(), "model_config": run.mcfg.to_dict(),
                   "threads": self.threads, "device": "cpu", "engine": "c", "kernels": self.eng.kernels,
                   "init": self.init}
        if interrupted:  # the state after the last completed step; resuming continues from exactly here
            save_array_checkpoint(run.ckpt_path, self.checkpoint(self.metrics))
            summary["metrics"] = self.metrics
            return summary
        summary["metrics"] = self.finish(stop_reason)
        return summary

    def periodic(self, bar, t0: float, excluded: float, stop_reason: str | None) -> str | None:
        """Evaluate, log, checkpoint (best.pt before ckpt.pt); the stop reason, target_acc if reached."""
        cfg, run = self.cfg, self.run_start
        weights = self.eng.state_dict()
        ev = self.evaluate(weights)
        elapsed_now = self.elapsed + (time.perf_counter() - t0) - excluded
        self.metrics = {"step": self.step, "tokens": self.tokens_seen,
                        "epoch": round(self.batches.epoch_of(self.step), 3), "loss": self.loss(),
                        "lr": lr_at(self.step - 1, cfg), **ev, "time": round(elapsed_now, 3)}
        self.loss_acc = [0.0, 0]
        improved = self.metrics["val_acc"] is not None and self.metrics["val_acc"] > self.best_acc
        if improved:
            self.best_acc = self.metrics["val_acc"]
        # the record first, then the checkpoints (best.pt first): train_torch.py says why
        log_record(run, self.metrics)
        ck = self.checkpoint(self.metrics, weights)
        ck["elapsed"] = elapsed_now
        if improved:
            save_array_checkpoint(run.best_path, ck)
        save_array_checkpoint(run.ckpt_path, ck)
        if bar is not None:
            bar.set_postfix(loss=f"{self.metrics['loss']:.4f}", lr=f"{self.metrics['lr']:.2e}",
                            val=pct(self.metrics["val_acc"]), hold=pct(self.metrics["holdout_acc"]), refresh=True)
        if cfg.target_acc is not None and (self.metrics["val_acc"] or 0) >= cfg.target_acc and stop_reason is None:
            return "target_acc"
        return stop_reason

    def finish(self, stop_reason: str | None) -> dict:
        """The test split once (the last weights, and best.pt's if they differ); the final checkpoints."""
        cfg, run = self.cfg, self.run_start
        testing = cfg.test_at_end and len(run.enc["test"])
        final = dict(self.metrics)
        weights = self.eng.state_dict()
        if testing:
            final.update(self.test(weights))
        final["stop_reason"] = stop_reason
        ck = self.checkpoint(final, weights)
        save_array_checkpoint(run.ckpt_path, ck)
        if run.best_path.is_file():
            best = load_checkpoint(run.best_path, arrays="numpy")
            if best["step"] == self.step:
                save_array_checkpoint(run.best_path, ck)
            elif testing:
                best["metrics"] = {**best["metrics"], **self.test(best["model"])}
                save_array_checkpoint(run.best_path, best)
        log_record(run, {"event": "final", **final})
        return final
