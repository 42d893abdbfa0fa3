"""The run folder's own files beside its checkpoints: the tokenizer copied in (tokenizer.bin and
its SentencePiece .model), and metrics.jsonl read back on resume."""

from __future__ import annotations

import json
from pathlib import Path

from tinymath import fileio


def _tokenizer_files(path: Path) -> tuple[Path, Path | None]:
    """(tokenizer.bin, tokenizer.model or None) for a given .bin or .model path."""
    if path.suffix == ".model":
        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise FileNotFoundError(f"tokenizer {path}: no tokenizer.bin beside it (tinymath tokenizer writes both)")
        return bin_path, path
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer not found: {path}")
    model = path.with_suffix(".model")
    return path, model if model.is_file() else None


def copy_tokenizer(src: Path, run_dir: Path) -> None:
    bin_path, model_path = _tokenizer_files(src)
    for s, name in ((bin_path, "tokenizer.bin"), (model_path, "tokenizer.model")):
        if s is None:
            continue
        dst = run_dir / name
        if dst.exists() and dst.resolve() == s.resolve():
            continue
        fileio.write_bytes(dst, s.read_bytes())  # atomic, as every file the project writes


def ckpt_tokenizer(ckpt: dict, ckpt_path: Path) -> Path:
    """The tokenizer.bin a checkpoint names, or the one beside it if the run folder moved."""
    from tinymath.export.card import locate

    found = locate(ckpt.get("tokenizer"), ckpt_path.parent) or locate("tokenizer.bin", ckpt_path.parent)
    if found is None:
        raise FileNotFoundError(f"checkpoint {ckpt_path}: its tokenizer {ckpt.get('tokenizer')} is missing "
                                f"(and no tokenizer.bin beside it)")
    return found


def read_metrics(path: Path, upto_step: int) -> list[str]:
    if not path.is_file():
        return []
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn last line from a crash
        # an end-of-run record ("event": "final") is logged again when the resumed run ends: a run
        # killed after logging it but before exiting would otherwise end up with two
        if "event" not in record and record.get("step", 0) <= upto_step:
            keep.append(line)
    return keep
