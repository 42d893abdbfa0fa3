"""What every writer exports: a checked model config and float32 numpy weights, plus metadata.

`from_state_dict` is where a checkpoint's weights are held against its config:
every expected tensor present, none unexpected, every shape right, all values
finite, a tied classifier really equal to the embedding. No torch here; the
checkpoint loader (checkpoint.py) converts torch tensors first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .layout import BinConfig, ExportError, tensor_shapes

# the fields of tinymath.train.model.ModelConfig
CONFIG_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "max_seq_len",
                 "norm_eps", "rope_theta", "tied")
# prefixes torch adds to parameter names: torch.compile, DistributedDataParallel
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


@dataclass
class ExportModel:
    """A model ready to write: config, float32 tensors by parameter name, card metadata."""

    config: BinConfig
    tensors: dict[str, np.ndarray] = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_config(self) -> dict:
        return self.config.model_config()

    @property
    def n_params(self) -> int:
        return sum(int(t.size) for t in self.tensors.values())


def bin_config_from_model_config(mc: Mapping[str, Any]) -> BinConfig:
    """ModelConfig fields (a dict) -> BinConfig, checked. Raises ExportError."""
    missing = [k for k in CONFIG_FIELDS if k not in mc]
    if missing:
        raise ExportError(f"model config lacks {missing}")
    unknown = sorted(set(mc) - set(CONFIG_FIELDS))
    if unknown:
        raise ExportError(f"model config has unknown fields {unknown}")
    for k in ("norm_eps", "rope_theta"):
        if isinstance(mc[k], bool) or not isinstance(mc[k], (int, float)):
            raise ExportError(f"model config: {k} must be a number, got {mc[k]!r}")
    if not isinstance(mc["tied"], bool):
        raise ExportError(f"model config: tied must be true or false, got {mc['tied']!r}")
    cfg = BinConfig(dim=mc["dim"], hidden_dim=mc["hidden_dim"], n_layers=mc["n_layers"], n_heads=mc["n_heads"],
                    n_kv_heads=mc["n_kv_heads"], vocab_size=mc["vocab_size"], max_seq_len=mc["max_seq_len"],
                    shared_classifier=mc["tied"], rope_theta=float(mc["rope_theta"]),
                    norm_eps=float(mc["norm_eps"]))
    try:
        cfg.check()
    except ExportError as e:
        raise ExportError(f"model config: {e}") from None
    return cfg


def _strip_prefix(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name


def from_state_dict(model_config: Mapping[str, Any], state_dict: Mapping[str, Any],
                    meta: Mapping[str, Any] | None = None, what: str = "checkpoint") -> ExportModel:
    """Check `state_dict` (name -> array-like) against `model_config`; return an ExportModel.

    Raises ExportError naming every missing or unexpected tensor, the first wrong
    shape, non-finite values, or a 'tied' classifier that differs from the embedding.
    """
    cfg = bin_config_from_model_config(model_config)
    sd: dict[str, np.ndarray] = {}
    for name, value in state_dict.items():
        key = _strip_prefix(str(name))
        if key in sd:
            raise ExportError(f"{what}: tensor {key} appears twice (as {name!r} too)")
        sd[key] = value
    expected = tensor_shapes(cfg)
    optional = {"output.weight"} if cfg.shared_classifier else set()
    missing = [n for n in expected if n not in sd]
    unexpected = [n for n in sd if n not in expected and n not in optional]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected}")
        raise ExportError(f"{what} does not match its model config ({_describe(cfg)}): " + "; ".join(parts))
    tensors: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        a = np.asarray(sd[name])
        if tuple(a.shape) != shape:
            raise ExportError(f"{what}: tensor {name} has shape {tuple(a.shape)}, the config implies {shape}")
        if not (np.issubdtype(a.dtype, np.floating)):
            raise ExportError(f"{what}: tensor {name} has dtype {a.dtype}, expected floating point")
        a = np.ascontiguousarray(a, dtype=np.float32)
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise ExportError(f"{what}: tensor {name} has {bad} non-finite values (NaN or inf)")
        tensors[name] = a
    if cfg.shared_classifier and "output.weight" in sd:
        out = np.asarray(sd["output.weight"])
        if tuple(out.shape) != expected["tok_embeddings.weight"] or not np.array_equal(
                out.astype(np.float32), tensors["tok_embeddings.weight"]):
            raise ExportError(f"{what}: the config says tied, but output.weight differs from tok_embeddings.weight")
    return ExportModel(config=cfg, tensors=tensors, meta=dict(meta or {}))


def _describe(cfg: BinConfig) -> str:
    return (f"dim={cfg.dim} n_layers={cfg.n_layers} n_heads={cfg.n_heads} n_kv_heads={cfg.n_kv_heads} "
            f"hidden_dim={cfg.hidden_dim} vocab_size={cfg.vocab_size} tied={cfg.shared_classifier}")


def from_bin_model(bm, path: str | None = None) -> ExportModel:
    """An ExportModel from a read .bin (versions 0 and 1: float32, so nothing is lost).

    Converting a version 2 file would write dequantized weights as if they were
    the originals, so it is refused.
    """
    if bm.config.version == 2:
        raise ExportError("cannot re-export a version 2 (int8) file: its float32 weights are gone; "
                          "export from the checkpoint or the fp32 .bin instead")
    cfg = bm.config.with_(version=1, group_size=None, extension=False)
    tensors = {n: t for n, t in bm.tensors.items() if not n.startswith("freq_cis_")}
    what = f"model file {path}" if path else "model file"
    for name, t in tensors.items():  # the checks every export path makes (from_state_dict's)
        bad = int(t.size - np.count_nonzero(np.isfinite(t)))
        if bad:
            raise ExportError(f"{what}: tensor {name} has {bad} non-finite values (NaN or inf)")
    return ExportModel(config=cfg, tensors=tensors, meta={"source": {"bin": path, "version": bm.config.version}})
