"""The model card: a JSON file beside every exported .bin (same stem, .json).

It says what the file is (format, version, group size, header extension,
sha256 and size of the .bin), what model it holds (config, parameter count),
and where it came from (tokenizer, task spec and seed, training steps and
tokens, accuracy if the checkpoint recorded any, the source checkpoint and its
sha256). Evaluation may add keys later; the ones written here keep their meaning.
Every path a card holds is relative to the card's own folder, so a model, its card
and its files can move together; `ModelFiles` finds them again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
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


def locate(named: str | os.PathLike | None, folder: str | os.PathLike | None = None) -> Path | None:
    """The file a card or checkpoint names, or None: relative to `folder` (the record's own folder,
    where cards write their paths), as given (absolute, or older records), else the file of that
    name in `folder` (a folder that moved, or a file copied beside the model)."""
    if not named:
        return None
    p = Path(named)
    candidates = [p] if folder is None else [Path(folder) / p, p, Path(folder) / p.name]
    return next((c for c in candidates if c.is_file()), None)


def _relative(path: Path, folder: Path) -> str:
    """`path` as the card writes it: relative to the card's folder, so the pair can move together."""
    try:
        return os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive (Windows): no relative form
        return os.fspath(path)


def _file_entry(name, source, folder: Path) -> dict | None:
    if not name:
        return None
    path = locate(name, Path(source).parent if source else None)
    return {"path": _relative(path, folder) if path else os.fspath(name),
            "sha256": sha256_file(path) if path else None}


@dataclass
class ModelFiles:
    """A model file and the files its card names (tokenizer, training checkpoint, task), found
    by one rule: a card's paths are relative to the card; failing that, a file of the same name
    beside the model. The one place that finds a model's files."""

    path: Path
    card: dict

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ModelFiles":
        """Raise FileNotFoundError for a missing model, ValueError for a card that is not JSON."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        cp = card_path(path)
        card: Any = {}
        if cp.is_file():
            try:
                card = json.loads(cp.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"model card {cp} is not valid JSON: {e}") from None
        card = card if isinstance(card, dict) else {}
        # export writes the .bin, then its card: a kill between the two leaves a new file beside the
        # old card, whose task and tokenizer may not be the new file's
        named = card.get("sha256")
        if isinstance(named, str) and named != sha256_file(path):
            raise ValueError(f"model card {cp} is out of step with {path.name}: it describes a file with "
                             f"sha256 {named[:16]}..., not this one (export again, or remove the card)")
        return cls(path, card)

    def _named(self, *keys: str) -> str | None:
        d: Any = self.card
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d if isinstance(d, str) and d else None

    def tokenizer(self, given: str | os.PathLike | None = None) -> Path:
        """tokenizer.bin: `given`, else the card's, else tokenizer.bin beside the model."""
        if given:
            if not Path(given).is_file():
                raise FileNotFoundError(f"tokenizer not found: {given}")
            return Path(given)
        found = (locate(self._named("tokenizer", "bin", "path"), self.path.parent)
                 or locate("tokenizer.bin", self.path.parent))
        if found is None:
            named = self._named("tokenizer", "bin", "path")
            raise FileNotFoundError(f"no tokenizer for {self.path}: pass --tokenizer (the card names "
                                    f"{named or 'none'}, and there is no tokenizer.bin beside the model)")
        return found

    def tokenizer_model(self) -> Path | None:
        """The SentencePiece .model the card names, or tokenizer.model beside the model."""
        return (locate(self._named("tokenizer", "model", "path"), self.path.parent)
                or locate("tokenizer.model", self.path.parent))

    def checkpoint(self, given: str | os.PathLike | None = None) -> Path | None:
        """The training checkpoint: `given`, the card's source, or best.pt / ckpt.pt beside the model."""
        if given:
            if not Path(given).is_file():
                raise FileNotFoundError(f"checkpoint not found: {given}")
            return Path(given)
        for named in (self._named("source", "checkpoint"), "best.pt", "ckpt.pt"):
            found = locate(named, self.path.parent)
            if found is not None:
                return found
        return None

    def task(self) -> dict | None:
        return card_task(self.card)


def card_task(card: dict) -> dict | None:
    """The task spec a model was trained on (or last evaluated on), as its card records it."""
    task = card.get("task") or card.get("evaluated_task")
    return task if isinstance(task, dict) else None


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
    folder = Path(file) if fmt == "hf" else Path(file).parent  # where the card is written
    if tokenizer is not None:  # given by the user: a tokenizer.bin or a SentencePiece .model
        entries = {"model" if Path(tokenizer).suffix == ".model" else "bin": _file_entry(tokenizer, None, folder)}
    else:
        named = meta.get("tokenizer")
        entries = {"model" if named and Path(named).suffix == ".model" else "bin": _file_entry(named, src, folder)}
        if meta.get("tokenizer_model"):
            entries["model"] = _file_entry(meta["tokenizer_model"], src, folder)
    entries = {k: v for k, v in entries.items() if v}
    tok = entries or None
    ext = uses_extension(cfg.rope_theta, cfg.norm_eps)
    runners = ["runc/run (make run)", "tinymath.runc.Model"]
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
        "accuracy": meta.get("accuracy") or _accuracy(meta),  # a re-export keeps its source card's
        "metrics": meta.get("metrics"),
        "quantization": quantization,
        "source": {k: (_relative(Path(v), folder) if k in ("checkpoint", "bin", "hf") and isinstance(v, str)
                       and Path(v).exists() else v)
                   for k, v in source.items()} or None,
        "warnings": list(warnings or []),
        "exported_by": f"tinymath {__version__} export",
    }
    return jsonable(card)
