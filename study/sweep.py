"""`tinymath sweep STUDY.toml`: a study of sizes x variants x seeds, each trained, exported, evaluated.

A study file (TOML):

    name = "classic-ladder"
    seeds = [0, 1, 2]
    sizes = [1000, 3000, 10000]                        # target parameter counts, or
    # sizes = { from = 1000, to = 3000000, count = 10 }  # log-spaced
    [train]                                             # TrainConfig fields for every run
    max_steps = 2000
    [[variants]]                                        # the groups compared in the report
    name = "classic"
    task = { task = "arith" }
    [[variants]]
    name = "reversed"
    task = { task = "arith", format = "reversed" }
    train = { lr = 3e-3 }                               # optional per-variant overrides
    model = { n_layers = 1 }
    [[variants]]                                        # a curriculum: earlier stages first,
    name = "curriculum"                                 # each starting from the last one's weights
    task = { task = "arith" }
    stages = [{ task = { task = "count" }, train = { max_steps = 500 } },
              { task = { task = "arith", hi = 9 }, train = { max_steps = 500 } }]

Shapes follow ModelConfig.for_params' stated rule (n_layers, head_dim, hidden_multiple and tied
steer it). A variant whose model table gives `dim` fixes the whole shape instead (dim, n_layers,
n_heads, n_kv_heads, hidden_dim; e.g. grouped-query attention, which the rule never picks): such a
study has one size, a label for the run names, and result.json records the true count.
Each run lives in STUDY_DIR/runs/NAME/: the trainer's checkpoints and metrics,
model.bin (fp32, v1), model.q8.bin (int8, v2) with their cards, and result.json,
written last and atomically: a run with result.json is finished and skipped; a
run with a checkpoint but no result resumes from it. The training engine comes
from the study's [train] (engine = "c") or from `--engine`, which wins and, like
the progress bar, is how runs are computed, not part of the configuration they
record (a finished run stays finished); result.json's train.engine says which ran. results.jsonl is rebuilt
from the result files after every run, so several processes (`--shard K/N`)
can share one study folder.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tinymath import fileio


@dataclass
class Variant:
    name: str
    task: dict
    train: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)  # curriculum stages before the task: {task, train}


@dataclass
class Run:
    name: str
    variant: Variant
    size: int
    seed: int


@dataclass
class Study:
    name: str
    sizes: list[int]
    seeds: list[int]
    variants: list[Variant]
    train: dict = field(default_factory=dict)

    def runs(self) -> list[Run]:
        """Every run, in a fixed order: smallest models first, so early results come early."""
        return [Run(f"{v.name}-p{s}-s{seed}", v, s, seed)
                for seed in self.seeds for s in self.sizes for v in self.variants]


def log_sizes(lo: int, hi: int, count: int) -> list[int]:
    if count < 2 or lo <= 0 or hi <= lo:
        raise ValueError(f"study: sizes need 0 < from < to and count >= 2, got from={lo} to={hi} count={count}")
    return [int(round(lo * (hi / lo) ** (i / (count - 1)))) for i in range(count)]


def parse_study(d: dict, where: str = "study") -> Study:
    known = {"name", "seeds", "sizes", "train", "variants"}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    sizes = d.get("sizes")
    if isinstance(sizes, dict):
        sizes = log_sizes(int(sizes.get("from", 0)), int(sizes.get("to", 0)), int(sizes.get("count", 0)))
    if not sizes or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(f"{where}: sizes must be a non-empty list of positive parameter counts")
    seeds = d.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ValueError(f"{where}: seeds must be a non-empty list of non-negative integers")
    variants = []
    for i, v in enumerate(d.get("variants") or [{"name": "classic", "task": {"task": "arith"}}]):
        name = v.get("name")
        if not name or not re.fullmatch(r"[A-Za-z0-9_.=+-]+", name):
            raise ValueError(f"{where}: variant {i} needs a name of letters, digits and _ . = + - (got {name!r})")
        extra = set(v) - {"name", "task", "train", "model", "stages"}
        if extra:
            raise ValueError(f"{where}: variant {name!r} has unknown keys {sorted(extra)}")
        stages = list(v.get("stages") or [])
        for j, st in enumerate(stages):
            if not isinstance(st, dict) or not isinstance(st.get("task"), dict) or set(st) - {"task", "train"}:
                raise ValueError(f"{where}: variant {name!r} stage {j} must be {{ task = {{...}}, train = {{...}} }}")
        variants.append(Variant(name, dict(v.get("task") or {"task": "arith"}), dict(v.get("train") or {}),
                                dict(v.get("model") or {}), stages))
    if len({v.name for v in variants}) != len(variants):
        raise ValueError(f"{where}: two variants share a name")
    if any("dim" in v.model for v in variants) and len(set(sizes)) > 1:
        raise ValueError(f"{where}: a variant that fixes its shape (model.dim) runs at one size; "
                         f"give one size (a label) or move the variant to its own study")
    return Study(d.get("name", "study"), sorted(set(sizes)), list(seeds), variants, dict(d.get("train") or {}))


def load_study(path: str | Path) -> Study:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file not found: {path}")
    with open(path, "rb") as f:
        try:
            d = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: {e}") from None
    return parse_study(d, str(path))


def run_config(run: Run, run_dir: Path, base: dict) -> dict:
    model = dict(run.variant.model) if "dim" in run.variant.model else {**run.variant.model, "params": run.size}
    cfg = {**base, **run.variant.train, "out_dir": str(run_dir), "seed": run.seed,
           "task": run.variant.task, "model": model, "progress": False}
    if run.variant.stages:
        cfg["stages"] = run.variant.stages  # recorded with the result; stripped before training
    return cfg


def _summary(report) -> dict:
    return report.to_dict()["groups"]


def run_one(run: Run, study_dir: Path, base: dict, progress: bool = False, engine: str | None = None) -> dict:
    """Train (or resume), export fp32 and int8, evaluate both; write and return the result row.
    progress, engine (None: the study's): the trainer's bar and engine (not part of the run's
    recorded configuration)."""
    from tinymath.export import export_checkpoint
    from tinymath.train.config import load_config
    from tinymath.train.train import train

    from .curriculum import train_stages
    from .evaluate import evaluate

    run_dir = study_dir / "runs" / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    wanted = run_config(run, run_dir, base)
    shown = {**wanted, "progress": progress, **({"engine": engine} if engine else {})}
    final, stage_tokens = train_stages(run_dir, shown) if run.variant.stages else (shown, 0)
    summary = train(load_config(base=final), resume=(run_dir / "ckpt.pt").is_file() or None)
    if summary.get("interrupted"):
        raise KeyboardInterrupt
    ckpt = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "ckpt.pt"
    fp32 = export_checkpoint(ckpt, "v1", run_dir / "model.bin")
    int8 = export_checkpoint(ckpt, "v2", run_dir / "model.q8.bin")
    scores, answer_tokens = {}, {}
    for precision, path in (("fp32", run_dir / "model.bin"), ("int8", run_dir / "model.q8.bin")):
        res = evaluate(path, progress=False)
        scores[precision] = {split: _summary(r) for split, r in res["by_split"].items()}
        answer_tokens[precision] = res["answer_tokens"]
    card = json.loads((run_dir / "model.json").read_text())
    tokens = int(summary.get("tokens_seen") or 0) + stage_tokens  # a curriculum's compute counts every stage
    row = {
        "run": run.name, "group": run.variant.name, "seed": run.seed, "size_target": run.size,
        "params": int(card["n_params"]), "model": card["config"], "task": card.get("task") or run.variant.task,
        "train": {"steps": int(summary.get("step") or 0), "tokens": tokens,
                  "wall_s": float(summary.get("elapsed") or 0.0), "device": str(summary.get("device", "cpu")),
                  "engine": summary.get("engine", "torch"),
                  **({"kernels": summary["kernels"]} if "kernels" in summary else {}),  # the C engine's build
                  "flops": 6.0 * int(card["n_params"]) * tokens, "checkpoint": ckpt.name},
        "fp32": scores["fp32"], "int8": scores["int8"], "answer_tokens": answer_tokens,
        "files": {"fp32": fp32.path.name if hasattr(fp32, "path") else "model.bin",
                  "int8": int8.path.name if hasattr(int8, "path") else "model.q8.bin"},
        "run_dir": str(Path("runs") / run.name),
        "config": {k: v for k, v in wanted.items() if k != "out_dir"},  # where it ran is run_dir's job
    }
    fileio.write_json(run_dir / "result.json", row)
    return row


def _check_unchanged(run: Run, row: dict, study_dir: Path, base: dict) -> None:
    """A finished run counts only if the study still asks for exactly what it ran."""
    def settings(cfg: dict) -> dict:  # JSON's view of it, without the folder (the study may have moved)
        return {k: v for k, v in json.loads(json.dumps(cfg)).items() if k != "out_dir"}

    if settings(row.get("config") or {}) != settings(run_config(run, Path(), base)):
        raise ValueError(f"run {run.name} in {study_dir} finished under another configuration than the study file "
                         f"now gives: delete {study_dir / 'runs' / run.name} to rerun it, or use another --out")


def collect(study: Study, study_dir: Path) -> list[dict]:
    """Rebuild results.jsonl from every finished run's result.json, in the study's order."""
    rows = []
    for run in study.runs():
        f = study_dir / "runs" / run.name / "result.json"
        if f.is_file():
            rows.append(json.loads(f.read_text()))
    fileio.write_text(study_dir / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


def sweep(study_path: str | Path, out: str | Path | None = None, shard: tuple[int, int] = (1, 1),
          max_runs: int | None = None, log=partial(print, flush=True), progress: bool = False,
          engine: str | None = None) -> list[dict]:
    study = load_study(study_path)
    study_dir = Path(out) if out else Path(study_path).with_suffix("")
    study_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_text(study_dir / "study.toml", Path(study_path).read_text())
    k, n = shard
    mine = [r for i, r in enumerate(study.runs()) if i % n == k - 1]
    done = 0
    for i, run in enumerate(mine, 1):
        result = study_dir / "runs" / run.name / "result.json"
        if result.is_file():
            _check_unchanged(run, json.loads(result.read_text()), study_dir, study.train)
            log(f"[{i}/{len(mine)}] {run.name}: finished earlier, skipped")
            continue
        if max_runs is not None and done >= max_runs:
            break
        log(f"[{i}/{len(mine)}] {run.name}: training")
        row = run_one(run, study_dir, study.train, progress, engine)
        done += 1
        test = row["fp32"].get("test", {}).get("all", {})
        log(f"[{i}/{len(mine)}] {run.name}: {row['params']:,} params, test exact "
            f"{100 * test.get('exact', math.nan):.2f}% (n={test.get('n', 0)}), int8 "
            f"{100 * row['int8'].get('test', {}).get('all', {}).get('exact', math.nan):.2f}%")
        collect(study, study_dir)
    return collect(study, study_dir)


def _shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"--shard takes K/N with 1 <= K <= N, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a study TOML file")
    p.add_argument("--out", help="study folder (default: the TOML's path without .toml)")
    p.add_argument("--shard", type=_shard, default=(1, 1), help="run the K-th of N disjoint slices (K/N)")
    p.add_argument("--max-runs", type=int, help="stop after this many new runs")
    p.add_argument("--engine", choices=("torch", "c"),
                   help="training engine for every run (default: the study's [train] engine, else torch)")
    p.add_argument("--report", action="store_true", help="write report.md and plots at the end")
    p.add_argument("--no-progress", action="store_true",
                   help="no training progress bar (default: a bar per run when stderr is a terminal)")


def run(args: argparse.Namespace) -> int:
    rows = sweep(args.study, args.out, args.shard, args.max_runs,
                 progress=not args.no_progress and sys.stderr.isatty(), engine=args.engine)
    out = Path(args.out) if args.out else Path(args.study).with_suffix("")
    print(f"{len(rows)} finished runs in {out / 'results.jsonl'}")
    if args.report and rows:
        from .report import write_report

        print(f"wrote {write_report(out)}")
    return 0
