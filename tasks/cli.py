"""`tinymath gen`: write a task's splits (train/val/test/holdout .txt) and spec.json to a folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinymath import fileio

from . import PRESETS
from .arith import original_lines
from .formats import FORMATS, STEP_FORMATS
from .spec import TASKS, TaskSpec, build_splits, spec_record


def _range(text: str) -> tuple[int, int]:
    try:
        lo, hi = text.split("-", 1) if "-" in text.lstrip("-") else (text, text)
        return int(lo), int(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range LO-HI, got {text!r}") from None


def _holdout(text: str) -> tuple[int, int] | None:
    return None if text.lower() == "none" else _range(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help=f"a task ({', '.join(TASKS)}), a preset ({', '.join(PRESETS)}), "
                                "or 'original' (the original data set's 90,000-line distribution)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--ops", help="operators, e.g. '+-' (arith: + - * /; mod: + - *)")
    p.add_argument("--range", type=_range, help="operand range LO-HI (default 0-89)")
    p.add_argument("--b-range", type=_range, help="second operand's range, if different")
    p.add_argument("--holdout", help="held-out operand range LO-HI, or 'none' (default 90-99)")
    p.add_argument("--format", help=f"answer format: {', '.join(FORMATS + STEP_FORMATS)} (steps and partial "
                                    "show their work, then the classic answer)")
    p.add_argument("--modulus", type=int, help="mod: the modulus p (default 97)")
    p.add_argument("--modules", help="dmmath: comma-separated module names")
    p.add_argument("--path", help="file: the problem file")
    p.add_argument("--n", type=int, help="problems to sample where a space is too large to enumerate "
                                          "(original: lines to write)")
    p.add_argument("--val-frac", type=float)
    p.add_argument("--test-frac", type=float)
    p.add_argument("--max-train", type=int)
    p.add_argument("--seed", type=int, default=0)


def spec_from_args(args: argparse.Namespace) -> TaskSpec:
    base = dict(PRESETS[args.task]) if args.task in PRESETS else {"task": args.task}
    overrides = {"ops": args.ops, "format": args.format, "modulus": args.modulus, "path": args.path,
                 "n": args.n, "val_frac": args.val_frac, "test_frac": args.test_frac,
                 "max_train": args.max_train, "seed": args.seed}
    base.update({k: v for k, v in overrides.items() if v is not None})
    if args.range is not None:
        base["lo"], base["hi"] = args.range
    if args.b_range is not None:
        base["b_lo"], base["b_hi"] = args.b_range
    if args.holdout is not None:
        try:
            base["holdout"] = _holdout(args.holdout)
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"--holdout: {e}") from None
    if args.modules:
        base["modules"] = tuple(m.strip() for m in args.modules.split(","))
    return TaskSpec.from_dict(base)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.task == "original":
        n = 90_000 if args.n is None else args.n
        lines = original_lines(n, args.seed)
        out.mkdir(parents=True, exist_ok=True)
        fileio.write_text(out / "original.txt", "\n".join(lines) + "\n")
        fileio.write_json(out / "spec.json", {"preset": "original", "n": n, "seed": args.seed})
        print(f"wrote {n} lines to {out / 'original.txt'} (original distribution, seed {args.seed})")
        return 0
    spec = spec_from_args(args)
    splits = build_splits(spec)
    out.mkdir(parents=True, exist_ok=True)
    for name, problems in splits.items():
        fileio.write_text(out / f"{name}.txt", "".join(p.line + "\n" for p in problems))
    fileio.write_json(out / "spec.json", spec_record(spec, splits))
    counts = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    print(f"wrote {out}/{{train,val,test,holdout}}.txt: {counts}")
    print(f"spec: {json.dumps(spec.to_dict())}")
    return 0
