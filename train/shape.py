"""A model section of the config -> the ModelConfig it asks for (one rule, checked early and
resolved once the tokenizer's vocabulary and the longest problem are known)."""

from __future__ import annotations

from .config import ModelSection
from .model_config import ModelConfig, hidden_for


def _explicit(m: ModelSection, vocab_size: int, seq: int) -> ModelConfig:
    """The shape a section gives field by field (no `params`), defaults filled in."""
    dim = m.dim or ModelConfig.dim
    n_heads = m.n_heads or (dim // m.head_dim if dim % m.head_dim == 0 else ModelConfig.n_heads)
    return ModelConfig(dim=dim, n_layers=m.n_layers or ModelConfig.n_layers, n_heads=n_heads,
                       n_kv_heads=m.n_kv_heads or n_heads, hidden_dim=m.hidden_dim or hidden_for(dim, m.hidden_multiple),
                       vocab_size=vocab_size, max_seq_len=seq, norm_eps=m.norm_eps, rope_theta=m.rope_theta,
                       tied=m.tied)


def check_shape_fields(m: ModelSection) -> None:
    """Catch a shape that cannot work before any data or tokenizer work is done."""
    if m.params is None:
        _explicit(m, m.vocab_size or 8, m.max_seq_len or 8).validate()


def resolve_model_config(m: ModelSection, vocab_size: int, longest: int) -> ModelConfig:
    """The ModelConfig for a model section, a tokenizer's vocabulary and the longest problem (tokens)."""
    if m.vocab_size is not None and m.vocab_size != vocab_size:
        raise ValueError(f"model config: vocab_size is {m.vocab_size}, but the tokenizer has {vocab_size} tokens "
                         f"(leave model.vocab_size out to take the tokenizer's)")
    if m.max_seq_len is not None and m.max_seq_len < longest:
        raise ValueError(f"model config: max_seq_len ({m.max_seq_len}) is shorter than the longest problem "
                         f"({longest} tokens with BOS and EOS)")
    seq = m.max_seq_len or longest
    if m.params is not None:
        cfg = ModelConfig.for_params(m.params, vocab_size, seq, n_layers=m.n_layers, head_dim=m.head_dim,
                                     tied=m.tied, hidden_multiple=m.hidden_multiple)
        cfg.norm_eps, cfg.rope_theta = m.norm_eps, m.rope_theta
        if m.n_kv_heads is not None:
            cfg.n_kv_heads = m.n_kv_heads
    else:
        cfg = _explicit(m, vocab_size, seq)
    cfg.validate()
    return cfg
