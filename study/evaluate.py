"""`tinymath eval MODEL.bin`: a model file scored on its task's test and holdout splits (no torch).

The task comes from the model card beside the file (the spec the model was
trained on, regenerated exactly from its seed) unless --data names a folder
written by `tinymath gen`. Test problems were never trained on; holdout
problems have an operand the model never saw. Both go through the C batch
engine, and are scored together so the table breaks down by op x region.
Writes MODEL.eval.json and puts the headline figures into the model card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinymath import fileio
from tinymath.export.card import ModelFiles
from tinymath.tasks import Problem, ScoreReport, TaskSpec, build_splits, score

CHUNK = 2048  # problems per call into the engine: one progress-bar step
SPLIT_NOTES = {"test": "in-range problems never trained on (the headline figure)",
               "holdout": "an operand in the held-out range, never seen in training",
               "val": "the split training chose its checkpoint on", "train": "trained on"}


def _is_tokenizer(path: Path) -> bool:
    """A file that reads whole as a tokenizer.bin (a model file never does: its header fails first)."""
    from tinymath.tokenizer import Tokenizer

    
    try:
        Tokenizer.load(path)
    except (ValueError, OSError):
        return False
    return True


def find_spec(files: ModelFiles, data: str | None) -> TaskSpec:
    if data:
        return TaskSpec.load(Path(data) / "spec.json" if Path(data).is_dir() else Path(data))
    task = files.card.get("task")
    if task:
        return TaskSpec.from_dict(task)
    raise ValueError("the model card names no task: pass --data FOLDER (written by `tinymath gen`)")


def solve_all(model, prompts: list[str], progress: bool = True, desc: str = "solving",
              confidence: bool = True) -> list:
    """model.solve over `prompts` in chunks, with a progress bar: Answer records (text, confidences,
    n_tokens), or strings with confidence=False. Whole answers (steps=True): a model that shows its
    work is scored on its steps too."""
    from tqdm import tqdm

    out: list = []
    with tqdm(total=len(prompts), desc=desc, unit="problem", disable=not progress, leave=False) as bar:
        for i in range(0, len(prompts), CHUNK):
            out += model.solve(prompts[i:i + CHUNK], confidence=confidence, steps=True)
            bar.update(min(CHUNK, len(prompts) - i))
    return out


def evaluate(model_path: str | Path, tokenizer: str | None = None, data: str | None = None,
             splits: tuple[str, ...] = ("test", "holdout"), progress: bool = True, threads: int = 0) -> dict:
    """Score the model on `splits`; returns {"spec", "report": ScoreReport, "by_split": {split: ScoreReport}}.

    threads: the batch engine's worker threads (0 = one per CPU core)."""
    from tinymath.runc import Model

    model_path = Path(model_path)
    files = ModelFiles.open(model_path)
    if _is_tokenizer(model_path):
        raise ValueError(f"{model_path} is a tokenizer file, not a model: pass the model's .bin "
                         f"(a tokenizer goes to --tokenizer)")
    spec = find_spec(files, data)
    tok = files.tokenizer(tokenizer)
    all_splits = build_splits(spec)
    problems: list[Problem] = [p for s in splits for p in all_splits[s]]
    if not problems:
        raise ValueError(f"no problems in splits {', '.join(splits)} of this task")
    with Model(str(model_path), tokenizer=str(tok), threads=threads) as model:
        solved = solve_all(model, [p.prompt for p in problems], progress, desc=model_path.name)
    answers, lengths = [a.text for a in solved], [a.n_tokens for a in solved]
    fmt = spec.answer_format()
    by_split, tokens, i = {}, {}, 0
    for s in splits:
        n = len(all_splits[s])
        if n:
            by_split[s] = score(problems[i:i + n], answers[i:i + n], fmt)
            tokens[s] = mean_by_op(problems[i:i + n], lengths[i:i + n])
        i += n
    return {"spec": spec, "report": score(problems, answers, fmt), "by_split": by_split, "tokenizer": tok,
            "answer_tokens": tokens}


def mean_by_op(problems: list[Problem], lengths: list[int]) -> dict[str, float]:
    """Mean of `lengths` over all problems and per op: {"all": ..., "+": ..., ...}."""
    groups: dict[str, list[int]] = {"all": list(lengths)}
    for p, n in zip(problems, lengths):
        groups.setdefault(p.op, []).append(n)
    return {k: sum(v) / len(v) for k, v in groups.items() if v}


def summary(by_split: dict[str, ScoreReport]) -> dict:
    """Headline figures for the model card: exact-match per split, overall and per op."""
    out = {}
    for split, rep in by_split.items():
        groups = rep.to_dict()["groups"]
        out[split] = {name.replace("op ", ""): {"exact": g["exact"], "n": g["n"], "exact_ci95": g["exact_ci95"]}
                      for name, g in groups.items() if name == "all" or name.startswith("op ")}
    return out


def write_results(model_path: Path, result: dict) -> Path:
    out = model_path.with_name(model_path.stem + ".eval.json")
    fileio.write_json(out, {"model": model_path.name, "task": result["spec"].to_dict(),
                            "combined": result["report"].to_dict(), "answer_tokens": result["answer_tokens"],
                            "splits": {k: v.to_dict() for k, v in result["by_split"].items()}})
    card_file = model_path.with_suffix(".json")
    if card_file.is_file():
        card = json.loads(card_file.read_text())
        card["accuracy"] = summary(result["by_split"])
        card["evaluated_task"] = result["spec"].to_dict()
        fileio.write_json(card_file, card)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .bin model file (fp32 or int8)")
    p.add_argument("--tokenizer", "-z", help="tokenizer.bin (default: from the model card, or beside the model)")
    p.add_argument("--data", help="a folder from `tinymath gen` (default: the task in the model card)")
    p.add_argument("--splits", default="test,holdout", help="comma-separated splits to score (default test,holdout)")
    p.add_argument("--no-write", action="store_true", help="print only; leave the card and files alone")
    p.add_argument("--threads", "-j", type=int, default=0,
                   help="worker threads of the C batch engine (default 0: one per CPU core)")


def run(args: argparse.Namespace) -> int:
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    result = evaluate(args.model, args.tokenizer, args.data, splits, threads=args.threads)
    spec = result["spec"]
    print(f"{args.model}: task {json.dumps(spec.to_dict())}")
    sizes = ", ".join(f"{k} {v.groups['all'].n}" for k, v in result["by_split"].items())
    print(f"splits: {sizes} "
          f"(test: never trained on; holdout: operands never seen)")
    for split, rep in result["by_split"].items():  # each split alone: test is the headline, holdout apart
        print(f"\n{split}: {SPLIT_NOTES.get(split, '')}")
        print(rep.table())
        toks = result["answer_tokens"][split]
        print("tokens per answer (mean, EOS not counted): " + ", ".join(f"{k} {v:.1f}" for k, v in toks.items()))
    if not args.no_write:
        out = write_results(Path(args.model), result)
        print(f"wrote {out}")
    return 0
