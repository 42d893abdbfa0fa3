"""Q8_0 quantization in numpy: symmetric int8 groups with one float32 scale each.

A tensor is flattened row-major and cut into groups of GS values. Each group
gets scale = max|w| / 127 and values q = round(w / scale) in [-127, 127]
(round half to even, as torch.round in llama2.c's export.py); the weight is read
back as q * scale. Rounding to the nearest integer bounds the error of every
value by scale/2, up to float32 rounding. A group of zeros gets scale 0 and
q = 0 (llama2.c's export would divide by zero there). No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Q_MAX = 127.0


@dataclass
class QTensor:
    """A Q8_0 tensor: int8 values in the tensor's shape, one float32 scale per group."""

    q: np.ndarray  # int8, the tensor's shape
    s: np.ndarray  # float32, (numel / group_size,)
    group_size: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.q.shape)

    def dequantize(self) -> np.ndarray:
        """float32 values, computed as the C runners do: q[i] * s[i / GS] in float."""
        flat = self.q.reshape(-1, self.group_size).astype(np.float32) * self.s[:, None]
        return flat.reshape(self.q.shape)


def quantize(w: np.ndarray, group_size: int) -> QTensor:
    """Quantize `w` (any shape, numel divisible by group_size) to Q8_0."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if w.size % group_size:
        raise ValueError(f"tensor of {w.size} values does not split into groups of {group_size}")
    g = w.reshape(-1, group_size)
    scale = (np.abs(g).max(axis=1) / np.float32(Q_MAX)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(g / safe[:, None]), -Q_MAX, Q_MAX).astype(np.int8)
    return QTensor(q=q.reshape(w.shape), s=scale, group_size=group_size)


@dataclass
class QuantError:
    """The error of one quantized tensor against the float32 tensor it came from."""

    name: str
    shape: tuple[int, ...]
    group_size: int
    max_abs: float  # max |w - dequant(q)|
    mean_abs: float  # mean |w - dequant(q)|
    max_rel_bound: float  # max over values of |err| / (scale/2): <= 1 (float32 rounding aside)
    max_weight: float  # max |w|, for scale

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "group_size": self.group_size,
                "max_abs_error": self.max_abs, "mean_abs_error": self.mean_abs,
                "max_error_over_half_scale": self.max_rel_bound, "max_abs_weight": self.max_weight}


def quant_error(name: str, w: np.ndarray, qt: QTensor) -> QuantError:
    """Compare float32 weights with their Q8_0 form; raise ValueError if the shapes differ."""
    w = np.asarray(w, dtype=np.float32)
    if tuple(w.shape) != qt.shape:
        raise ValueError(f"{name}: reference shape {tuple(w.shape)} != quantized shape {qt.shape}")
    err = np.abs(w - qt.dequantize()).reshape(-1, qt.group_size)
    half = (qt.s / 2).astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(half > 0, err / half, np.where(err > 0, np.inf, 0.0))
    return QuantError(name=name, shape=qt.shape, group_size=qt.group_size, max_abs=float(err.max(initial=0.0)),
                      mean_abs=float(err.mean()) if err.size else 0.0, max_rel_bound=float(rel.max(initial=0.0)),
                      max_weight=float(np.abs(w).max(initial=0.0)))
