"""Shared pieces of `tinymath inspect`: a model file with its card, tokenizer and task; PNG output.

No torch here: everything in this module works on a machine that only runs models.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

EOS_ID = 2
SPECIAL = {0: "<unk>", 1: "<s>", 2: "</s>"}


class InspectError(ValueError):
    """A problem with the user's input (printed as one line by the CLI)."""


# ---- model files ---------------------------------------------------------------------------------

def open_model(path: str | Path, tokenizer: str | None = None, **kwargs: Any):
    """(Model, card, tokenizer path) for a .bin model file; the tokenizer from --tokenizer, the card or beside it."""
    from tinymath.export.card import ModelFiles
    from tinymath.runc import Model

    try:
        files = ModelFiles.open(path)
    except ValueError as e:  # a card that is not JSON
        raise InspectError(str(e)) from None
    tok = files.tokenizer(tokenizer)
    return Model(str(files.path), tokenizer=str(tok), **kwargs), files.card, tok


def task_of(card: dict, given: str | dict | None = None):
    """The TaskSpec to use: `given` (JSON text, a dict or a spec.json path), else the card's task."""
    from tinymath.tasks import TaskSpec

    if given:
        if isinstance(given, dict):
            return TaskSpec.from_dict(given)
        text = str(given).strip()
        if text.startswith("{"):
            try:
                return TaskSpec.from_dict(json.loads(text))
            except json.JSONDecodeError as e:
                raise InspectError(f"--task: not valid JSON: {e}") from None
        p = Path(text)
        if p.is_dir():
            p = p / "spec.json"
        if p.is_file():
            return TaskSpec.load(p)
        from tinymath.tasks import PRESETS

        if text in PRESETS:
            d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in PRESETS[text].items()}
            return TaskSpec.from_dict(d)
        raise InspectError(f"--task: {text!r} is neither a JSON task spec, a spec.json, nor a preset")
    from tinymath.export.card import card_task

    task = card_task(card)
    if not task:
        raise InspectError("the model card names no task: pass --task '{\"task\": \"arith\", ...}'")
    return TaskSpec.from_dict(task)


def model_name(path: str | Path) -> str:
    """A short name for a model file: its stem, or its folder's name for the usual model.bin."""
    p = Path(path)
    return p.parent.name if p.stem in ("model", "model.q8") and p.parent.name else p.stem


# ---- numbers ---------------------------------------------------------------------------------------

def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities (float64) along the last axis."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats along the last axis (0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1)


def finite(x: float | None) -> float | None:
    """JSON-safe float: None for None, NaN and infinities."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def piece(model, token: int) -> str:
    """The text of one token id, with <s>, </s>, <unk> named."""
    if token in SPECIAL:
        return SPECIAL[token]
    return model.decode([token], prev=EOS_ID)  # prev != BOS: a leading space is kept


def show(text: str) -> str:
    """A token's text for a table or a plot label: spaces visible."""
    return text.replace(" ", "\u2423") if text else "\u2205"


# ---- plots --------------------------------------------------------------------------------------------

def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InspectError("drawing PNGs needs matplotlib: pip install 'tinymath[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure atomically as PNG and close it."""
    from tinymath import fileio

    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    from tinymath import fileio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_json(path, obj)
    return path


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    cells = [[str(h) for h in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
