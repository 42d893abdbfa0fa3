"""The model's shape (ModelConfig): fields, checks, the parameter count, the size rule.

No torch: the C engine's torch-free loop, export and the checkpoint reader use it too.
train/model.py builds the PyTorch model from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


def hidden_for(dim: int, multiple: int = 4) -> int:
    """SwiGLU's hidden size for `dim`: the multiple of `multiple` nearest 8/3 * dim (at least one multiple)."""
    if multiple < 1:
        raise ValueError(f"model config: hidden_multiple must be >= 1, got {multiple}")
    return max(multiple, int(round(dim * 8 / 3 / multiple)) * multiple)


@dataclass
class ModelConfig:
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 4
    hidden_dim: int = 176
    vocab_size: int = 32
    max_seq_len: int = 32
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tied: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first field that makes no sense."""
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model config: {name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"model config: n_heads ({self.n_heads}) must divide dim ({self.dim})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"model config: n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"model config: head size dim/n_heads ({self.dim // self.n_heads}) must be even for RoPE")
        if not self.norm_eps > 0:
            raise ValueError(f"model config: norm_eps must be > 0, got {self.norm_eps}")
        if not self.rope_theta > 0:
            raise ValueError(f"model config: rope_theta must be > 0, got {self.rope_theta}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def n_params(self) -> int:
        """Exact count of trained parameters (a tied classifier is counted once)."""
        d, h, kv = self.dim, self.hidden_dim, self.n_kv_heads * self.head_dim
        per_layer = 2 * d + d * d + 2 * d * kv + d * d + 3 * d * h
        total = self.vocab_size * d + self.n_layers * per_layer + d
        return total if self.tied else total + self.vocab_size * d

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model config: unknown fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def for_params(cls, target: int, vocab_size: int, max_seq_len: int, n_layers: int | None = None,
                   head_dim: int = 8, tied: bool = True, hidden_multiple: int = 4) -> "ModelConfig":
        """The shape whose parameter count is nearest `target`, by a stated rule.

        Rule: heads of `head_dim` (8) channels, n_kv_heads = n_heads, hidden_dim =
        the multiple of `hidden_multiple` (4) nearest 8/3 * dim (llama's SwiGLU ratio;
        16 keeps int8's Q8_0 groups wide: hidden 80 at dim 32, not 84), and n_layers
        = 1 below 5K params, 2 below 200K, 4 below 2M, else 6, unless given. dim is
        searched over even values below 2 * head_dim (one head when dim < 2 * head_dim,
        so the smallest sizes are finely spaced), then over multiples of head_dim.
        """
        if target <= 0:
            raise ValueError(f"target parameter count must be positive, got {target}")
        if n_layers is None:
            n_layers = 1 if target < 5_000 else 2 if target < 200_000 else 4 if target < 2_000_000 else 6
        best: ModelConfig | None = None
        for dim in list(range(2, 2 * head_dim, 2)) + list(range(2 * head_dim, 4097, head_dim)):
            hidden = hidden_for(dim, hidden_multiple)
            heads = max(1, dim // head_dim)
            cfg = cls(dim=dim, n_layers=n_layers, n_heads=heads, n_kv_heads=heads,
                      hidden_dim=hidden, vocab_size=vocab_size, max_seq_len=max_seq_len, tied=tied)
            if best is None or abs(cfg.n_params() - target) < abs(best.n_params() - target):
                best = cfg
            if cfg.n_params() > target:
                break
        assert best is not None
        return best
