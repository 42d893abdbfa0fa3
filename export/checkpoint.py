"""Load a TinyMath training checkpoint (torch) into an ExportModel (numpy).

The only export module that imports torch. A checkpoint is a torch.save dict
with "model_config" (ModelConfig fields), "model" (the state_dict), and for the
model card "step", "tokens_seen", "train_config" (with "task" and "seed"), and
optionally "tokenizer" (a path: tokenizer.bin, or a SentencePiece .model),
"tokenizer_model" (the SentencePiece .model), "task", "metrics", "best_val_acc".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .card import sha256_file
from .layout import ExportError
from .source import ExportModel, from_state_dict


def read_checkpoint(path: str | os.PathLike) -> ExportModel:
    """Read and check a checkpoint; raise ExportError saying what is wrong with it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no such checkpoint: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or holding objects weights_only refuses
        raise ExportError(f"{path}: not a loadable torch checkpoint ({type(e).__name__}: {e})") from None
    return from_checkpoint_dict(ckpt, source=path)


def from_checkpoint_dict(ckpt: Any, source: str | os.PathLike | None = None) -> ExportModel:
    """An ExportModel from a checkpoint dict already in memory (as torch.load returns it)."""
    import torch

    what = f"checkpoint {source}" if source else "checkpoint"
    if not isinstance(ckpt, dict):
        raise ExportError(f"{what}: expected a dict, got {type(ckpt).__name__}")
    for key in ("model_config", "model"):
        if key not in ckpt:
            raise ExportError(f"{what}: no {key!r} entry (keys: {sorted(map(str, ckpt))})")
    mc = ckpt["model_config"]
    if not isinstance(mc, dict):
        raise ExportError(f"{what}: model_config is a {type(mc).__name__}, expected a dict")
    # the training stage's own reading of the config: defaults and validation as it trains
    from tinymath.train.model import ModelConfig

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
        if not isinstance(t, torch.Tensor):
            raise ExportError(f"{what}: entry {name!r} of 'model' is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu()
        arrays[name] = t.float().numpy() if t.is_floating_point() else t.numpy()
    meta: dict[str, Any] = {}
    for key in ("step", "tokens_seen", "train_config", "task", "tokenizer", "tokenizer_model", "metrics",
                "best_val_acc"):
        if key in ckpt:
            meta[key] = ckpt[key]
    if source is not None:
        meta["source"] = {"checkpoint": os.fspath(source), "sha256": sha256_file(source)}
    return from_state_dict(cfg.to_dict(), arrays, meta, what=what)


def from_module(model, meta: dict | None = None) -> ExportModel:
    """An ExportModel from a live tinymath.train.model.Transformer."""
    arrays = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    return from_state_dict(model.cfg.to_dict(), arrays, meta or {}, what="model")
