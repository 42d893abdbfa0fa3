"""What transfers between tasks: a cross-task loss and accuracy matrix, and few-shot fine-tuning.

Matrix (no torch): every model (a row) is evaluated on every task (a column:
the tasks named by the models' cards, plus any given) on that task's test split.
Accuracy is exact match of the greedy answers through the C engine, scored by
the task's scorer: the computation of `tinymath eval`, so a model's cell on its
own task equals its own evaluation. Loss is the mean negative log-probability
per answer token (answer tokens and EOS, teacher-forced), the training loss.
A task whose characters a model's tokenizer cannot write is an empty cell.

Few-shot (torch): fine-tune a trained checkpoint on a little of another task
(`--init-from`) and train the same shape from scratch on the same problems with
the same tokenizer; validation accuracy against steps for both, and test
accuracy at the end against the number of training problems.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import InspectError, finite, log_softmax, model_name, save_png, table, write_json


def task_label(spec) -> str:
    d = spec.to_dict()
    if d["task"] in ("arith", "count"):
        hold = f" h{d['holdout'][0]}-{d['holdout'][1]}" if d.get("holdout") else ""
        fmt = f" {d['format']}" if d.get("format") else ""
        return f"{d['task']} {d['ops'] if d['task'] == 'arith' else ''} {d['lo']}-{d['hi']}{hold}{fmt}".replace("  ", " ")
    if d["task"] == "mod":
        return f"mod{d['modulus']} {d['ops']}"
    if d["task"] == "dmmath":
        return "dmmath " + ",".join(m.split("__")[-1] for m in d["modules"])
    return f"{d['task']} {Path(d.get('path') or '').name}"


def answer_loss(model, tok, problems) -> tuple[float | None, int, int]:
    """(mean NLL per answer token, answer tokens, problems skipped as too long) through the C engine."""
    total, n, skipped = 0.0, 0, 0
    ctx = model.context
    for p in problems:
        ids, k = tok.encode_problem(p.prompt, p.answer)
        if len(ids) - 1 > ctx:
            skipped += 1
            continue
        logp = log_softmax(model.logits(ids[:-1]))
        rows = np.arange(k - 1, len(ids) - 1)
        total -= float(logp[rows, np.asarray(ids[k:])].sum())
        n += len(rows)
    return (total / n if n else None), n, skipped


def evaluate_cell(model, tok, spec, split: str = "test") -> dict:
    """Accuracy (the task's scorer) and answer loss of one open model on one task's split."""
    from tinymath.study.evaluate import solve_all
    from tinymath.tasks import build_splits, score

    problems = build_splits(spec)[split]
    if not problems:
        return {"n": 0, "accuracy": None, "loss": None, "note": f"no {split} problems"}
    try:
        for p in problems:
            tok.encode_problem(p.prompt, p.answer)
    except ValueError as e:
        return {"n": len(problems), "accuracy": None, "loss": None, "note": f"tokenizer cannot write it: {e}"}
    answers = solve_all(model, [p.prompt for p in problems], progress=False, confidence=False)
    rep = score(problems, answers, spec.answer_format())
    loss, n_tok, skipped = answer_loss(model, tok, problems)
    return {"n": len(problems), "accuracy": rep.exact, "loss": finite(loss), "answer_tokens": n_tok,
            "loss_skipped": skipped}


def matrix(model_paths: Sequence[str | Path], extra_tasks: Sequence = (), split: str = "test") -> dict:
    """Rows: models; columns: tasks (each model's own, in order, then extra_tasks); cells: accuracy and loss."""
    from tinymath.tokenizer import Tokenizer

    from .common import open_model, task_of

    if not model_paths:
        raise InspectError("transfer: give at least one model file")
    opened = []
    tasks: list = []
    keys: list[str] = []
    try:
        for path in model_paths:
            m, card, tok_path = open_model(path)
            opened.append((Path(path), m, card, Tokenizer.load(tok_path)))
            spec = task_of(card)
            key = json.dumps(spec.to_dict(), sort_keys=True)
            if key not in keys:
                keys.append(key)
                tasks.append(spec)
        for t in extra_tasks:
            spec = task_of({}, t)
            key = json.dumps(spec.to_dict(), sort_keys=True)
            if key not in keys:
                keys.append(key)
                tasks.append(spec)
        rows = []
        for path, m, card, tok in opened:
            own = keys.index(json.dumps(task_of(card).to_dict(), sort_keys=True))
            cells = [evaluate_cell(m, tok, spec, split) for spec in tasks]
            rows.append({"model": str(path), "name": model_name(path), "params": card.get("n_params"),
                         "own_task": own, "cells": cells})
    finally:
        for _, m, _, _ in opened:
            m.close()
    return {"split": split, "tasks": [t.to_dict() for t in tasks], "task_labels": [task_label(t) for t in tasks],
            "rows": rows}


def format_matrix(r: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def num(x):
        return "-" if x is None else f"{x:.3f}"

    head = ["model (row) \\ task (column)"] + r["task_labels"]
    acc = [[f"{row['name']}" + (f" ({row['params']:,})" if row.get("params") else "")] +
           [pct(c["accuracy"]) + (" *" if j == row["own_task"] else "") for j, c in enumerate(row["cells"])]
           for row in r["rows"]]
    loss = [[row["name"]] + [num(c["loss"]) for c in row["cells"]] for row in r["rows"]]
    notes = sorted({c["note"] for row in r["rows"] for c in row["cells"] if c.get("note")})
    out = [f"exact match on each task's {r['split']} split (* = the model's own task)", table(head, acc), "",
           "loss: mean negative log-probability per answer token (nats)", table(head, loss)]
    if notes:
        out += ["", "empty cells: " + "; ".join(notes)]
    return "\n".join(out)


def markdown(r: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    head = "| model | " + " | ".join(r["task_labels"]) + " |\n|---|" + "---|" * len(r["task_labels"])
    lines = [f"Exact match (loss per answer token) on each task's {r['split']} split; **bold**: the model's own task.",
             "", head]
    for row in r["rows"]:
        cells = []
        for j, c in enumerate(row["cells"]):
            text = f"{pct(c['accuracy'])} ({'-' if c['loss'] is None else format(c['loss'], '.3f')})"
            cells.append(f"**{text}**" if j == row["own_task"] else text)
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_matrix(r: dict, path: str | Path) -> Path:
    """Two heat maps side by side: accuracy and loss; rows models, columns tasks; own task outlined."""
    from .common import pyplot

    plt = pyplot()
    nr, nc = len(r["rows"]), len(r["tasks"])
    acc = np.array([[np.nan if c["accuracy"] is None else 100 * c["accuracy"] for c in row["cells"]]
                    for row in r["rows"]])
    loss = np.array([[np.nan if c["loss"] is None else c["loss"] for c in row["cells"]] for row in r["rows"]])
    w = max(3.2, 1.1 * nc + 1.8)
    fig, axes = plt.subplots(1, 2, figsize=(2 * w, 0.6 * nr + 1.8))
    ylabels = [row["name"] + (f"\n{row['params']:,} params" if row.get("params") else "") for row in r["rows"]]
    for ax, data, name, cmap, fmt in ((axes[0], acc, "exact match %", "viridis", "{:.0f}"),
                                      (axes[1], loss, "loss per answer token", "magma_r", "{:.2f}")):
        im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto",
                       vmin=0 if name.startswith("exact") else None, vmax=100 if name.startswith("exact") else None)
        ax.set_xticks(range(nc), r["task_labels"], rotation=25, ha="right", fontsize=7)
        ax.set_yticks(range(nr), ylabels, fontsize=7)
        for i in range(nr):
            for j in range(nc):
                v = data[i, j]
                ax.text(j, i, "-" if np.isnan(v) else fmt.format(v), ha="center", va="center", fontsize=7,
                        color="white" if (name.startswith("exact") and v < 60) or
                        (not name.startswith("exact") and not np.isnan(v) and v > np.nanmean(data)) else "black")
            own = r["rows"][i]["own_task"]
            ax.add_patch(plt.Rectangle((own - 0.5, i - 0.5), 1, 1, fill=False, ec="#d9534f", lw=2))
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"cross-task transfer ({r['split']} split; outlined: own task)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


# ---- few-shot transfer ----------------------------------------------------------------------------------

def _finished(run: Path) -> bool:
    from .training import read_metrics

    try:
        return read_metrics(run)[1] is not None and (run / "ckpt.pt").is_file()
    except FileNotFoundError:
        return False


def fewshot(source: str | Path, task, shots: Sequence[int], out: str | Path, steps: int = 300,
            eval_every: int | None = None, train_overrides: dict | None = None, log=print) -> dict:
    """Fine-tune `source` (a training checkpoint) and train from scratch on `shots` problems of `task`."""
    from .internals import require_torch

    require_torch()
    from tinymath.train.checkpoint import load_checkpoint
    from tinymath.train.config import TrainConfig
    from tinymath.train.train import train

    from .common import task_of
    from .training import read_metrics

    source = Path(source)
    if source.suffix == ".bin":  # a model file: its card names the checkpoint
        from .internals import find_checkpoint

        source = find_checkpoint(source)
    src = load_checkpoint(source)
    from tinymath.export.card import locate

    tok = locate(src.get("tokenizer"), source.parent) or source.parent / "tokenizer.bin"
    spec = task_of({}, task)
    mc = src["model_config"]
    shape = {k: mc[k] for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "tied", "norm_eps",
                                "rope_theta")}
    out = Path(out)
    every = eval_every or max(1, steps // 10)
    runs = []
    for n in shots:
        if n <= 0:
            raise InspectError(f"fewshot: shots must be positive, got {n}")
        task_d = {**spec.to_dict(), "max_train": int(n)}
        for kind in ("init", "scratch"):
            run = out / f"{kind}-{n}"
            if _finished(run):
                log(f"{run}: finished earlier, kept")
            else:
                d = {"out_dir": str(run), "task": task_d, "max_steps": steps, "eval_every": every,
                     "progress": False, "tokenizer": str(tok), **(train_overrides or {})}
                if kind == "init":
                    d["init_from"] = str(source)
                    d.pop("tokenizer")  # --init-from brings the source's tokenizer
                else:
                    d["model"] = dict(shape)
                log(f"{run}: training ({kind}, {n} problems, {steps} steps)")
                train(TrainConfig.from_dict(d), overwrite=True)
            evals, final = read_metrics(run)
            runs.append({"kind": kind, "shots": int(n), "run": str(run),
                         "curve": [{"step": e["step"], "val_acc": e.get("val_acc"), "loss": e.get("loss")}
                                   for e in evals],
                         "test_acc": (final or {}).get("test_acc"), "val_acc": (final or {}).get("val_acc")})
    result = {"source": str(source), "source_task": src.get("task"), "task": spec.to_dict(),
              "task_label": task_label(spec), "steps": steps, "shots": [int(s) for s in shots], "runs": runs}
    write_json(out / "fewshot.json", result)
    return result


def format_fewshot(r: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    rows = []
    for n in r["shots"]:
        by = {x["kind"]: x for x in r["runs"] if x["shots"] == n}
        rows.append([n, pct(by["init"]["test_acc"]), pct(by["scratch"]["test_acc"]),
                     pct(by["init"]["val_acc"]), pct(by["scratch"]["val_acc"])])
    return (f"few-shot transfer from {r['source']} to {r['task_label']} ({r['steps']} steps each)\n" +
            table(["training problems", "test: fine-tuned", "test: scratch", "val: fine-tuned", "val: scratch"], rows))


def plot_fewshot(r: dict, path: str | Path) -> Path:
    from .common import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    ax = axes[0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, n in enumerate(r["shots"]):
        for x in r["runs"]:
            if x["shots"] != n:
                continue
            pts = [(c["step"], c["val_acc"]) for c in x["curve"] if c["val_acc"] is not None]
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], color=colors[i % len(colors)],
                    ls="-" if x["kind"] == "init" else "--", marker=".",
                    label=f"{n} problems, {'fine-tuned' if x['kind'] == 'init' else 'scratch'}")
    ax.set_xlabel("step")
    ax.set_ylabel("val exact match %")
    ax.set_title(f"{r['task_label']}: fine-tuned (solid) vs scratch (dashed)", fontsize=9)
    ax.legend(fontsize=6)
    ax = axes[1]
    for kind, style in (("init", "-o"), ("scratch", "--s")):
        pts = sorted((x["shots"], x["test_acc"]) for x in r["runs"] if x["kind"] == kind and x["test_acc"] is not None)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style,
                label="fine-tuned from source" if kind == "init" else "from scratch")
    ax.set_xscale("log")
    ax.set_xticks(r["shots"], [str(n) for n in r["shots"]])
    ax.minorticks_off()
    ax.set_xlabel("training problems of the new task")
    ax.set_ylabel("test exact match %")
    ax.set_title("few-shot transfer curve", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"from {Path(r['source']).parent.name}/{Path(r['source']).name} to {r['task_label']}", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
