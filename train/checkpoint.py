"""Checkpoints: written atomically, read with torch.load(weights_only=True).

A checkpoint is a dict holding only tensors, dicts, lists, tuples, str, int,
float, bool and None, so `torch.load(path, weights_only=True)` reads it:

    model_config   dict (ModelConfig.to_dict())
    model          state_dict (llama2.c's parameter names)
    optimizer      AdamW state_dict
    step           optimizer steps taken
    tokens_seen    training tokens processed (problem tokens, padding excluded)
    train_config   dict: the fully resolved TrainConfig, with task = the task spec
    task           dict: the task spec (or data source) that rebuilds the splits
    tokenizer      absolute path of tokenizer.bin in the run folder
    tokenizer_model  absolute path of tokenizer.model there (None if absent)
    metrics        latest evaluation (val/holdout accuracies; test at the end)
    best_val_acc   best val exact-match so far
    elapsed        seconds of training so far (summed across resumes)
    rng            torch / numpy / python / cuda RNG states
    version        format version (1)

The run folder keeps `ckpt.pt` (latest) and `best.pt` (best val accuracy).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from tinymath import fileio

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model_config", "model", "optimizer", "step", "tokens_seen", "train_config", "tokenizer",
                 "metrics")


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> None:
    """torch.save to a temp file beside `path`, fsync, then os.replace: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_file(path) as f:
        torch.save(ckpt, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint dict; FileNotFoundError / ValueError with a clear message when missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong file type, unpickling refused
        raise ValueError(f"checkpoint {path} is truncated or not a TinyMath checkpoint "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)}: not a TinyMath training checkpoint")
    return ckpt


# ---- RNG states as weights_only-safe values ------------------------------------------------

def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]),
                   "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    if not state:
        return
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(s["state"]), s["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except Exception:
            pass  # a different number of GPUs: the data order does not depend on these
