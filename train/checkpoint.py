"""Checkpoints: two formats, written atomically, one reader for both.

Both hold the same dict; its values are tensors (or arrays), dicts, lists, str, int,
float, bool and None:

    model_config   dict (ModelConfig.to_dict())
    model          state_dict (llama2.c's parameter names)
    optimizer      AdamW state_dict (train/optim.py's layout; the C engine writes the same)
    step           optimizer steps taken
    tokens_seen    training tokens processed (problem tokens, padding excluded)
    train_config   dict: the fully resolved TrainConfig, with task = the task spec
    task           dict: the task spec (or data source) that rebuilds the splits
    tokenizer      absolute path of tokenizer.bin in the run folder
    tokenizer_model  absolute path of tokenizer.model there (None if absent)
    metrics        latest evaluation (val/holdout accuracies; test at the end)
    best_val_acc   best val exact-match so far
    elapsed        seconds of training so far (summed across resumes)
    loss_acc       [summed answer-token loss, answer tokens] since the last evaluation
    rng            torch / numpy / python / cuda RNG states (the PyTorch engine's; {} for the C engine)
    version        format version (1)

The formats:
- torch (the PyTorch engine's, `save_checkpoint`): `torch.save` of the dict, read back
  with `torch.load(path, weights_only=True)`.
- arrays (the C engine's, `save_array_checkpoint`; needs no torch to write or read): a
  zip archive in numpy's .npz layout. Member `checkpoint.json` holds
  {"format": "tinymath-checkpoint", "version": 1, "checkpoint": the dict}, each array
  replaced by {"__array__": NAME}, and every array is the member NAME.npy in numpy's
  .npy format (NAME is its path in the dict, e.g. model/tok_embeddings.weight or
  optimizer/exp_avg/0/2), so `np.load(path)` lists the arrays too. Stored, not
  compressed: float32 weights barely compress.

`load_checkpoint` tells them apart by content (a zip holding checkpoint.json is the
arrays format; torch's files are zips without it) and returns tensors
(arrays="torch": the PyTorch engine, --resume, --init-from and inspect read either
format) or numpy arrays (arrays="numpy": the C engine and export, which need torch
only for a torch-format file). The run folder keeps `ckpt.pt` (latest) and `best.pt`
(best val accuracy) in either format.
"""

from __future__ import annotations

import io
import json
import os
import random
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tinymath import fileio

FORMAT_VERSION = 1
ARRAYS_FORMAT = "tinymath-checkpoint"
ARRAYS_META = "checkpoint.json"
REQUIRED_KEYS = ("model_config", "model", "optimizer", "step", "tokens_seen", "train_config", "tokenizer",
                 "metrics")


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> None:
    """torch.save to a temp file beside `path`, fsync, then os.replace: never a half-written file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_file(path) as f:
        torch.save(ckpt, f)


# ---- the arrays format (no torch) ---------------------------------------------------------------

def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or hasattr(x, "detach")


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def _split_arrays(x: Any, name: str, arrays: dict[str, np.ndarray]) -> Any:
    """x with every array replaced by {"__array__": name}, the arrays collected by name."""
    if _is_array(x):
        arrays[name] = np.ascontiguousarray(_numpy(x))
        return {"__array__": name}
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            raise TypeError(f"checkpoint: {name or 'the checkpoint'} has a non-string key")
        return {k: _split_arrays(v, f"{name}/{k}" if name else k, arrays) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_split_arrays(v, f"{name}/{i}", arrays) for i, v in enumerate(x)]
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    raise TypeError(f"checkpoint: {name} is a {type(x).__name__}, which the arrays format does not hold")


def _join_arrays(x: Any, arrays: dict[str, Any]) -> Any:
    if isinstance(x, dict):
        if set(x) == {"__array__"}:
            return arrays[x["__array__"]]
        return {k: _join_arrays(v, arrays) for k, v in x.items()}
    if isinstance(x, list):
        return [_join_arrays(v, arrays) for v in x]
    return x


def save_array_checkpoint(path: str | os.PathLike, ckpt: dict) -> None:
    """The checkpoint dict in the arrays format (torch tensors or numpy arrays), atomically."""
    arrays: dict[str, np.ndarray] = {}
    meta = {"format": ARRAYS_FORMAT, "version": FORMAT_VERSION, "checkpoint": _split_arrays(ckpt, "", arrays)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_file(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        z.writestr(ARRAYS_META, json.dumps(meta, sort_keys=True))
        for name, a in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as m:
                np.lib.format.write_array(m, a, allow_pickle=False)


def _read_arrays_format(z: zipfile.ZipFile) -> dict:
    meta = json.loads(z.read(ARRAYS_META))
    if meta.get("format") != ARRAYS_FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, "
                         f"expected {ARRAYS_FORMAT!r} version {FORMAT_VERSION}")
    arrays = {}
    for member in z.namelist():
        if member.endswith(".npy"):
            with z.open(member) as m:
                arrays[member[:-4]] = np.lib.format.read_array(io.BufferedReader(m), allow_pickle=False)
    return _join_arrays(meta["checkpoint"], arrays)


def _map_arrays(x: Any, f: Callable[[Any], Any]) -> Any:
    if _is_array(x):
        return f(x)
    if isinstance(x, dict):
        return {k: _map_arrays(v, f) for k, v in x.items()}
    if isinstance(x, list):
        return [_map_arrays(v, f) for v in x]
    if isinstance(x, tuple):
        return tuple(_map_arrays(v, f) for v in x)
    return x


# ---- reading either format ----------------------------------------------------------------------

def is_array_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is in the arrays format (a zip holding checkpoint.json)."""
    try:
        with zipfile.ZipFile(path) as z:
            return ARRAYS_META in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def read_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Whatever `path` holds, arrays as stored (numpy for the arrays format, tensors for torch's).

    Raises ValueError when the file is damaged or not a checkpoint, ModuleNotFoundError when
    it is torch's format and torch is not installed.
    """
    path = Path(path)
    try:
        if is_array_checkpoint(path):
            with zipfile.ZipFile(path) as z:
                return _read_arrays_format(z)
    except Exception as e:  # a damaged member, garbled JSON, an .npy holding objects
        raise ValueError(f"checkpoint {path} is damaged ({type(e).__name__}: {e})") from None
    try:
        import torch
    except ImportError:
        raise ModuleNotFoundError(f"checkpoint {path} is in torch's format (the PyTorch engine's): reading it "
                                  f"needs torch (pip install torch)") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong file type, unpickling refused
        raise ValueError(f"checkpoint {path} is truncated or not a TinyMath checkpoint "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", arrays: str = "torch") -> dict:
    """A checkpoint dict of either format with its arrays as `arrays` ("torch" tensors or "numpy");
    FileNotFoundError / ValueError with a clear message when missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = read_checkpoint_file(path, map_location)
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)}: not a TinyMath training checkpoint")
    if arrays == "numpy":
        return _map_arrays(ckpt, _numpy)
    import torch

    return _map_arrays(ckpt, lambda a: a if isinstance(a, torch.Tensor) else torch.from_numpy(a))


# ---- RNG states as weights_only-safe values ------------------------------------------------

def rng_state() -> dict:
    import torch

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
    import torch

    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], np.asarray(_numpy(s["keys"])).astype(np.uint32), s["pos"],
                             s["has_gauss"], s["cached"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(s["state"]), s["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except Exception:
            pass  # a different number of GPUs: the data order does not depend on these
