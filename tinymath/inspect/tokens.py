"""What the model considered at each generated token: top-k candidates, probabilities, entropy.

From the C engine alone (no torch): the answer is decoded greedily, as `solve`
does, then one forward pass over [BOS] + prompt + answer gives the logits at
every position; the row before each generated token is the distribution that
token was picked from. The step after the last answer token is the one where
the model chose to stop (EOS), shown too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import EOS_ID, entropy, log_softmax, piece, save_png, show, softmax, table


@dataclass
class Step:
    """One generated token and the distribution it came from (probabilities over the whole vocabulary)."""

    index: int                  # 0 = the first generated token
    position: int               # position in [BOS] + prompt + answer whose logits gave this distribution
    token: int
    text: str
    prob: float
    logprob: float
    entropy: float              # nats
    top: list[tuple[int, str, float]] = field(default_factory=list)   # (id, text, probability), best first
    probs: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {"index": self.index, "position": self.position, "token": self.token, "text": self.text,
                "prob": self.prob, "logprob": self.logprob, "entropy": self.entropy,
                "top": [{"id": i, "text": t, "prob": p} for i, t, p in self.top]}


@dataclass
class Trace:
    prompt: str
    prompt_ids: list[int]       # [BOS] + encode(prompt)
    answer: str
    tokens: list[int]           # generated tokens (EOS not included)
    steps: list[Step]           # one per generated token, plus the stop step when the model chose EOS

    @property
    def ids(self) -> list[int]:
        """[BOS] + prompt + generated tokens."""
        return self.prompt_ids + self.tokens

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "prompt_ids": self.prompt_ids, "answer": self.answer, "tokens": self.tokens,
                "steps": [s.to_dict() for s in self.steps]}


def trace(model, prompt: str, k: int = 5, max_new: int | None = None, keep_probs: bool = False) -> Trace:
    """Greedy answer of `model` (a tinymath.runc.Model) to `prompt`, with each step's top-k and entropy."""
    if k < 1:
        raise ValueError(f"top-k must be at least 1, got {k}")
    ids = model.encode(prompt)
    gen = model.generate_tokens(ids, max_new=max_new, temperature=0.0)
    seq = ids + gen.tokens
    logits = model.logits(seq)  # row t: distribution of token t+1
    rows = logits[len(ids) - 1:]
    steps: list[Step] = []
    for j, row in enumerate(rows):
        probs = softmax(row)
        logp = log_softmax(row)
        if j < len(gen.tokens):
            tok = gen.tokens[j]
        else:  # after the last generated token: did the model stop here?
            tok = int(np.argmax(row))
            if tok != EOS_ID:
                break  # generation ended at max_new or the context, not by choice
        order = np.argsort(-probs, kind="stable")[:k]
        steps.append(Step(index=j, position=len(ids) - 1 + j, token=int(tok), text=piece(model, int(tok)),
                          prob=float(probs[tok]), logprob=float(logp[tok]), entropy=float(entropy(probs)),
                          top=[(int(i), piece(model, int(i)), float(probs[i])) for i in order],
                          probs=probs if keep_probs else None))
    answer = model.decode(gen.tokens, prev=ids[-1]).strip()
    return Trace(prompt, ids, answer, list(gen.tokens), steps)


def format_trace(t: Trace) -> str:
    rows = []
    for s in t.steps:
        cands = "  ".join(f"{show(txt)} {p:.3f}" for _, txt, p in s.top)
        rows.append([s.index, show(s.text), f"{s.prob:.4f}", f"{s.entropy:.4f}", cands])
    head = f"{t.prompt} -> {t.answer!r}  ({len(t.tokens)} tokens; entropy in nats)"
    return head + "\n" + table(["step", "token", "p", "entropy", f"top-{len(t.steps[0].top) if t.steps else 0}"],
                               rows)


def plot_trace(t: Trace, path: str | Path, title: str | None = None) -> Path:
    """One panel per step, 12 to a row (a steps answer runs to 150 tokens): horizontal bars of the top-k
    probabilities, the chosen token highlighted."""
    from .common import pyplot

    plt = pyplot()
    n = max(1, len(t.steps))
    k = max((len(s.top) for s in t.steps), default=1)
    cols = min(n, 12)
    rows = -(-n // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(1.6 * cols + 0.6, (0.32 * k + 1.3) * rows), squeeze=False,
                             sharex=True)
    axes = list(grid.flat)
    for ax, s in zip(axes, t.steps):
        labels = [show(txt) for _, txt, _ in s.top][::-1]
        probs = [p for _, _, p in s.top][::-1]
        colors = ["#d9534f" if i == s.token else "#5b8fd1" for i, _, _ in s.top][::-1]
        ax.barh(range(len(probs)), probs, color=colors)
        for y, p in enumerate(probs):
            ax.text(min(p, 0.62) + 0.02, y, f"{p:.2f}" if p >= 0.005 else "<.01", va="center", fontsize=6.5)
        ax.set_yticks(range(len(probs)), labels, fontsize=8, family="monospace")
        ax.set_xlim(0, 1)
        ax.set_title(f"{show(s.text)}  p={s.prob:.2f}\nH={s.entropy:.2f} nats", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[len(t.steps):]:
        ax.axis("off")
    fig.suptitle(title or f"{t.prompt} {t.answer}   (top-{k} per generated token)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title above the panels
    return save_png(fig, path)
