"""`train(cfg)`: one TrainConfig end to end, on the engine it names (no torch imported here).

engine torch runs train_torch.py's loop (PyTorch; CPU, CUDA, MPS, DDP under torchrun);
engine c runs train_c.py's (runc/train.c on the CPU; trains, checkpoints, resumes and
evaluates without torch installed). Both keep the same run folder: metrics.jsonl,
config.json, tokenizer.bin, ckpt.pt and best.pt (checkpoint.py: torch's format for
engine torch, the arrays format for engine c; each engine reads both).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .config import TrainConfig
from .shape import check_shape_fields


def train(cfg: TrainConfig, resume: str | os.PathLike | bool | None = None, *, overwrite: bool = False,
          on_eval: Callable[[dict, Any], bool | None] | None = None, interrupt_at: int | None = None) -> dict:
    """Run training; return a summary {"out_dir", "step", "tokens_seen", "elapsed", "metrics", "interrupted", ...}.

    resume: a checkpoint path, or True for `out_dir/ckpt.pt`: continue that run exactly.
    overwrite: start afresh even if out_dir already holds a run.
    on_eval(metrics, model): called after each periodic evaluation with the torch model (engine
        torch) or the CEngine (engine c); returning True stops training (benchmarks use it); its
        time is not counted in `elapsed`.
    interrupt_at: act as if SIGINT arrived right after this step (tests).
    """
    cfg.validate()
    check_shape_fields(cfg.model)
    if cfg.engine == "c":
        from .train_c import train_c

        return train_c(cfg, resume, overwrite=overwrite, on_eval=on_eval, interrupt_at=interrupt_at)
    from .train_torch import train_torch

    return train_torch(cfg, resume, overwrite=overwrite, on_eval=on_eval, interrupt_at=interrupt_at)
