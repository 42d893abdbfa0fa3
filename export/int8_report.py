"""The int8 error report: per tensor, how far Q8_0 weights are from the float32 ones.

What is compared with what:

- a version 2 .bin against the float32 weights it came from: a v0/v1 .bin or a
  checkpoint given as `against`, else the checkpoint its model card names as
  source (if that file is still there). The .bin's int8 values and scales are
  dequantized exactly as the C runners do (q * scale, float32). The norms, stored
  as float32 in v2, must equal the reference's bit for bit; the report says so.
- a float32 model (v0/v1 .bin, or a checkpoint) alone: it is quantized here with
  the group size a v2 export would use (or the one given), and the report shows
  what that export would lose.

Every value's error must be at most half its group's scale (round to nearest);
`max err/(s/2)` above 1 (beyond float32 rounding) means the reference is not
the source of the file, and the report is marked as failed.
Reading .bin files needs numpy only; a checkpoint needs torch.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .card import ModelFiles, locate
from .layout import MAGIC, ExportError, check_group_size, default_group_size, norm_names, unpack_header
from .quant import QTensor, QuantError, quant_error, quantize
from .reader import read_bin

BOUND_TOLERANCE = 1e-3  # relative slack on |err| <= scale/2 for float32 rounding


@dataclass
class QuantReport:
    subject: str
    reference: str
    group_size: int
    rows: list[QuantError] = field(default_factory=list)
    fp32_max_diff: float | None = None  # norms of a v2 file against the reference; None when not compared

    @property
    def max_abs(self) -> float:
        return max((r.max_abs for r in self.rows), default=0.0)

    @property
    def mean_abs(self) -> float:
        n = sum(int(np.prod(r.shape)) for r in self.rows)
        return sum(r.mean_abs * int(np.prod(r.shape)) for r in self.rows) / max(n, 1)

    @property
    def within_bound(self) -> bool:
        return all(r.max_rel_bound <= 1 + BOUND_TOLERANCE for r in self.rows)

    @property
    def ok(self) -> bool:
        return self.within_bound and (self.fp32_max_diff in (None, 0.0))

    def to_dict(self) -> dict:
        return {"subject": self.subject, "reference": self.reference, "group_size": self.group_size,
                "max_abs_error": self.max_abs, "mean_abs_error": self.mean_abs,
                "within_q8_0_bound": self.within_bound, "fp32_tensors_max_diff": self.fp32_max_diff,
                "ok": self.ok, "tensors": [r.to_dict() for r in self.rows]}

    def format(self) -> str:
        w = max([len("tensor")] + [len(r.name) for r in self.rows])
        lines = [f"int8 (Q8_0, GS={self.group_size}) quantization error",
                 f"  quantized: {self.subject}", f"  reference: {self.reference}", "",
                 f"{'tensor':<{w}}  {'shape':>11}  {'max|w|':>10}  {'max|err|':>10}  {'mean|err|':>10}  "
                 f"{'max err/(s/2)':>13}"]
        for r in self.rows:
            shape = "x".join(map(str, r.shape))
            lines.append(f"{r.name:<{w}}  {shape:>11}  {r.max_weight:10.3e}  {r.max_abs:10.3e}  {r.mean_abs:10.3e}  "
                         f"{r.max_rel_bound:13.4f}")
        lines.append(f"{'all':<{w}}  {'':>11}  {'':>10}  {self.max_abs:10.3e}  {self.mean_abs:10.3e}  "
                     f"{max((r.max_rel_bound for r in self.rows), default=0.0):13.4f}")
        lines.append("")
        if self.fp32_max_diff is not None:
            lines.append("fp32 tensors (norms): " + ("identical to the reference" if self.fp32_max_diff == 0
                                                      else f"DIFFER from the reference (max |diff| {self.fp32_max_diff:.3e})"))
        lines.append("every value within scale/2 of its reference: " + ("yes" if self.within_bound else
                     "NO - the reference is probably not the weights this file was quantized from"))
        return "\n".join(lines)


def _is_bin(path: Path) -> bool:
    """A llama2.c .bin (by its header), as opposed to a torch checkpoint (a zip or pickle)."""
    with open(path, "rb") as f:
        head = f.read(256)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return False
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == MAGIC:
        return True  # a v1/v2 file, even with a bad header: read_bin then names what is wrong with it
    try:
        unpack_header(head)
    except ExportError:
        return False
    return True


def check_finite(tensors: dict, what: str) -> None:
    """ExportError naming the first tensor (or int8 scale) with a NaN or inf: no report on such a file."""
    for name, t in tensors.items():
        values = t.s if isinstance(t, QTensor) else np.asarray(t)
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            kind = "scales" if isinstance(t, QTensor) else "values"
            raise ExportError(f"{what}: tensor {name} has {bad} non-finite {kind} (NaN or inf)")


def load_fp32(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str, object]:
    """(float32 tensors by name, description, config) from a v0/v1 .bin or a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no such file: {path}")
    if _is_bin(path):
        bm = read_bin(path)
        if bm.version == 2:
            raise ExportError(f"{path} is version 2 (int8): not a float32 reference")
        t = {n: a for n, a in bm.tensors.items() if not n.startswith("freq_cis_")}
        check_finite(t, str(path))
        return t, f"{path} (v{bm.version}, fp32)", bm.config
    from .checkpoint import read_checkpoint  # torch

    m = read_checkpoint(path)
    return m.tensors, f"{path} (checkpoint, step {m.meta.get('step')})", m.config


def _same_shapes(a: dict, b: dict, what: str) -> None:
    for name, t in a.items():
        if name not in b:
            raise ExportError(f"{what}: reference has no tensor {name}")
        if tuple(np.shape(b[name])) != tuple(t.shape):
            raise ExportError(f"{what}: {name} is {tuple(t.shape)} here and {tuple(np.shape(b[name]))} "
                              f"in the reference")


def _card_source(path: Path) -> Path | None:
    try:
        files = ModelFiles.open(path)
    except (OSError, ValueError):
        return None
    src = files.card.get("source") or {}
    for key in ("checkpoint", "bin"):
        found = locate(src.get(key), path.parent) if isinstance(src, dict) else None
        if found is not None:
            return found
    return None


def compare_v2(v2_path: str | os.PathLike, reference: str | os.PathLike) -> QuantReport:
    bm = read_bin(v2_path)
    if bm.version != 2:
        raise ExportError(f"{v2_path} is version {bm.version}, not 2 (int8)")
    check_finite(bm.tensors, str(v2_path))
    ref, ref_desc, ref_cfg = load_fp32(reference)
    q = {n: t for n, t in bm.tensors.items() if isinstance(t, QTensor)}
    f = {n: t for n, t in bm.tensors.items() if not isinstance(t, QTensor)}
    _same_shapes(q, ref, f"{v2_path} vs {reference}")
    _same_shapes(f, ref, f"{v2_path} vs {reference}")
    rows = [quant_error(n, ref[n], t) for n, t in q.items()]
    diff = max((float(np.abs(f[n] - ref[n]).max(initial=0.0)) for n in norm_names(bm.config.n_layers)), default=0.0)
    return QuantReport(subject=f"{v2_path} (v2, {len(q)} int8 tensors)", reference=ref_desc,
                       group_size=bm.config.group_size, rows=rows, fp32_max_diff=diff)


def quantize_fp32(path: str | os.PathLike, group_size: int | None = None) -> QuantReport:
    tensors, desc, cfg = load_fp32(path)
    gs = check_group_size(cfg, group_size) if group_size is not None else default_group_size(cfg)
    norms = set(norm_names(cfg.n_layers))
    rows = [quant_error(n, t, quantize(t, gs)) for n, t in tensors.items() if n not in norms]
    return QuantReport(subject=f"Q8_0 of {desc} as a v2 export would write it", reference=desc, group_size=gs,
                       rows=rows)


def quant_report(path: str | os.PathLike, against: str | os.PathLike | None = None,
                 group_size: int | None = None) -> QuantReport:
    """The report for `path` (see the module docstring for which comparison is made)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no such file: {path}")
    if against is not None and not Path(against).is_file():
        raise ExportError(f"no such file: {against}")
    path_is_v2 = _is_bin(path) and read_bin_header_version(path) == 2
    against_is_v2 = against is not None and _is_bin(Path(against)) and read_bin_header_version(Path(against)) == 2
    if path_is_v2 or against_is_v2:
        if group_size is not None:
            raise ExportError("--group-size does not apply: the version 2 file fixes its group size")
        if path_is_v2 and against_is_v2:
            raise ExportError("both files are version 2 (int8); the reference must be float32 (v0/v1 or a checkpoint)")
        v2, ref = (path, against) if path_is_v2 else (Path(against), path)
        if ref is None:
            ref = _card_source(v2)
            if ref is None:
                raise ExportError(f"{v2} is int8: say which float32 weights it came from with --against "
                                  f"(a v0/v1 .bin or the checkpoint); its model card names none that exists")
        return compare_v2(v2, ref)
    if against is not None:
        raise ExportError("with a float32 input, --against must be a version 2 .bin")
    return quantize_fp32(path, group_size)


def read_bin_header_version(path: Path) -> int:
    with open(path, "rb") as f:
        return unpack_header(f.read(256))[0].version
