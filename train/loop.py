"""What both engines' training loops share, none of it needing torch: the run's start (the
checkpoints it continues or starts from, the problems, the tokenizer, the model's shape), the
evaluation subsets, the checkpoint's fields, the run folder's files, SIGINT handling, and the
thread rule. train_torch.py (the PyTorch engine) and train_c.py (the C engine) build on it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tinymath import fileio

from .checkpoint import FORMAT_VERSION, load_checkpoint
from .config import ModelSection, TrainConfig
from .data import Encoded, answer_format, encode, load_splits, subset
from .model_config import ModelConfig
from .run_files import ckpt_tokenizer, copy_tokenizer, read_metrics
from .shape import resolve_model_config
from .torch_rng import TorchGenerator


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


class Interrupt:
    """SIGINT sets a flag the loop checks after each step; a second SIGINT raises at once."""

    def __init__(self) -> None:
        self.flag = False
        self._old = None

    def __enter__(self) -> "Interrupt":
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


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


@dataclass
class RunStart:
    """A run's starting point: its folder, the checkpoints it continues or starts from, the splits
    (tokenized), the tokenizer and the model's shape."""

    out: Path
    resume_ckpt: dict | None
    resume_path: Path | None
    init_ckpt: dict | None
    task_record: dict
    fmt: Any                       # the task's AnswerFormat (None for a folder of lines)
    tok: Any                       # tinymath.tokenizer.Tokenizer
    tok_path: Path
    enc: dict[str, Encoded]
    mcfg: ModelConfig
    saved_config: dict             # the resolved TrainConfig, task = the task record

    @property
    def ckpt_path(self) -> Path:
        return self.out / "ckpt.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"


def open_run(cfg: TrainConfig, resume: str | os.PathLike | bool | None, overwrite: bool, *, numpy: bool = False,
             main: bool = True, barrier: Callable[[], None] = lambda: None) -> RunStart:
    """Read the checkpoints first (a bad one stops everything early), then the problems, the tokenizer
    (trained, given, or the checkpoint's; by the main rank, the others wait at `barrier`) and the
    model's shape. numpy: checkpoints and encoded splits as numpy arrays (the C engine)."""
    kind = "numpy" if numpy else "torch"
    out = Path(cfg.out_dir)
    resume_ckpt, resume_path = None, None
    if resume:
        resume_path = out / "ckpt.pt" if resume is True or str(resume) == "auto" else Path(resume)
        resume_ckpt = load_checkpoint(resume_path, arrays=kind)
    elif (out / "ckpt.pt").exists() and not overwrite:
        raise ValueError(f"{out} already holds a run (ckpt.pt): resume it (--resume), pick another out_dir, "
                         f"or overwrite it (--force)")
    init_ckpt = load_checkpoint(cfg.init_from, arrays=kind) if cfg.init_from and not resume else None

    splits, task_record = load_splits(cfg.task, cfg.data, cfg.seed)
    if not splits["train"]:
        raise ValueError("the task has no training problems")
    if main:
        _place_tokenizer(cfg, out, splits, resume_ckpt, resume_path, init_ckpt)
    barrier()
    from tinymath.tokenizer import Tokenizer

    tok_path = (out / "tokenizer.bin").resolve()
    tok = Tokenizer.load(tok_path)
    enc = {name: encode(probs, tok, numpy=numpy) for name, probs in splits.items()}
    longest = max(e.max_len for e in enc.values() if len(e))
    mcfg = _model_config(cfg, tok.vocab_size, longest, init_ckpt)
    if resume_ckpt is not None:
        old = resume_ckpt["model_config"]
        for k, v in mcfg.to_dict().items():
            if old.get(k) != v:
                raise ValueError(f"--resume: {resume_path} holds a model with {k}={old.get(k)!r}, but the config "
                                 f"asks for {k}={v!r} (same model shape needed to resume)")
    saved_config = cfg.to_dict()
    saved_config["task"] = task_record
    return RunStart(out, resume_ckpt, resume_path, init_ckpt, task_record, answer_format(task_record), tok,
                    tok_path, enc, mcfg, saved_config)


def _place_tokenizer(cfg: TrainConfig, out: Path, splits: dict, resume_ckpt: dict | None, resume_path: Path | None,
                     init_ckpt: dict | None) -> None:
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


def _model_config(cfg: TrainConfig, vocab_size: int, longest: int, init_ckpt: dict | None) -> ModelConfig:
    """The config's shape, or with --init-from the checkpoint's (its max_seq_len grown to fit)."""
    if init_ckpt is None:
        return resolve_model_config(cfg.model, vocab_size, longest)
    src_cfg = ModelConfig.from_dict(init_ckpt["model_config"])
    section = ModelSection(**{**cfg.model.__dict__, **{k: getattr(src_cfg, k) for k in (
        "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "norm_eps", "rope_theta", "tied")},
        "params": None, "max_seq_len": cfg.model.max_seq_len or max(src_cfg.max_seq_len, longest)})
    mcfg = resolve_model_config(section, vocab_size, longest)
    if src_cfg.vocab_size != vocab_size:
        raise ValueError(f"--init-from: {cfg.init_from} has vocab_size {src_cfg.vocab_size}, "
                         f"its tokenizer has {vocab_size}")
    return mcfg


def eval_sets(run: RunStart, cfg: TrainConfig) -> tuple[Encoded, Encoded]:
    """(val, holdout), each cut to a seeded eval_max problems (torch's randperm, either engine)."""
    g = TorchGenerator(cfg.seed + 17)
    picked = []
    for enc in (run.enc["val"], run.enc["holdout"]):
        if cfg.eval_max and len(enc) > cfg.eval_max:
            enc = subset(enc, sorted(g.randperm(len(enc))[:cfg.eval_max].tolist()))
        picked.append(enc)
    return picked[0], picked[1]


def checkpoint_fields(run: RunStart, *, model: dict, optimizer: dict, step: int, tokens_seen: int, metrics: dict,
                      best_acc: float, elapsed: float, loss_acc: list[float], rng: dict) -> dict:
    """The checkpoint dict (train/checkpoint.py lists the fields)."""
    tok_model = run.tok_path.with_suffix(".model")
    return {"version": FORMAT_VERSION, "model_config": run.mcfg.to_dict(), "model": model, "optimizer": optimizer,
            "step": step, "tokens_seen": tokens_seen, "train_config": run.saved_config, "task": run.task_record,
            "tokenizer": str(run.tok_path), "tokenizer_model": str(tok_model) if tok_model.is_file() else None,
            "metrics": metrics, "best_val_acc": best_acc, "elapsed": elapsed, "loss_acc": loss_acc, "rng": rng}


def start_files(run: RunStart, step: int) -> None:
    """metrics.jsonl (a resumed run's records up to its step) and config.json, each atomically: a kill
    here must not lose the history or leave half a config."""
    lines = read_metrics(run.metrics_path, step) if run.resume_ckpt is not None else []
    fileio.write_text(run.metrics_path, "".join(line + "\n" for line in lines))
    fileio.write_text(run.out / "config.json", json.dumps(run.saved_config, indent=2, sort_keys=True) + "\n")


def log_record(run: RunStart, record: dict) -> None:
    with open(run.metrics_path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
