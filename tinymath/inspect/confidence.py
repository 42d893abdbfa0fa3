"""Does the model know when it is wrong? Answer confidence against correctness (no torch).

confidence = exp(mean log-probability of the greedy answer's tokens and of the
EOS that ends it), the geometric-mean probability per token of the answer as
generated, in (0, 1]: the batch engine's mean_logprob, exponentiated.

On a task's test split: AUROC of confidence as a detector of right answers
(the chance that a random right answer is more confident than a random wrong
one), a calibration table and plot (confidence bins against accuracy), and the
coverage-accuracy curve a calculator gets by answering only above a threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tinymath.tasks import typed_prompt

from .common import finite, save_png, table

TARGETS = (0.9, 0.95, 0.99, 1.0)   # accuracies the threshold table reports
DEFAULT_THRESHOLD = 0.9             # calc's "not sure" line when no confidence study says better


def solve_with_confidence(model, prompts: Sequence[str], steps: bool = True) -> tuple[list[str], list[float]]:
    """(answers, confidences in (0, 1]) for prompts, greedily, as `solve` answers them: whole answers
    (a model that shows its work: its steps, '#', the final answer), or with steps=False final answers.

    The batch engine's solve(prompts, confidence=True): its Answer records carry mean_logprob.
    """
    prompts = list(prompts)
    if not prompts:
        return [], []
    out = model.solve(prompts, confidence=True, steps=steps)
    return [a.text for a in out], [math.exp(a.mean_logprob) for a in out]


# ---- measures ---------------------------------------------------------------------------------

def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of `scores` detecting True labels (ties count half); None if one class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def calibration(conf: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[dict]:
    """Equal-width confidence bins over [0, 1]: count, mean confidence, accuracy (empty bins left out)."""
    c = np.asarray(conf, dtype=np.float64)
    y = np.asarray(correct, dtype=bool)
    idx = np.minimum((c * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(m.sum()),
                        "confidence": float(c[m].mean()), "accuracy": float(y[m].mean())})
    return out


def ece(bins: list[dict]) -> float:
    n = sum(b["n"] for b in bins)
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / n) if n else 0.0


def coverage_curve(conf: Sequence[float], correct: Sequence[bool]) -> list[dict]:
    """For each distinct threshold t (answer only when confidence >= t): coverage and accuracy, highest t first."""
    c = np.asarray(conf, dtype=np.float64)
    y = np.asarray(correct, dtype=bool)
    order = np.argsort(-c, kind="mergesort")
    cs, ys = c[order], y[order]
    hits = np.cumsum(ys)
    out = []
    for i in range(len(cs)):
        if i + 1 < len(cs) and cs[i + 1] == cs[i]:
            continue  # a threshold takes every answer of equal confidence
        out.append({"threshold": float(cs[i]), "coverage": (i + 1) / len(cs), "accuracy": float(hits[i] / (i + 1)),
                    "answered": i + 1})
    return out


def thresholds(curve: list[dict], targets: Sequence[float] = TARGETS) -> list[dict]:
    """For each target accuracy: the lowest threshold whose answered set reaches it, with its coverage."""
    out = []
    for t in targets:
        ok = [p for p in curve if p["accuracy"] >= t - 1e-12]
        best = max(ok, key=lambda p: p["coverage"]) if ok else None
        out.append({"target": t, "threshold": best["threshold"] if best else None,
                    "coverage": best["coverage"] if best else 0.0, "accuracy": best["accuracy"] if best else None})
    return out


@dataclass
class ConfidenceStudy:
    model: str
    task: dict
    splits: list[str]
    prompts: list[str]
    expected: list[str]
    answers: list[str]
    confidence: list[float]
    correct: list[bool]

    def summary(self) -> dict:
        curve = coverage_curve(self.confidence, self.correct)
        bins = calibration(self.confidence, self.correct)
        y = np.asarray(self.correct, dtype=bool)
        c = np.asarray(self.confidence, dtype=np.float64)
        return {
            "model": self.model, "task": self.task, "splits": self.splits, "n": len(self.correct),
            "accuracy": float(y.mean()) if len(y) else None,
            "auroc": auroc(c, y),
            "mean_confidence_right": finite(c[y].mean()) if y.any() else None,
            "mean_confidence_wrong": finite(c[~y].mean()) if (~y).any() else None,
            "ece": ece(bins),
            "calibration": bins,
            "thresholds": thresholds(curve),
            "coverage_curve": curve,
            "confidence": "exp(mean log-probability of the greedy answer's tokens and its closing EOS)",
        }


def study(model_path: str | Path, tokenizer: str | None = None, task: str | None = None,
          splits: Sequence[str] = ("test",), limit: int | None = None) -> ConfidenceStudy:
    """Solve a task's splits with confidences and score them with the task's scorer."""
    from tinymath.tasks import build_splits, score

    from .common import open_model, task_of

    model, card, _ = open_model(model_path, tokenizer)
    with model:
        spec = task_of(card, task)
        all_splits = build_splits(spec)
        problems = [p for s in splits for p in all_splits[s]]
        if limit is not None:
            problems = problems[:limit]
        if not problems:
            raise ValueError(f"no problems in splits {', '.join(splits)} of this task")
        answers, confs = solve_with_confidence(model, [p.prompt for p in problems])
    fmt = spec.answer_format()
    correct = [score([p], [a], fmt).groups["all"].exact == 1 for p, a in zip(problems, answers)]
    return ConfidenceStudy(str(model_path), spec.to_dict(), list(splits), [p.prompt for p in problems],
                           [p.answer for p in problems], answers, confs, correct)


def format_summary(s: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    def num(x):
        return "-" if x is None else f"{x:.4f}"

    lines = [f"{s['model']}: {s['n']} problems ({', '.join(s['splits'])}), accuracy {pct(s['accuracy'])}",
             f"confidence = {s['confidence']}",
             f"AUROC (confidence detects right answers): {num(s['auroc'])}   "
             f"mean confidence right {num(s['mean_confidence_right'])}, wrong {num(s['mean_confidence_wrong'])}   "
             f"ECE {num(s['ece'])}", "",
             table(["answer only when accuracy reaches", "threshold", "coverage"],
                   [[pct(t["target"]), num(t["threshold"]), pct(t["coverage"])] for t in s["thresholds"]]), "",
             table(["confidence bin", "n", "mean confidence", "accuracy"],
                   [[f"{b['lo']:.1f}-{b['hi']:.1f}", b["n"], f"{b['confidence']:.3f}", pct(b["accuracy"])]
                    for b in s["calibration"]])]
    return "\n".join(lines)


def plot(s: dict, path: str | Path, confidence: Sequence[float] = (), correct: Sequence[bool] = ()) -> Path:
    """Three panels: confidence histograms (right / wrong), calibration, coverage against accuracy."""
    from .common import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    ax = axes[0]
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=bool)
    edges = np.linspace(0, 1, 21)
    if len(conf):
        ax.hist([conf[corr], conf[~corr]], bins=edges, label=["right", "wrong"], color=["#5cb85c", "#d9534f"],
                stacked=True)
    ax.set_xlabel("confidence")
    ax.set_ylabel("problems")
    au = s.get("auroc")
    ax.set_title(f"confidence of right and wrong answers\nAUROC {'-' if au is None else f'{au:.3f}'}", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    bins = s["calibration"]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    if bins:
        ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=0.09, alpha=0.6,
               color="#5b8fd1", label="accuracy in bin")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color="#1f4e8c",
                label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"calibration (ECE {s['ece']:.3f})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    curve = s["coverage_curve"]
    ax.plot([p["coverage"] for p in curve], [100 * p["accuracy"] for p in curve], color="#1f4e8c")
    for t in s["thresholds"]:
        if t["threshold"] is not None:
            ax.scatter([t["coverage"]], [100 * t["accuracy"]], s=14, color="#d9534f", zorder=3)
            ax.annotate(f"t={t['threshold']:.2f}", (t["coverage"], 100 * t["accuracy"]), fontsize=6,
                        textcoords="offset points", xytext=(3, -8))
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("coverage (share answered)")
    ax.set_ylabel("accuracy of answered %")
    ax.set_title("answer only above a threshold", fontsize=9)
    fig.suptitle(f"{Path(s['model']).name}: {s['n']} problems ({', '.join(s['splits'])})", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


# ---- the calculator that can say "not sure" ----------------------------------------------------------

def load_threshold(path: str | Path, model_path: str | Path, target: float = 0.99) -> tuple[float | None, str]:
    """(threshold, where it came from): the threshold a confidence study (confidence.json) of this
    very model file found for `target` accuracy; (None, why not) when there is none to trust."""
    import json

    from tinymath.export.card import sha256_file

    p = Path(path)
    if not p.is_file():
        return None, f"default; no confidence study at {p}"
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        return None, f"default; {p} is unreadable ({e})"
    if d.get("model_sha256") != sha256_file(model_path):
        return None, f"default; {p} studied another model file"
    for t in d.get("thresholds", []):
        if abs(t["target"] - target) < 1e-9 and t["threshold"] is not None:
            return float(t["threshold"]), f"{100 * target:g}% accuracy in {p}"
    return None, f"default; {p} found no threshold for {100 * target:g}%"


def calc_line(model, line: str, threshold: float) -> tuple[str, str, float]:
    """(printed text, answer, confidence): the answer, or 'not sure (...)' below the threshold."""
    answers, confs = solve_with_confidence(model, [typed_prompt(line)], steps=False)
    a, c = answers[0], confs[0]
    if c < threshold:
        return f"not sure (maybe {a or '<empty>'}, confidence {c:.4f} < {threshold:.4f})", a, c
    return a, a, c
