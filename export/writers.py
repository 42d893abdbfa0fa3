"""Writers: an ExportModel to a llama2.c .bin (v0, v1, v2) or a Hugging Face folder.

Everything is checked before the first byte is written (format, group size,
rope/eps against the format, output directory); each file is written
atomically, and each .bin gets its model card beside it. No torch here: the
checkpoint is read by checkpoint.py.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tinymath.fileio import atomic_file, write_json

from .card import build_card, card_path, locate
from .layout import (LLAMA2C_NORM_EPS, LLAMA2C_ROPE_THETA, BinConfig, ExportError, check_group_size, check_parent,
                     default_group_size, freq_shape, matrix_names, norm_names, pack_header, tensor_bytes,
                     uses_extension, v0_names)
from .quant import QuantError, quant_error, quantize
from .source import ExportModel

FORMATS = ("v0", "v1", "v2", "hf")
VERSIONS = {"v0": 0, "v1": 1, "v2": 2}


class ExportWarning(UserWarning):
    """Something the export did that a user of other tools should know about."""


@dataclass
class ExportResult:
    format: str
    path: Path  # the .bin, or the HF folder
    sha256: str | None  # of the .bin (None for hf)
    bytes: int | None
    group_size: int | None
    card_path: Path
    card: dict = field(repr=False)
    quant_errors: list[QuantError] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)


class _HashingWriter:
    def __init__(self, f: BinaryIO):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> None:
        self.f.write(b)
        self.h.update(b)
        self.n += len(b)


def _f32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def rope_freq_tables(cfg: BinConfig) -> tuple[np.ndarray, np.ndarray]:
    """Version 0's freq_cis_real/imag: cos and sin of pos * theta^(-2i/head_size), float32."""
    hs = cfg.head_size
    freqs = (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, hs, 2, dtype=np.float32) / np.float32(hs))))
    angles = np.outer(np.arange(cfg.max_seq_len, dtype=np.float32), freqs.astype(np.float32)).astype(np.float32)
    assert angles.shape == freq_shape(cfg)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def extension_warning(cfg: BinConfig) -> str | None:
    if not uses_extension(cfg.rope_theta, cfg.norm_eps):
        return None
    return (f"rope_theta={cfg.rope_theta:g} / norm_eps={cfg.norm_eps:g} differ from llama2.c's hard-coded "
            f"{LLAMA2C_ROPE_THETA:g} / {LLAMA2C_NORM_EPS:g}: they are stored in the TMx1 header extension "
            f"(bytes 240-251), which TinyMath's runc reads and llama2.c's runners ignore "
            f"(they would run this model with the wrong values)")


def plan(model: ExportModel, fmt: str, group_size: int | None = None) -> BinConfig:
    """The header config a .bin export would write; raises ExportError if it cannot be written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    cfg = model.config
    if fmt == "v0" and uses_extension(cfg.rope_theta, cfg.norm_eps):
        raise ExportError(
            f"version 0 cannot carry rope_theta={cfg.rope_theta:g} / norm_eps={cfg.norm_eps:g} "
            f"(llama2.c's run.c hard-codes {LLAMA2C_ROPE_THETA:g} / {LLAMA2C_NORM_EPS:g} and its 28-byte "
            f"header has no room): export v1 or v2, whose TMx1 header extension holds them")
    if group_size is not None and fmt != "v2":
        raise ExportError(f"a group size applies only to v2 (int8), not {fmt}")
    if fmt == "v2":
        gs = check_group_size(cfg, group_size) if group_size is not None else default_group_size(cfg)
        return cfg.with_(version=2, group_size=gs, extension=uses_extension(cfg.rope_theta, cfg.norm_eps))
    return cfg.with_(version=VERSIONS.get(fmt, 1), group_size=None,
                     extension=fmt != "v0" and uses_extension(cfg.rope_theta, cfg.norm_eps))


def write_bin_stream(w, model: ExportModel, hdr: BinConfig) -> list[QuantError]:
    """Write header and tensors of `model` in the layout of hdr.version to `w` (has .write)."""
    t = model.tensors
    w.write(pack_header(hdr, hdr.version))
    errors: list[QuantError] = []
    if hdr.version == 0:
        cos, sin = rope_freq_tables(hdr)
        extra = {"freq_cis_real": cos, "freq_cis_imag": sin}
        for name in v0_names(hdr.n_layers, hdr.shared_classifier):
            w.write(_f32(extra[name] if name in extra else t[name]))
    elif hdr.version == 1:
        for name in norm_names(hdr.n_layers) + matrix_names(hdr.n_layers, hdr.shared_classifier):
            w.write(_f32(t[name]))
    else:
        gs = hdr.group_size
        assert gs
        for name in norm_names(hdr.n_layers):
            w.write(_f32(t[name]))
        for name in matrix_names(hdr.n_layers, hdr.shared_classifier):
            qt = quantize(t[name], gs)
            w.write(qt.q.tobytes())
            w.write(_f32(qt.s))
            errors.append(quant_error(name, t[name], qt))
    return errors


def encode_bin(model: ExportModel, fmt: str, group_size: int | None = None) -> bytes:
    """The bytes of a .bin export, in memory (for tests and small models)."""
    import io

    hdr = plan(model, fmt, group_size)
    if fmt == "hf":
        raise ExportError("hf is a folder, not a .bin")
    buf = io.BytesIO()
    write_bin_stream(buf, model, hdr)
    return buf.getvalue()


def quant_summary(errors: list[QuantError], gs: int) -> dict:
    return {
        "scheme": "Q8_0: symmetric int8 in [-127, 127], one float32 scale (max|w|/127) per group; norms fp32",
        "group_size": gs,
        "max_abs_error": max((e.max_abs for e in errors), default=0.0),
        "mean_abs_error": (sum(e.mean_abs * np.prod(e.shape) for e in errors)
                           / max(1, sum(int(np.prod(e.shape)) for e in errors))),
        "worst_tensor": max(errors, key=lambda e: e.max_abs).name if errors else None,
    }


def export_model(model: ExportModel, fmt: str, out: str | os.PathLike, *, group_size: int | None = None,
                 tokenizer: str | os.PathLike | None = None) -> ExportResult:
    """Write `model` as fmt ("v0", "v1", "v2", "hf") to `out`, with its model card.

    For a .bin the card is `out` with suffix .json; for hf it is
    out/tinymath_card.json. `tokenizer` overrides the checkpoint's tokenizer path
    (recorded in the card; for hf the SentencePiece .model copied into the folder).
    """
    hdr = plan(model, fmt, group_size)
    out = check_parent(out)
    notes: list[str] = []
    msg = extension_warning(model.config)
    if msg and fmt in ("v1", "v2"):
        notes.append(msg)
    if fmt == "hf":
        return _export_hf(model, out, tokenizer, notes)
    if out.suffix.lower() == ".json":
        raise ExportError(f"output {out} ends in .json, the name of its model card; use e.g. {out.with_suffix('.bin')}")
    if out.exists() and out.is_dir():
        raise ExportError(f"output path is a directory: {out}")
    for m in notes:
        warnings.warn(m, ExportWarning, stacklevel=2)
    with atomic_file(out) as f:
        hw = _HashingWriter(f)
        errors = write_bin_stream(hw, model, hdr)
    expected = (256 if hdr.version else 28) + tensor_bytes(hdr.version, hdr)
    assert hw.n == expected, (hw.n, expected)
    quant = quant_summary(errors, hdr.group_size) if fmt == "v2" else None
    card = build_card(model, fmt=fmt, file=out, sha256=hw.h.hexdigest(), size=hw.n, group_size=hdr.group_size,
                      quantization=quant, tokenizer=tokenizer, warnings=notes)
    cpath = card_path(out)
    write_json(cpath, card)
    return ExportResult(format=fmt, path=out, sha256=card["sha256"], bytes=hw.n, group_size=hdr.group_size,
                        card_path=cpath, card=card, quant_errors=errors, warnings=notes)


def hf_tokenizer_model(model: ExportModel, tokenizer: str | os.PathLike | None) -> Path | None:
    """The SentencePiece .model an HF export copies: --tokenizer if given, else the checkpoint's
    tokenizer_model, else its tokenizer if that is a .model (or a tokenizer.bin with a .model beside it).
    None when nothing is named; ExportError when something named is missing."""
    src = (model.meta.get("source") or {}).get("checkpoint")
    if tokenizer is not None:
        candidates = [("--tokenizer", tokenizer)]
    else:
        candidates = [(f"the checkpoint's {k}", model.meta.get(k)) for k in ("tokenizer_model", "tokenizer")]
        candidates = [(w, n) for w, n in candidates if n]
    for who, name in candidates:
        path = locate(name, Path(src).parent if src else None)
        if path is None:
            raise ExportError(f"tokenizer {name} not found (named by {who}); "
                              f"pass --tokenizer PATH to the SentencePiece .model")
        if path.suffix == ".model":
            return path
        if path.with_suffix(".model").is_file():
            return path.with_suffix(".model")
        if who == "--tokenizer":
            raise ExportError(f"tokenizer {path} is not a SentencePiece .model (HF needs that one)")
    return None


def _export_hf(model: ExportModel, out: Path, tokenizer, notes: list[str]) -> ExportResult:
    from .hf import check_hf_ready, write_hf

    check_hf_ready()
    tok_path = hf_tokenizer_model(model, tokenizer)
    card = build_card(model, fmt="hf", file=out, sha256=None, size=None, tokenizer=tokenizer, warnings=[])
    write_hf(model, out, tok_path, card)
    return ExportResult(format="hf", path=out, sha256=None, bytes=None, group_size=None,
                        card_path=out / "tinymath_card.json", card=card, warnings=[])


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
                      group_size: int | None = None, tokenizer: str | os.PathLike | None = None) -> ExportResult:
    """Load a training checkpoint (needs torch) and export it; see export_model."""
    if fmt not in FORMATS:  # fail before the (slow) torch import
        raise ExportError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    check_parent(out)
    from .checkpoint import read_checkpoint

    return export_model(read_checkpoint(checkpoint), fmt, out, group_size=group_size, tokenizer=tokenizer)
