"""Load a TinyMath training checkpoint into an ExportModel (numpy).

A checkpoint is in one of train/checkpoint.py's two formats: the C engine's arrays
format (a zip of .npy arrays and JSON, read with numpy: no torch needed) or the
PyTorch engine's torch.save dict (the only export path that imports torch). Either holds a dict
with "model_config" (ModelConfig fields), "model" (the state_dict), and for the
model card "step", "tokens_seen", "train_config" (with "task" and "seed"), and
optionally "tokenizer" (a path: tokenizer.bin, or a SentencePiece .model),
"tokenizer_model" (the SentencePiece .model), "task", "metrics", "best_val_acc".

llama2.c's train.py (and nanoGPT-style Llama trainers) save "model_args" instead
of "model_config" (dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of,
max_seq_len, norm_eps) and the same weight names, sometimes prefixed with
torch.compile's "_orig_mod."; such a checkpoint exports too. Its hidden size is
read from the weights (llama2.c derives it from multiple_of), its classifier is
tied when output.weight equals the embedding (llama2.c ties them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .card import sha256_file
from .layout import ExportError
from .source import ExportModel, from_state_dict


def read_checkpoint(path: str | os.PathLike) -> ExportModel:
    """Read and check a checkpoint; raise ExportError saying what is wrong with it."""
    from tinymath.train.checkpoint import read_checkpoint_file

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no such checkpoint: {path}")
    try:
        ckpt = read_checkpoint_file(path)
    except (ValueError, ModuleNotFoundError) as e:  # damaged, not a checkpoint, or torch's format without torch
        raise ExportError(f"{path}: not a loadable torch checkpoint or arrays checkpoint ({e})") from None
    return from_checkpoint_dict(ckpt, source=path)


def _as_array(t: Any) -> np.ndarray | None:
    """A torch tensor or numpy array as numpy (float32 if floating), None for anything else."""
    if hasattr(t, "detach"):
        t = t.detach().cpu()
        return t.float().numpy() if t.is_floating_point() else t.numpy()
    if isinstance(t, np.ndarray):
        return t.astype(np.float32) if np.issubdtype(t.dtype, np.floating) else t
    return None


def from_checkpoint_dict(ckpt: Any, source: str | os.PathLike | None = None) -> ExportModel:
    """An ExportModel from a checkpoint dict already in memory (torch tensors or numpy arrays)."""
    what = f"checkpoint {source}" if source else "checkpoint"
    if not isinstance(ckpt, dict):
        raise ExportError(f"{what}: expected a dict, got {type(ckpt).__name__}")
    if "model" not in ckpt or ("model_config" not in ckpt and "model_args" not in ckpt):
        missing = "'model' entry" if "model" not in ckpt else "'model_config' entry (nor llama2.c's 'model_args')"
        raise ExportError(f"{what}: no {missing} (keys: {sorted(map(str, ckpt))})")
    if "model_config" not in ckpt:
        ckpt = {**ckpt, **_from_model_args(ckpt, what)}
    mc = ckpt["model_config"]
    if not isinstance(mc, dict):
        raise ExportError(f"{what}: model_config is a {type(mc).__name__}, expected a dict")
    # the training stage's own reading of the config: defaults and validation as it trains
    from tinymath.train.model_config import ModelConfig

    try:
        cfg = ModelConfig.from_dict(dict(mc))
        cfg.validate()
    except (TypeError, ValueError) as e:
        raise ExportError(f"{what}: {e}") from None
    sd = ckpt["model"]
    if not isinstance(sd, dict):
        raise ExportError(f"{what}: 'model' is a {type(sd).__name__}, expected a state_dict")
    arrays = {}
    for name, t in sd.items():
        a = _as_array(t)
        if a is None:
            raise ExportError(f"{what}: entry {name!r} of 'model' is a {type(t).__name__}, not a tensor")
        arrays[name] = a
    meta: dict[str, Any] = {}
    for key in ("step", "tokens_seen", "train_config", "task", "tokenizer", "tokenizer_model", "metrics",
                "best_val_acc"):
        if key in ckpt:
            meta[key] = ckpt[key]
    if source is not None:
        meta["source"] = {"checkpoint": os.fspath(source), "sha256": sha256_file(source)}
    return from_state_dict(cfg.to_dict(), arrays, meta, what=what)


def _from_model_args(ckpt: dict, what: str) -> dict:
    """llama2.c's checkpoint layout -> {"model_config", "model"} in ours."""
    import torch

    args, sd = ckpt["model_args"], ckpt["model"]
    if not isinstance(args, dict) or not isinstance(sd, dict):
        raise ExportError(f"{what}: model_args and model must be dicts")
    sd = {k.removeprefix("_orig_mod."): v for k, v in sd.items()}
    w1 = sd.get("layers.0.feed_forward.w1.weight")
    emb, out = sd.get("tok_embeddings.weight"), sd.get("output.weight")
    if not isinstance(w1, torch.Tensor) or not isinstance(emb, torch.Tensor):
        raise ExportError(f"{what}: model_args given, but no layers.0.feed_forward.w1.weight or "
                          f"tok_embeddings.weight among the weights")
    tied = out is None or (isinstance(out, torch.Tensor) and out.shape == emb.shape and torch.equal(out, emb))
    try:
        n_heads = int(args["n_heads"])
        config = {"dim": int(args["dim"]), "n_layers": int(args["n_layers"]), "n_heads": n_heads,
                  "n_kv_heads": int(args.get("n_kv_heads") or n_heads), "hidden_dim": int(w1.shape[0]),
                  "vocab_size": int(args["vocab_size"]), "max_seq_len": int(args["max_seq_len"]),
                  "norm_eps": float(args.get("norm_eps", 1e-5)), "rope_theta": float(args.get("rope_theta", 10000.0)),
                  "tied": bool(tied)}
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{what}: model_args lacks or garbles {e}") from None
    return {"model_config": config, "model": sd}


def from_module(model, meta: dict | None = None) -> ExportModel:
    """An ExportModel from a live tinymath.train.model.Transformer."""
    arrays = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    return from_state_dict(model.cfg.to_dict(), arrays, meta or {}, what="model")
