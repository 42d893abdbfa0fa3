"""Read a Hugging Face Llama folder back into an ExportModel, so it can be written as a llama2.c .bin.

The folder is what `tinymath export --format hf` writes and what llama2.c's export.py
reads (`--hf`): config.json with model_type "llama" (LlamaForCausalLM), and the weights
as model.safetensors, sharded safetensors (model.safetensors.index.json), or
pytorch_model.bin (sharded or not; reading those needs torch).

Safetensors are read here with numpy (float32, float16, bfloat16, float64), so an
import of a safetensors folder needs neither torch nor the safetensors package.

q_proj and k_proj rows are put back from HF's rotate-half layout into llama2.c's
interleaved channel pairs (hf.rotary_from_hf, the inverse of the HF export's
permutation); every other tensor is renamed only. A Llama variant that the .bin
formats cannot hold (biases, scaled RoPE, another activation, a head_dim other
than hidden_size / num_attention_heads) is refused with the reason.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .card import locate
from .layout import ExportError
from .source import ExportModel, from_state_dict

CONFIG = "config.json"
_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}


def is_hf_folder(path: str | os.PathLike) -> bool:
    """A folder with a config.json: what `tinymath export` reads as a Hugging Face model."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file()


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{what} {path} is not readable JSON ({e})") from None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every floating-point tensor of a .safetensors file, as float32 numpy arrays."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ExportError(f"{path}: not a safetensors file (only {len(head)} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ExportError(f"{path}: not a safetensors file (header length {n} past the end)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ExportError(f"{path}: not a safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise ExportError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n else np.zeros(0, np.uint8)
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(s) for s in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ExportError(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from None
        if dtype not in _ST_DTYPES:
            raise ExportError(f"{path}: tensor {name} has dtype {dtype}; a llama2.c .bin is made from "
                              f"float weights ({', '.join(_ST_DTYPES)})")
        dt = np.dtype(_ST_DTYPES[dtype])
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end <= len(data) or end - begin != count * dt.itemsize:
            raise ExportError(f"{path}: tensor {name} has data offsets {begin}-{end}, which do not fit "
                              f"its shape {shape} and the file")
        a = np.frombuffer(data[begin:end], dtype=dt, count=count).reshape(shape)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = np.array(a, dtype=np.float32, order="C", copy=True)  # not a view of the mapped file
    return out


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ExportError(f"{path} is a PyTorch file: reading it needs torch (pip install torch), "
                          f"or save the folder as safetensors") from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise ExportError(f"{path}: not a loadable PyTorch state dict ({e})") from None
    if not isinstance(sd, dict):
        raise ExportError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return {k: v.detach().float().numpy() for k, v in sd.items()
            if hasattr(v, "is_floating_point") and v.is_floating_point()}


def read_weights(folder: Path) -> dict[str, np.ndarray]:
    """The folder's weights by HF name: safetensors (one file or shards) first, else pytorch_model.bin."""
    for index, single, reader in (("model.safetensors.index.json", "model.safetensors", read_safetensors),
                                  ("pytorch_model.bin.index.json", "pytorch_model.bin", _read_torch)):
        if (folder / single).is_file():
            return reader(folder / single)
        if (folder / index).is_file():
            wm = _read_json(folder / index, "weight index")
            wm = wm.get("weight_map") if isinstance(wm, dict) else None
            if not isinstance(wm, dict):
                raise ExportError(f"{folder / index}: no weight_map")
            out: dict[str, np.ndarray] = {}
            for shard in sorted(set(wm.values())):
                if not (folder / shard).is_file():
                    raise ExportError(f"{folder / index} names the shard {shard}, which is missing")
                out.update(reader(folder / shard))
            return out
    raise ExportError(f"{folder}: no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)")


def _rope_theta(cfg: dict) -> float:
    rp = cfg.get("rope_parameters")
    rs = cfg.get("rope_scaling")
    for scaling in (rp, rs):
        if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type", "default")) != "default":
            raise ExportError(f"rope type {scaling.get('rope_type', scaling.get('type'))!r}: the llama2.c "
                              f"runners apply plain RoPE only")
    if isinstance(rp, dict) and "rope_theta" in rp:
        return float(rp["rope_theta"])
    return float(cfg.get("rope_theta", 10000.0))


def hf_model_config(cfg: Any, where: str) -> dict:
    """config.json -> our ModelConfig fields (tied is settled later, from the weights)."""
    if not isinstance(cfg, dict):
        raise ExportError(f"{where}: config.json is not a JSON object")
    arch = cfg.get("architectures") or []
    if cfg.get("model_type") != "llama" and "LlamaForCausalLM" not in arch:
        raise ExportError(f"{where} is not a Llama model (model_type {cfg.get('model_type')!r}, architectures "
                          f"{arch}): a llama2.c .bin holds LlamaForCausalLM weights only")
    try:
        dim, n_heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        mc = {"dim": dim, "n_layers": int(cfg["num_hidden_layers"]), "n_heads": n_heads,
              "n_kv_heads": int(cfg.get("num_key_value_heads") or n_heads),
              "hidden_dim": int(cfg["intermediate_size"]), "vocab_size": int(cfg["vocab_size"]),
              "max_seq_len": int(cfg.get("max_position_embeddings") or 2048),
              "norm_eps": float(cfg.get("rms_norm_eps", 1e-6)), "rope_theta": _rope_theta(cfg)}
    except KeyError as e:
        raise ExportError(f"{where}: config.json lacks {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ExportError(f"{where}: config.json has a value of the wrong type ({e})") from None
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ExportError(f"{where}: hidden_act {act!r}; the llama2.c runners use SiLU (SwiGLU)")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ExportError(f"{where}: {key} is true; the llama2.c formats have no bias tensors")
    hd = cfg.get("head_dim")
    if hd is not None and n_heads and int(hd) * n_heads != dim:
        raise ExportError(f"{where}: head_dim {hd} x {n_heads} heads != hidden_size {dim}; the llama2.c "
                          f"runners take the head size as hidden_size / num_attention_heads")
    return mc


def _card_meta(folder: Path) -> dict:
    """What the folder's tinymath_card.json knows (task, seed, accuracy, tokenizer), for the new card."""
    p = folder / "tinymath_card.json"
    card = None
    if p.is_file():
        try:
            card = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            card = None
    meta: dict[str, Any] = {}
    if isinstance(card, dict):
        meta["train_config"] = {"task": card.get("task"), "seed": card.get("seed")}
        for key in ("step", "tokens_seen", "metrics", "accuracy"):
            if card.get(key) is not None:
                meta[key] = card[key]
    tok = card.get("tokenizer") if isinstance(card, dict) else None
    tok = tok if isinstance(tok, dict) else {}
    named = (tok.get("bin") or {}).get("path") if isinstance(tok.get("bin"), dict) else None
    found = locate(named, folder) if named else None
    if found is not None:
        meta["tokenizer"] = os.fspath(found.resolve())
    sp = folder / "tokenizer.model"
    if sp.is_file():
        meta["tokenizer_model"] = os.fspath(sp.resolve())
        meta.setdefault("tokenizer", meta["tokenizer_model"])
    return meta


def read_hf_folder(folder: str | os.PathLike) -> ExportModel:
    """A Hugging Face Llama folder as an ExportModel (checked like every other source)."""
    from .hf import rotary_from_hf

    folder = Path(folder)
    where = f"Hugging Face folder {folder}"
    if not (folder / CONFIG).is_file():
        raise ExportError(f"{folder} has no config.json: not a Hugging Face model folder")
    mc = hf_model_config(_read_json(folder / CONFIG, "config"), where)
    w = read_weights(folder)
    w = {k: v for k, v in w.items() if not k.endswith("rotary_emb.inv_freq")}  # a buffer older exports saved
    sd: dict[str, np.ndarray] = {}
    rename = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
              "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm.weight": "attention_norm.weight", "self_attn.q_proj.weight": "attention.wq.weight",
                 "self_attn.k_proj.weight": "attention.wk.weight", "self_attn.v_proj.weight": "attention.wv.weight",
                 "self_attn.o_proj.weight": "attention.wo.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
                 "mlp.gate_proj.weight": "feed_forward.w1.weight", "mlp.down_proj.weight": "feed_forward.w2.weight",
                 "mlp.up_proj.weight": "feed_forward.w3.weight"}
    for name, a in w.items():
        new = rename.get(name)
        if new is None and name.startswith("model.layers."):
            i, _, rest = name[len("model.layers."):].partition(".")
            if i.isdigit() and rest in per_layer:
                new = f"layers.{int(i)}.{per_layer[rest]}"
        sd[new or name] = a  # an unknown name stays, and from_state_dict names it as unexpected
    for i in range(mc["n_layers"]):
        for key, heads in (("attention.wq.weight", mc["n_heads"]), ("attention.wk.weight", mc["n_kv_heads"])):
            a = sd.get(f"layers.{i}.{key}")
            if a is not None and a.ndim == 2 and heads and a.shape[0] % heads == 0 and (a.shape[0] // heads) % 2 == 0:
                sd[f"layers.{i}.{key}"] = rotary_from_hf(a, heads)
    cfg = _read_json(folder / CONFIG, "config")
    emb, out = sd.get("tok_embeddings.weight"), sd.get("output.weight")
    # transformers ties lm_head to the embedding when tie_word_embeddings is true (its own default
    # is false for Llama); a folder without lm_head.weight can only be a tied one
    tied = bool(cfg.get("tie_word_embeddings", False)) or out is None
    if tied and out is not None and emb is not None:
        if out.shape != emb.shape or not np.array_equal(out, emb):
            raise ExportError(f"{where}: tie_word_embeddings is true, but lm_head.weight differs from "
                              f"model.embed_tokens.weight")
        del sd["output.weight"]
    mc["tied"] = tied
    meta = _card_meta(folder)
    meta["source"] = {"hf": os.fspath(folder)}
    return from_state_dict(mc, sd, meta, what=where)
