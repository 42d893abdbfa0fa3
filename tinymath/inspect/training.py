"""Over training: accuracy, loss and answer entropy against steps for one run folder (torch).

Accuracy and training loss come from the run's metrics.jsonl (one line per
evaluation). Answer entropy (the mean entropy, in nats, of the model's next-token
distribution at the answer positions of a split, given the right answer so far)
and that split's loss need weights, so they are computed at every checkpoint
the run folder holds: ckpt.pt and best.pt, which the trainer keeps, and the
snapshots a run records when trained with `SnapshotSaver`:

    from tinymath.inspect.training import SnapshotSaver
    train(cfg, on_eval=SnapshotSaver(cfg.out_dir))   # RUN/snapshots/step_000100.pt, ...

(any RUN/snapshots/*.pt or RUN/step_*.pt holding step, model_config and model is read).
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import InspectError, save_png, table


class SnapshotSaver:
    """An `on_eval` callback for train(): keeps the weights at every evaluation as RUN/snapshots/step_NNNNNN.pt."""

    def __init__(self, run_dir: str | Path, every: int = 1):
        self.dir = Path(run_dir) / "snapshots"
        self.every = max(1, int(every))
        self._n = 0

    def __call__(self, metrics: dict, model) -> None:
        import torch

        from tinymath import fileio

        self._n += 1
        if (self._n - 1) % self.every:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        snap = {"step": int(metrics["step"]), "model_config": model.cfg.to_dict(), "model": state,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}}
        with fileio.atomic_path(self.dir / f"step_{int(metrics['step']):06d}.pt") as tmp:
            torch.save(snap, tmp)
        return None


def read_metrics(run_dir: str | Path) -> tuple[list[dict], dict | None]:
    """(periodic evaluation records in step order, the final record or None)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (not a training run folder?)")
    evals, final = [], None
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn last line
        if rec.get("event") == "final":
            final = rec
        elif "step" in rec:
            evals.append(rec)
    evals.sort(key=lambda r: r["step"])
    return evals, final


def checkpoint_files(run_dir: str | Path) -> list[Path]:
    run = Path(run_dir)
    files = sorted((run / "snapshots").glob("*.pt")) + sorted(run.glob("step_*.pt"))
    files += [p for p in (run / "ckpt.pt", run / "best.pt") if p.is_file()]
    return files


def _load_weights(path: Path) -> dict:
    import torch

    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InspectError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(d, dict) or not {"step", "model_config", "model"} <= set(d):
        raise InspectError(f"{path}: lacks step, model_config or model")
    return d


def _run_checkpoint(run: Path) -> dict:
    from tinymath.train.checkpoint import load_checkpoint

    for name in ("ckpt.pt", "best.pt"):
        if (run / name).is_file():
            return load_checkpoint(run / name)
    raise FileNotFoundError(f"{run}: no ckpt.pt or best.pt")


def split_problems(ckpt: dict, split: str) -> list:
    """A split of the run's own task, rebuilt from the record in its checkpoint."""
    from tinymath.train.data import load_splits

    record = dict(ckpt.get("task") or {})
    if record.get("task") == "folder":
        splits, _ = load_splits(None, record["path"])
    else:
        splits, _ = load_splits(record, None)
    if split not in splits:
        raise InspectError(f"no split {split!r} (known: {', '.join(splits)})")
    return splits[split]


def answer_stats(model, enc) -> dict:
    """Mean answer-token entropy (nats) and loss of `model` on an Encoded split, teacher-forced."""
    import torch

    from tinymath.train.data import IGNORE

    ent_sum = loss_sum = 0.0
    n = 0
    model.eval()
    with torch.no_grad():
        for s in range(0, len(enc), 1024):
            x = enc.inputs[s:s + 1024]
            y = enc.targets[s:s + 1024].reshape(-1)
            width = int(enc.lengths[s:s + 1024].max()) - 1
            x, y = x[:, :width], enc.targets[s:s + 1024, :width].reshape(-1)
            sel = (y != IGNORE).nonzero().squeeze(1)
            logits = model(x, select=sel).float()
            logp = torch.log_softmax(logits, -1)
            ent_sum += float(-(logp.exp() * logp).sum(-1).sum())
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y[sel], reduction="sum"))
            n += len(sel)
    return {"entropy": ent_sum / max(n, 1), "loss": loss_sum / max(n, 1), "tokens": n}


def over_training(run_dir: str | Path, split: str = "val", limit: int | None = 2000) -> dict:
    """Accuracy and loss per evaluation (metrics.jsonl); entropy and split loss per checkpoint."""
    from .internals import require_torch

    require_torch()
    from tinymath.tokenizer import Tokenizer
    from tinymath.train.data import encode
    from tinymath.train.model import ModelConfig, Transformer

    run = Path(run_dir)
    evals, final = read_metrics(run)
    ckpt = _run_checkpoint(run)
    tok_path = Path(ckpt.get("tokenizer") or "")
    if not tok_path.is_file():
        tok_path = run / "tokenizer.bin"
    tok = Tokenizer.load(tok_path)
    problems = split_problems(ckpt, split)
    if not problems and split == "val":
        split, problems = "test", split_problems(ckpt, "test")
    if limit is not None:
        problems = problems[:limit]
    if not problems:
        raise InspectError(f"{run}: the {split} split is empty")
    enc = encode(problems, tok)
    points: dict[int, dict] = {}
    for path in checkpoint_files(run):
        d = _load_weights(path)
        step = int(d["step"])
        if step in points:
            points[step]["files"].append(path.name)
            continue
        model = Transformer(ModelConfig.from_dict(d["model_config"]))
        model.load_state_dict(d["model"])
        points[step] = {"step": step, **answer_stats(model, enc), "files": [path.name]}
    return {"run": str(run), "split": split, "n_problems": len(problems),
            "evals": [{k: r.get(k) for k in ("step", "loss", "val_acc", "holdout_acc", "lr", "tokens")}
                      for r in evals],
            "final": {k: final.get(k) for k in ("step", "test_acc", "val_acc", "holdout_acc")} if final else None,
            "checkpoints": [points[s] for s in sorted(points)]}


def format_result(r: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    rows = [[e["step"], f"{e['loss']:.4f}" if e.get("loss") is not None else "-", pct(e.get("val_acc")),
             pct(e.get("holdout_acc"))] for e in r["evals"]]
    out = [f"{r['run']}: {len(r['evals'])} evaluations, {len(r['checkpoints'])} checkpoints "
           f"(entropy and loss on {r['n_problems']} {r['split']} problems)",
           table(["step", "train loss", "val acc", "holdout acc"], rows), "",
           table(["step", f"{r['split']} answer entropy (nats)", f"{r['split']} loss", "files"],
                 [[c["step"], f"{c['entropy']:.4f}", f"{c['loss']:.4f}", ", ".join(c["files"])]
                  for c in r["checkpoints"]])]
    if len(r["checkpoints"]) < 3:
        out.append("(entropy at only the kept checkpoints: train with inspect.training.SnapshotSaver "
                   "to keep one per evaluation)")
    return "\n".join(out)


def plot(r: dict, path: str | Path) -> Path:
    from .common import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    ev, ck = r["evals"], r["checkpoints"]
    ax = axes[0]
    for key, label in (("val_acc", "val"), ("holdout_acc", "holdout")):
        pts = [(e["step"], e[key]) for e in ev if e.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker=".", label=label)
    if r.get("final") and r["final"].get("test_acc") is not None:
        ax.scatter([r["final"]["step"]], [100 * r["final"]["test_acc"]], marker="*", s=60, color="#d9534f",
                   label="test (end)", zorder=3)
    ax.set_xlabel("step")
    ax.set_ylabel("exact match %")
    ax.set_title("accuracy", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    pts = [(e["step"], e["loss"]) for e in ev if e.get("loss") is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label="train (since last eval)")
    if ck:
        ax.plot([c["step"] for c in ck], [c["loss"] for c in ck], marker="o", ls="--", label=f"{r['split']}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss per answer token (nats)")
    ax.set_title("loss", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    if ck:
        ax.plot([c["step"] for c in ck], [c["entropy"] for c in ck], marker="o", color="#8e44ad")
    ax.set_xlabel("step")
    ax.set_ylabel("nats")
    ax.set_title(f"answer entropy ({r['split']}, {len(ck)} checkpoints)", fontsize=9)
    fig.suptitle(f"over training: {Path(r['run']).name}", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
