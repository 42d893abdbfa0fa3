"""Read llama2.c .bin files (versions 0, 1, 2) with numpy alone: no torch import.

    m = read_bin("model.bin")                   # v2 tensors stay QTensor (int8 + scales)
    m = read_bin("model.bin", dequantize=True)  # v2 tensors as float32 arrays
    m.config        # BinConfig: dims, version, shared_classifier, group_size, rope_theta, norm_eps
    m.tensors       # {"tok_embeddings.weight": array (vocab, dim), "layers.0.attention.wq.weight": ..., ...}
    m.state_dict()  # float32 arrays by llama2.c/TinyMath parameter name, output.weight included when tied

Tensors are named by llama2.c's model.py parameter names (see layout.py for the
mapping to run.c's struct fields); version 0 also yields "freq_cis_real" and
"freq_cis_imag". Every header field is checked, and the file must be exactly as
long as its header implies.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from .layout import (BinConfig, ExportError, freq_shape, matrix_names, norm_names, tensor_bytes,
                     tensor_shapes, unpack_header, v0_names)
from .quant import QTensor

__all__ = ["BinModel", "QTensor", "read_bin", "read_header"]


@dataclass
class BinModel:
    config: BinConfig
    tensors: dict[str, np.ndarray | QTensor] = field(repr=False)
    path: str | None = None

    @property
    def version(self) -> int:
        return self.config.version

    def state_dict(self) -> dict[str, np.ndarray]:
        """float32 weights by parameter name (v2 dequantized), output.weight aliased when shared.

        Loadable into tinymath.train.model.Transformer (after torch.from_numpy)
        with ModelConfig.from_dict(model.config.model_config()).
        """
        out = {}
        for name, t in self.tensors.items():
            if name.startswith("freq_cis_"):
                continue
            out[name] = t.dequantize() if isinstance(t, QTensor) else t
        if self.config.shared_classifier:
            out["output.weight"] = out["tok_embeddings.weight"]
        return out


def read_header(path: str | os.PathLike) -> BinConfig:
    """The header of a .bin file, checked."""
    with open(path, "rb") as f:
        head = f.read(256)
    cfg, _ = unpack_header(head)
    _check_config(cfg)
    return cfg


def _check_config(cfg: BinConfig) -> None:
    try:
        cfg.check()
    except ExportError as e:
        raise ExportError(f"bad header: {e}") from None


def read_bin(path: str | os.PathLike, dequantize: bool = False) -> BinModel:
    """Read a whole llama2.c .bin file; raise ExportError on any inconsistency."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ExportError(f"no such file: {path}") from None
    try:
        return _parse(data, dequantize, path)
    except ExportError as e:
        raise ExportError(f"{path}: {e}") from None


def _parse(data: bytes, dequantize: bool, path: str | None) -> BinModel:
    cfg, off = unpack_header(data)
    _check_config(cfg)
    if cfg.version == 2:
        gs = cfg.group_size
        assert gs is not None
        for name, shape in tensor_shapes(cfg).items():
            if len(shape) == 2 and math.prod(shape) % gs:
                raise ExportError(f"group size {gs} does not divide the {math.prod(shape)} values of {name}")
    expected = off + tensor_bytes(cfg.version, cfg)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ExportError(f"file {what}: {len(data)} bytes, header implies {expected} (version {cfg.version})")

    shapes = tensor_shapes(cfg)
    tensors: dict[str, np.ndarray | QTensor] = {}

    def take_f32(shape: tuple[int, ...]) -> np.ndarray:
        nonlocal off
        n = math.prod(shape)
        a = np.frombuffer(data, dtype="<f4", count=n, offset=off).astype(np.float32).reshape(shape)
        off += 4 * n
        return a

    if cfg.version == 0:
        for name in v0_names(cfg.n_layers, cfg.shared_classifier):
            tensors[name] = take_f32(freq_shape(cfg) if name.startswith("freq_cis_") else shapes[name])
    elif cfg.version == 1:
        for name in norm_names(cfg.n_layers) + matrix_names(cfg.n_layers, cfg.shared_classifier):
            tensors[name] = take_f32(shapes[name])
    else:
        for name in norm_names(cfg.n_layers):
            tensors[name] = take_f32(shapes[name])
        gs = cfg.group_size
        for name in matrix_names(cfg.n_layers, cfg.shared_classifier):
            shape = shapes[name]
            n = math.prod(shape)
            q = np.frombuffer(data, dtype=np.int8, count=n, offset=off).copy().reshape(shape)
            off += n
            s = take_f32((n // gs,))
            qt = QTensor(q=q, s=s, group_size=gs)
            tensors[name] = qt.dequantize() if dequantize else qt
    assert off == len(data)
    # present tensors in the model's natural order, whatever the file order
    order = list(shapes) + [n for n in tensors if n not in shapes]
    return BinModel(config=cfg, tensors={n: tensors[n] for n in order}, path=path)


def parse_bin(data: bytes, dequantize: bool = False) -> BinModel:
    """read_bin for bytes already in memory."""
    return _parse(bytes(data), dequantize, None)
