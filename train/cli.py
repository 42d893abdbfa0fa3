"""`tinymath train`: train a tiny Llama on a task.

    tinymath train --config add.toml
    tinymath train --task '{"task": "arith", "ops": "+"}' --params 50000 --out runs/add
    tinymath train --config add.toml --set lr=3e-3 --set model.dim=64
    tinymath train --out runs/add --resume            # continue runs/add/ckpt.pt exactly
    tinymath train --config sub.toml --init-from runs/add/best.pt   # fine-tune on another task
    torchrun --nproc_per_node 2 -m tinymath.cli train --config add.toml   # DDP

Precedence: the config file, then explicit flags, then --set overrides. With
--resume and no --config, the checkpoint's own config is used (flags and --set
still apply on top, e.g. a larger max_steps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="TOML or JSON config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys: model.dim=64, task.ops='+-'); repeatable")
    p.add_argument("--out", dest="out_dir", help="run folder (out_dir)")
    p.add_argument("--task", help="task spec as JSON, e.g. '{\"task\": \"arith\", \"ops\": \"+\"}', "
                                  "or a preset name (classic, digits, ...)")
    p.add_argument("--data", help="file of `prompt = answer` lines, or a folder with train/val/test.txt")
    p.add_argument("--tokenizer", help="tokenizer.bin to use (default: train one on the training lines)")
    p.add_argument("--params", type=int, help="target parameter count (model.params)")
    p.add_argument("--dim", type=int, help="model.dim")
    p.add_argument("--n-layers", type=int, help="model.n_layers")
    p.add_argument("--n-heads", type=int, help="model.n_heads")
    p.add_argument("--n-kv-heads", type=int, help="model.n_kv_heads")
    p.add_argument("--max-steps", type=int, help="max_steps")
    p.add_argument("--batch-size", type=int, help="batch_size")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int, help="seed of model init and data order")
    p.add_argument("--target-acc", type=float, help="stop once val exact-match reaches this (0..1)")
    p.add_argument("--eval-every", type=int, help="steps between evaluations/checkpoints")
    p.add_argument("--device", help="auto, cpu, cuda, mps")
    p.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    p.add_argument("--engine", choices=("torch", "c"), help="training engine: torch (default) or c (runc/train.c, CPU)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--init-from", help="checkpoint to fine-tune from (weights only, fresh optimizer)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue a run exactly (default: OUT/ckpt.pt)")
    p.add_argument("--force", action="store_true", help="start afresh even if OUT already holds a run")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")


_FLAG_KEYS = {
    "out_dir": "out_dir", "data": "data", "tokenizer": "tokenizer", "params": "model.params", "dim": "model.dim",
    "n_layers": "model.n_layers", "n_heads": "model.n_heads", "n_kv_heads": "model.n_kv_heads",
    "max_steps": "max_steps", "batch_size": "batch_size", "lr": "lr", "seed": "seed", "target_acc": "target_acc",
    "eval_every": "eval_every", "device": "device", "threads": "threads", "compile": "compile",
    "init_from": "init_from", "engine": "engine",
}


def _task_from_arg(text: str) -> dict:
    text = text.strip()
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--task: not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError("--task: expected a JSON object")
        return d
    from tinymath.tasks import PRESETS

    if text not in PRESETS:
        raise ValueError(f"--task: unknown preset {text!r} (known: {', '.join(PRESETS)}) and not a JSON object")
    d = dict(PRESETS[text])
    if isinstance(d.get("holdout"), tuple):
        d["holdout"] = list(d["holdout"])
    if isinstance(d.get("modules"), tuple):
        d["modules"] = list(d["modules"])
    return d


def resolve(args: argparse.Namespace):
    """(TrainConfig, resume path or None) from parsed arguments."""
    from .checkpoint import load_checkpoint
    from .config import _merge, apply_override, load_file, TrainConfig

    d: dict = {}
    resume = args.resume
    if resume is not None:
        path = Path(resume) if resume != "auto" else None
        if path is None:
            out = args.out_dir
            if out is None and args.config:
                out = load_file(args.config).get("out_dir")
            if out is None:
                out = TrainConfig().out_dir
            path = Path(out) / "ckpt.pt"
        resume = path
        if not args.config:  # the run's own config
            d = dict(load_checkpoint(path, arrays="numpy")["train_config"])
            task = d.get("task") or {}
            if task.get("task") == "folder":
                d["data"], d["task"] = task["path"], {}
            elif task.get("task") == "file" and d.get("data"):
                d["task"] = {}
    if args.config:
        _merge(d, load_file(args.config))
    for attr, key in _FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            apply_override(d, f"{key}={json.dumps(value)}")
    if args.task:
        d["task"] = _task_from_arg(args.task)
    if args.no_progress:
        d["progress"] = False
    for item in args.overrides:
        apply_override(d, item)
    cfg = TrainConfig.from_dict(d)
    cfg.validate()
    return cfg, resume


def run(args: argparse.Namespace) -> int:
    from .train import train

    cfg, resume = resolve(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        return 0
    summary = train(cfg, resume=resume, overwrite=args.force)
    if int(__import__("os").environ.get("RANK", "0")) != 0:
        return 0
    m = summary.get("metrics") or {}
    if summary["interrupted"]:
        print(f"interrupted at step {summary['step']}; checkpoint saved: {summary['ckpt']} "
              f"(continue with --resume)", file=sys.stderr)
        return 130

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    print(f"{summary['out_dir']}: {summary['n_params']:,} params, {summary['step']} steps, "
          f"{summary['tokens_seen']:,} tokens, {summary['elapsed']:.1f} s ({summary['stop_reason']})")
    print(f"  val {pct(m.get('val_acc'))}  holdout {pct(m.get('holdout_acc'))}  test {pct(m.get('test_acc'))}")
    print(f"  checkpoints: {summary['ckpt']}, {summary['best']}")
    return 0
