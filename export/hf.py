"""Hugging Face export: a folder transformers.LlamaForCausalLM.from_pretrained loads as-is.

Files: config.json, model.safetensors (float32), and when a SentencePiece model
is known, tokenizer.model, tokenizer.json and tokenizer_config.json; plus
tinymath_card.json (the model card, which transformers ignores).

tokenizer.json is the `tokenizers` library's form of the same tokenizer, built here
from the SentencePiece pieces and scores (no protobuf, no transformers converter), so
AutoTokenizer loads the folder without sentencepiece or protobuf. It encodes as the C
runner and tinymath.tokenizer do (llama2.c's algorithm): a dummy-prefix "▁", one piece
per character, then merges of adjacent pieces by the merged piece's score (a BPE model
whose merges are every split of every piece, ranked by score; a character model has
none), byte fallback when the model has byte pieces, BOS first. Its decoder keeps every
space, the dummy prefix's included: decoding the generated tokens alone gives " 106.00",
so text-generation pipelines that decode only the new tokens (transformers 5) keep the
answer's leading space, and decode(prompt) + decode(answer) == decode(both). The config
names PreTrainedTokenizerFast, which takes tokenizer.json as it is (LlamaTokenizer
would rebuild its own pipeline, whose decoder strips that space).

Rotary convention. llama2.c (and TinyMath) rotate channel pairs (0,1), (2,3), ...
of each head; HF's rotate-half pairs channel i with i + head_size/2. The same
attention results if each head's rows of wq and wk are reordered so that the
pair members (2j, 2j+1) land at (j, j + head_size/2): per head, rows
[0,2,4,...,1,3,5,...]. q uses n_heads heads, k uses n_kv_heads heads (GQA);
wv, wo and the rest are unchanged, because the attention output per head is
the same once q and k are consistently permuted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from tinymath.fileio import atomic_dir, atomic_file, write_json

from .layout import ExportError


def rotary_to_hf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of wq/wk from llama2.c's interleaved pairs to HF's rotate-half halves."""
    rows, cols = w.shape
    hs = rows // n_heads
    return w.reshape(n_heads, hs // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def rotary_from_hf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of rotary_to_hf."""
    rows, cols = w.shape
    hs = rows // n_heads
    return w.reshape(n_heads, 2, hs // 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def hf_state_dict(model) -> dict[str, np.ndarray]:
    """HF LlamaForCausalLM names and layouts for an ExportModel's tensors."""
    cfg, t = model.config, model.tensors
    out = {"model.embed_tokens.weight": t["tok_embeddings.weight"], "model.norm.weight": t["norm.weight"]}
    for i in range(cfg.n_layers):
        p, q = f"layers.{i}.", f"model.layers.{i}."
        out[q + "input_layernorm.weight"] = t[p + "attention_norm.weight"]
        out[q + "self_attn.q_proj.weight"] = rotary_to_hf(t[p + "attention.wq.weight"], cfg.n_heads)
        out[q + "self_attn.k_proj.weight"] = rotary_to_hf(t[p + "attention.wk.weight"], cfg.n_kv_heads)
        out[q + "self_attn.v_proj.weight"] = t[p + "attention.wv.weight"]
        out[q + "self_attn.o_proj.weight"] = t[p + "attention.wo.weight"]
        out[q + "post_attention_layernorm.weight"] = t[p + "ffn_norm.weight"]
        out[q + "mlp.gate_proj.weight"] = t[p + "feed_forward.w1.weight"]
        out[q + "mlp.down_proj.weight"] = t[p + "feed_forward.w2.weight"]
        out[q + "mlp.up_proj.weight"] = t[p + "feed_forward.w3.weight"]
    if not cfg.shared_classifier:  # tied: HF ties lm_head to embed_tokens itself
        out["lm_head.weight"] = t["output.weight"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _special_tokens(tokenizer_model: Path | None, vocab_size: int) -> dict:
    """bos/eos/unk/pad ids and pieces: from the SentencePiece model, else llama2.c's (BOS 1, EOS 2)."""
    tok = {"bos": (1, "<s>"), "eos": (2, "</s>"), "unk": (0, "<unk>"), "pad": (None, None)}
    if tokenizer_model is None:
        return tok
    try:
        import sentencepiece as spm
    except ImportError:
        raise ExportError("reading the tokenizer needs the sentencepiece package") from None
    try:
        sp = spm.SentencePieceProcessor(model_file=os.fspath(tokenizer_model))
    except Exception as e:
        raise ExportError(f"{tokenizer_model}: not a SentencePiece model ({e})") from None
    if sp.get_piece_size() > vocab_size:
        raise ExportError(f"tokenizer {tokenizer_model} has {sp.get_piece_size()} pieces, "
                          f"more than the model's vocab_size {vocab_size}")
    for key, i in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unk", sp.unk_id()), ("pad", sp.pad_id())):
        tok[key] = (i, sp.id_to_piece(i)) if i >= 0 else (None, None)
    return tok


def _probe_matches(sp, pieces: list[str]) -> bool:
    """Whether llama2.c's encoder (what tokenizer.json reproduces) segments like the SentencePiece model
    itself: false for a model that normalises text (NFKC, collapsed spaces), which tokenizer.json would
    not copy."""
    from tinymath.tokenizer.train_sp import to_llama2c

    ours = to_llama2c(sp)
    chars = [p for p in pieces if len(p) == 1 and p != "\u2581"]
    probe = "".join(chars) + "  " + " ".join(chars) + "  "
    try:
        mine = ours.encode(probe)
    except ValueError:
        return False
    return mine == sp.encode(probe)


def tokenizer_json(tokenizer_model: Path) -> dict | None:
    """tokenizer.json (the `tokenizers` library's format) for a SentencePiece model; None when the
    model normalises its text, which this form does not reproduce (then only tokenizer.model is written)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.fspath(tokenizer_model))
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    if not _probe_matches(sp, pieces):
        return None
    special = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    normal = {p: i for i, p in enumerate(pieces)
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))}
    merges = []
    for p, i in normal.items():
        for k in range(1, len(p)):
            a, b = p[:k], p[k:]
            if a in normal and b in normal:
                merges.append((-sp.get_score(i), i, normal[a], normal[b], a, b))
    merges.sort()
    byte_fallback = any(sp.is_byte(i) for i in range(n))
    bos = sp.bos_id()
    single = [{"Sequence": {"id": "A", "type_id": 0}}]
    pair = [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}]
    tokens = {}
    if bos >= 0:
        b = {"SpecialToken": {"id": pieces[bos], "type_id": 0}}
        single, pair = [b, *single], [b, pair[0], b, pair[1]]
        tokens = {pieces[bos]: {"id": pieces[bos], "ids": [bos], "tokens": [pieces[bos]]}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": pieces[i], "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i in special],
        # always a "▁" first, as SentencePiece's dummy prefix and llama2.c add it (a Metaspace pre-tokenizer
        # would skip it for text that starts with a space); every space a "▁"; no pre-tokenizer split
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": tokens},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {
            "type": "BPE", "dropout": None,
            "unk_token": pieces[sp.unk_id()] if sp.unk_id() >= 0 else None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": True, "byte_fallback": byte_fallback,
            "vocab": {p: i for i, p in enumerate(pieces)},
            # "a b" strings: the form every tokenizers version reads (pieces hold no spaces: they use ▁)
            "merges": [f"{a} {b}" if " " not in a + b else [a, b] for *_, a, b in merges],
        },
    }


def hf_config(model, special: dict) -> dict:
    cfg = model.config
    theta = float(cfg.rope_theta)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": float(cfg.norm_eps),
        # transformers < 5 reads rope_theta; 5.x reads rope_parameters (and folds rope_theta in)
        "rope_theta": theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "tie_word_embeddings": bool(cfg.shared_classifier),
        "use_cache": True,
        "bos_token_id": special["bos"][0],
        "eos_token_id": special["eos"][0],
        "pad_token_id": special["pad"][0],
        "torch_dtype": "float32",
        "dtype": "float32",
    }


def check_hf_ready() -> None:
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        raise ExportError("hf export needs the safetensors package: pip install safetensors") from None


def write_hf(model, out_dir: str | os.PathLike, tokenizer_model: str | os.PathLike | None = None,
             card: dict | None = None) -> Path:
    """Write the HF folder at out_dir (atomically if new; file by file into an existing folder)."""
    check_hf_ready()
    from safetensors.numpy import save as st_save

    tok_path = Path(tokenizer_model) if tokenizer_model else None
    if tok_path is not None and not tok_path.is_file():
        raise ExportError(f"tokenizer model not found: {tok_path}")
    special = _special_tokens(tok_path, model.config.vocab_size)
    blob = st_save(hf_state_dict(model), metadata={"format": "pt"})
    with atomic_dir(out_dir) as d:
        write_json(d / "config.json", hf_config(model, special))
        gen = {"bos_token_id": special["bos"][0], "eos_token_id": special["eos"][0], "do_sample": False}
        write_json(d / "generation_config.json", gen)
        with atomic_file(d / "model.safetensors") as f:
            f.write(blob)
        if tok_path is not None:
            with atomic_file(d / "tokenizer.model") as f, open(tok_path, "rb") as src:
                shutil.copyfileobj(src, f)
            tj = tokenizer_json(tok_path)
            if tj is not None:
                write_json(d / "tokenizer.json", tj)
            else:
                import warnings

                from .writers import ExportWarning

                warnings.warn(f"no tokenizer.json: the SentencePiece model {tok_path.name} normalises its text "
                              f"(e.g. NFKC, collapsed spaces), which tokenizer.json would not reproduce; "
                              f"AutoTokenizer needs sentencepiece and protobuf to read tokenizer.model",
                              ExportWarning, stacklevel=2)
            tc = {
                # with tokenizer.json: taken as it is (see the module docstring); without: sentencepiece's
                "tokenizer_class": "PreTrainedTokenizerFast" if tj is not None else "LlamaTokenizer",
                "model_input_names": ["input_ids", "attention_mask"],
                "model_max_length": model.config.max_seq_len,
                "bos_token": special["bos"][1],
                "eos_token": special["eos"][1],
                "unk_token": special["unk"][1],
                "pad_token": special["pad"][1],
                "add_bos_token": True,
                "add_eos_token": False,
                "clean_up_tokenization_spaces": False,
            }
            if tj is None:  # sentencepiece's LlamaTokenizer: the prefix space as SentencePiece adds it
                tc.update(legacy=False, add_prefix_space=None)
            write_json(d / "tokenizer_config.json", tc)
        if card is not None:
            write_json(d / "tinymath_card.json", card)
    return Path(out_dir)
