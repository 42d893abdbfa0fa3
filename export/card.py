"""The model card: a JSON file beside every exported .bin (same stem, .json).

It says what the file is (format, version, group size, header extension,
sha256 and size of the .bin), what model it holds (config, parameter count),
and where it came from (tokenizer, task spec and seed, training steps and
tokens, accuracy if the checkpoint recorded any, the source checkpoint and its
sha256). Evaluation may add keys later; the ones written here keep their meaning.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

from .layout import uses_extension

SCHEMA = "tinymath.model_card/1"
FORMAT_NAMES = {"v0": "llama2.c version 0 (legacy, fp32)", "v1": "llama2.c version 1 (fp32)",
                "v2": "llama2.c version 2 (int8 Q8_0)", "hf": "Hugging Face LlamaForCausalLM (safetensors, fp32)"}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(bin_path: str | os.PathLike) -> Path:
    """model.bin -> model.json (the same stem)."""
    return Path(bin_path).with_suffix(".json")


def jsonable(x: Any) -> Any:
    """A JSON-safe copy: tuples to lists, paths and unknown objects to str, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        try:
            return jsonable(x.item())
        except (TypeError, ValueError):
            pass
    return str(x)


def resolve_tokenizer(name: str | os.PathLike | None, source: str | os.PathLike | None = None) -> Path | None:
    """The tokenizer file a checkpoint names: as given, else relative to the checkpoint's folder,
    else the file of that name beside the checkpoint (a run folder that moved)."""
    if not name:
        return None
    p = Path(name)
    if p.is_file():
        return p
    if source is not None:
        for q in ((Path(source).parent / p) if not p.is_absolute() else None, Path(source).parent / p.name):
            if q is not None and q.is_file():
                return q
    return None


def _file_entry(name, source) -> dict | None:
    if not name:
        return None
    path = resolve_tokenizer(name, source)
    return {"path": os.fspath(name), "sha256": sha256_file(path) if path else None}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _accuracy(meta: dict) -> dict | None:
    """The accuracies a checkpoint recorded: numeric metrics named *acc* or *exact*, and best_val_acc."""
    metrics = meta.get("metrics")
    flat = _flatten(metrics) if isinstance(metrics, dict) else {}
    if isinstance(meta.get("best_val_acc"), (int, float)) and meta["best_val_acc"] >= 0:
        flat["best_val_acc"] = meta["best_val_acc"]
    acc = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
           and ("acc" in k.lower() or "exact" in k.lower())}
    return acc or None


def build_card(model, *, fmt: str, file: str | os.PathLike, sha256: str | None, size: int | None,
               group_size: int | None = None, quantization: dict | None = None,
               tokenizer: str | os.PathLike | None = None, warnings: list[str] | None = None) -> dict:
    """The card for `model` (an ExportModel) written as `fmt` to `file`."""
    from .. import __version__

    cfg = model.config
    meta = model.meta
    train_config = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}
    source = meta.get("source") or {}
    src = source.get("checkpoint")
    if tokenizer is not None:  # given by the user: a tokenizer.bin or a SentencePiece .model
        entries = {"model" if Path(tokenizer).suffix == ".model" else "bin": _file_entry(tokenizer, src)}
    else:
        named = meta.get("tokenizer")
        entries = {"model" if named and Path(named).suffix == ".model" else "bin": _file_entry(named, src)}
        if meta.get("tokenizer_model"):
            entries["model"] = _file_entry(meta["tokenizer_model"], src)
    entries = {k: v for k, v in entries.items() if v}
    tok = entries or None
    ext = uses_extension(cfg.rope_theta, cfg.norm_eps)
    runners = ["tinymath runc"]
    if not ext and fmt == "v0":
        runners.append("llama2.c run.c")
    if not ext and fmt == "v2":
        runners.append("llama2.c runq.c")
    if fmt == "hf":
        runners = ["transformers LlamaForCausalLM"]
    card = {
        "schema": SCHEMA,
        "file": Path(file).name,
        "format": fmt,
        "format_description": FORMAT_NAMES[fmt],
        "version": {"v0": 0, "v1": 1, "v2": 2}.get(fmt),
        "sha256": sha256,
        "bytes": size,
        "config": model.model_config,
        "n_params": model.n_params,
        "group_size": group_size,
        "header_extension": ({"tag": "TMx1", "rope_theta": cfg.rope_theta, "norm_eps": cfg.norm_eps}
                             if ext and fmt in ("v1", "v2") else None),
        "rope_theta": cfg.rope_theta,
        "norm_eps": cfg.norm_eps,
        "runs_in": runners,
        "tokenizer": tok,
        "task": train_config.get("task", meta.get("task")),
        "seed": train_config.get("seed"),
        "step": meta.get("step"),
        "tokens_seen": meta.get("tokens_seen"),
        "accuracy": _accuracy(meta),
        "metrics": meta.get("metrics"),
        "quantization": quantization,
        "source": source or None,
        "warnings": list(warnings or []),
        "exported_by": f"tinymath {__version__} export",
    }
    return jsonable(card)
