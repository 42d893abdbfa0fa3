"""A tiny Llama in PyTorch, laid out as llama2.c's model so its weights export unchanged.

Token embedding; n_layers x (RMSNorm, grouped-query attention with rotary position
embeddings, RMSNorm, SwiGLU feed-forward); final RMSNorm; classifier tied to the
embedding or not. Parameter names follow llama2.c's `model.py` (tok_embeddings,
layers.N.attention.wq, ..., norm, output), which the exporters rely on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .model_config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (max_seq_len, head_dim/2), llama2.c's frequencies."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(max_seq_len).float(), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (0,1), (2,3), ... of each head: llama2.c's interleaved convention.

    x: (batch, seq, heads, head_dim); cos, sin: (seq, head_dim/2). Computed as one
    complex multiplication (llama2.c's own formulation), about 4x faster on CPU
    than splitting and re-stacking the pairs.
    """
    if torch.compiler.is_compiling():  # inductor generates no code for complex ops: pairs, fused
        xf = x.float().reshape(*x.shape[:-1], -1, 2)
        re, im = xf[..., 0], xf[..., 1]
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        return torch.stack((re * c - im * s, re * s + im * c), dim=-1).flatten(-2).type_as(x)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
    rot = torch.complex(cos, sin)[None, :, None, :]
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None, pos: int = 0) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # write this step's keys/values, attend over everything so far
            cache[0][:, pos:pos + t], cache[1][:, pos:pos + t] = k, v
            k, v = cache[0][:, :pos + t], cache[1][:, :pos + t]
        rep = self.n_heads // self.n_kv_heads
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if t > 1 and k.shape[2] == t and x.device.type == "cpu":
            # no cached past, on CPU: explicit causal attention. For the short sequences of
            # arithmetic problems (~20 tokens, head size 8) it is 1.3-2x faster than the CPU
            # flash-attention kernel, whose cost is per (batch, head) block.
            scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
            causal = torch.full((t, t), float("-inf"), device=x.device, dtype=scores.dtype).triu(1)
            scores = scores + causal
            if t < 16:  # CPU softmax over a last dim shorter than a vector register is ~5x slower
                probs = scores.transpose(-1, -2).softmax(-2).transpose(-1, -2)
            else:
                probs = scores.softmax(-1)
            y = torch.matmul(probs, v)
        elif t > 1 and k.shape[2] == t:  # no cached past: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # causal within the new tokens; all cached positions are in the past
            mask = None
            if t > 1:
                mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=k.shape[2] - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin, cache=None, pos=0):
        x = x + self.attention(self.attention_norm(x), cos, sin, cache, pos)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tied:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2 style scaled init of the residual projections
        for name, p in self.named_parameters():
            if name.endswith("wo.weight") or name.endswith("w2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: torch.Tensor, caches: list | None = None, pos: int = 0,
                select: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, seq, vocab) for tokens (batch, seq) starting at position `pos`.

        With `select` (indices into the flattened batch*seq positions), only those
        positions go through the classifier and the result is (len(select), vocab):
        training needs logits only where there is a target.
        """
        t = tokens.shape[1]
        if pos + t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {pos + t} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[pos:pos + t], self.rope_sin[pos:pos + t]
        h = self.tok_embeddings(tokens)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, None if caches is None else caches[i], pos)
        if select is not None:
            h = h.reshape(-1, h.shape[-1]).index_select(0, select)
        return self.output(self.norm(h))

    def new_caches(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        c = self.cfg
        shape = (batch, c.max_seq_len, c.n_kv_heads, c.head_dim)
        dev, dt = self.tok_embeddings.weight.device, self.tok_embeddings.weight.dtype
        return [(torch.zeros(shape, device=dev, dtype=dt), torch.zeros(shape, device=dev, dtype=dt))
                for _ in range(c.n_layers)]

    @torch.no_grad()
    def generate_greedy(self, prompts: list[list[int]], max_new: int, stop: int) -> list[list[int]]:
        """Greedy continuation of each prompt (token ids, BOS included) with a KV cache.

        Prompts of different lengths are left-aligned; each sequence is fed its own
        prompt tokens until they run out, then its own argmax. Generation of a
        sequence ends at `stop` (not included in the result) or after max_new tokens.
        """
        b = len(prompts)
        lens = torch.tensor([len(p) for p in prompts])
        if b == 0:
            return []
        total = min(int(lens.max()) + max_new, self.cfg.max_seq_len)
        dev = self.tok_embeddings.weight.device
        buf = torch.zeros(b, total, dtype=torch.long)
        for i, p in enumerate(prompts):
            buf[i, : len(p)] = torch.tensor(p)
        buf = buf.to(dev)
        lens_d = lens.to(dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        caches = self.new_caches(b)
        start = int(lens.min())
        logits = self(buf[:, :start], caches, 0)[:, -1]
        for pos in range(start, total):
            nxt = logits.argmax(-1)
            in_prompt = pos < lens_d
            tok = torch.where(in_prompt, buf[:, pos], nxt)
            done |= (~in_prompt) & (tok == stop)
            buf[:, pos] = torch.where(done & ~in_prompt, torch.full_like(tok, stop), tok)
            if bool(done.all()) or pos + 1 == total:
                break
            logits = self(buf[:, pos:pos + 1], caches, pos)[:, -1]
        out = []
        for i, p in enumerate(prompts):
            gen = buf[i, len(p):].tolist()
            out.append(gen[: gen.index(stop)] if stop in gen else gen[:max_new])
        return out
