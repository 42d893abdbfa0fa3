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
    """The tokenizer file a checkpoint names: as given, else relative to the checkpoint's folder."""
    if not name:
        return None
    p = Path(name)
    if p.exists():
        return p
    if source is not None and not p.is_absolute():
        q = Path(source).parent / p
        if q.exists():
            return q
    return None


def _accuracy(metrics: Any) -> Any:
    if not isinstance(metrics, dict):
        return None
    acc = {k: v for k, v in metrics.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and ("acc" in str(k) or "exact" in str(k))}
    if "accuracy" in acc:
        return acc["accuracy"]
    return acc or None


def build_card(model, *, fmt: str, file: str | os.PathLike, sha256: str | None, size: int | None,
               group_size: int | None = None, quantization: dict | None = None,
               tokenizer: str | os.PathLike | None = None, warnings: list[str] | None = None) -> dict:
    """The card for `model` (an ExportModel) written as `fmt` to `file`."""
    from .. import __version__

    cfg = model.config
    meta = model.meta
    train_config = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}
    tok_name = tokenizer if tokenizer is not None else meta.get("tokenizer")
    source = meta.get("source") or {}
    tok_path = resolve_tokenizer(tok_name, source.get("checkpoint"))
    tok = None
    if tok_name:
        tok = {"path": os.fspath(tok_name), "sha256": sha256_file(tok_path) if tok_path and tok_path.is_file() else None}
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
        "task": train_config.get("task"),
        "seed": train_config.get("seed"),
        "step": meta.get("step"),
        "tokens_seen": meta.get("tokens_seen"),
        "accuracy": _accuracy(meta.get("metrics")),
        "metrics": meta.get("metrics"),
        "quantization": quantization,
        "source": source or None,
        "warnings": list(warnings or []),
        "exported_by": f"tinymath {__version__} export",
    }
    return jsonable(card)
