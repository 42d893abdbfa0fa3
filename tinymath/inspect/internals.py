"""Inside the network (torch): attention maps per layer and head, and token attribution.

Both read the training checkpoint the .bin was exported from (the model card's
source.checkpoint, or a checkpoint beside the .bin, or --checkpoint), rebuild
train/model.py's Transformer from it, and run the same token ids the C engine
ran (so the maps are of the answer the engine gave).

Attention: the softmax weights of every head at every layer, query positions x
key positions, computed from the layer's own projections and RoPE.

Attribution, for one answer token (its log-probability at the position that
predicted it) onto each earlier token's input embedding:
- integrated gradients: (e - b) * the mean gradient along the straight path
  from a baseline b in which every token but BOS is the space, so the
  attributions add up (up to the quadrature's small miss, reported) to
  logp(input) - logp(baseline): how much each token moves the answer away from
  "nothing said". (A zero-embedding baseline is a poor one for these models:
  RMSNorm is undefined-like near zero and the path becomes a cliff.)
- gradient x input: sum over channels of d logp / d e * e, the first-order
  view. Read it with care: the first RMSNorm makes a layer's input scale-free,
  so a token that reaches the answer only through normalised paths gets ~0
  here whatever its importance; only the residual stream of the answer's own
  position shows up.

torch is imported when these functions run, never by `import tinymath.inspect`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import InspectError, save_png, show


def find_checkpoint(model_path: str | Path, given: str | None = None) -> Path:
    """The training checkpoint behind a .bin: --checkpoint, the card's source, or best.pt/ckpt.pt beside it."""
    from tinymath.export.card import ModelFiles

    found = ModelFiles.open(model_path).checkpoint(given)
    if found is None:
        raise InspectError(
            f"attention and attribution need the training checkpoint of {Path(model_path).name} "
            f"(the card names none that exists, and there is no best.pt or ckpt.pt beside it): pass --checkpoint")
    return found


def require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InspectError("this view reads training checkpoints and needs torch: "
                           "pip install 'tinymath[train]'") from None


def load_torch_model(ckpt_path: str | Path):
    """(Transformer in eval mode on CPU, checkpoint dict) from a training checkpoint."""
    require_torch()
    from tinymath.train.checkpoint import load_checkpoint
    from tinymath.train.model import ModelConfig, Transformer

    ckpt = load_checkpoint(ckpt_path)
    model = Transformer(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def load_model_behind(model_path: str | Path, given: str | None = None):
    """(Transformer in eval mode on CPU, its model config, where its weights came from) for a .bin:
    its training checkpoint when one is found (find_checkpoint), else the .bin's own weights (an
    int8 file dequantized as the C runner does), so a model shipped without its checkpoint can
    still be inspected. A --checkpoint that does not exist is an error (FileNotFoundError), not a fallback."""
    from tinymath.export.card import ModelFiles

    path = ModelFiles.open(model_path).checkpoint(given)
    if path is not None:
        model, ckpt = load_torch_model(path)
        return model, ckpt["model_config"], str(path)
    require_torch()
    import torch

    from tinymath.export import read_bin
    from tinymath.train.model import ModelConfig, Transformer

    bm = read_bin(model_path, dequantize=True)
    config = bm.config.model_config()
    model = Transformer(ModelConfig.from_dict(config))
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in bm.state_dict().items()})
    model.eval()
    return model, config, f"{model_path} (its own weights: no training checkpoint beside it)"


def check_same_model(model, ckpt_config: dict, engine_config: dict) -> None:
    """The checkpoint must have the shape of the .bin (a stale or wrong checkpoint gives wrong maps)."""
    for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size"):
        if k in engine_config and ckpt_config.get(k) != engine_config[k]:
            raise InspectError(f"the checkpoint's {k} is {ckpt_config.get(k)}, the model file's is "
                               f"{engine_config[k]}: not the checkpoint this file was exported from")


def logits(model, ids: Sequence[int]) -> np.ndarray:
    """Torch logits (positions x vocab) of ids, for comparison with the engine's."""
    import torch

    with torch.no_grad():
        return model(torch.tensor([list(ids)], dtype=torch.long))[0].float().numpy()


def attention_maps(model, ids: Sequence[int]) -> np.ndarray:
    """Attention weights (n_layers, n_heads, T, T): row = query position, column = key position."""
    import torch

    from tinymath.train.model import apply_rope

    x = torch.tensor([list(ids)], dtype=torch.long)
    t = x.shape[1]
    if t > model.cfg.max_seq_len:
        raise InspectError(f"{t} tokens exceed the model's max_seq_len {model.cfg.max_seq_len}")
    cos, sin = model.rope_cos[:t], model.rope_sin[:t]
    maps = []
    with torch.no_grad():
        h = model.tok_embeddings(x)
        for layer in model.layers:
            a = layer.attention
            xn = layer.attention_norm(h)
            q = apply_rope(a.wq(xn).view(1, t, a.n_heads, a.head_dim), cos, sin).transpose(1, 2)
            k = apply_rope(a.wk(xn).view(1, t, a.n_kv_heads, a.head_dim), cos, sin).transpose(1, 2)
            rep = a.n_heads // a.n_kv_heads
            if rep > 1:
                k = k.repeat_interleave(rep, dim=1)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(a.head_dim)
            scores = scores + torch.full((t, t), float("-inf")).triu(1)
            maps.append(scores.softmax(-1)[0].float().numpy())
            h = layer(h, cos, sin)
    return np.stack(maps)


def _forward_embeds(model, e):
    t = e.shape[1]
    cos, sin = model.rope_cos[:t], model.rope_sin[:t]
    h = e
    for layer in model.layers:
        h = layer(h, cos, sin)
    return model.output(model.norm(h))


def attribution(model, ids: Sequence[int], position: int, target: int, baseline_token: int,
                steps: int = 128) -> dict:
    """Attributions of log p(target | ids[:position+1]) onto ids[0..position].

    baseline_token: the token every input but BOS is replaced by on the integrated-gradients path
    (the space: a token the model saw between every symbol). Returns {"logprob", "grad_x_input",
    "integrated_gradients", "ig_baseline_logprob", "ig_steps", "ig_gap"}; the two attribution
    lists have position + 1 entries.
    """
    import torch

    if not 0 <= position < len(ids):
        raise InspectError(f"position {position} is outside the {len(ids)} tokens")
    x = torch.tensor([list(ids[:position + 1])], dtype=torch.long)
    with torch.no_grad():
        e0 = model.tok_embeddings(x).float()
        base = model.tok_embeddings(torch.full_like(x, int(baseline_token))).float()
        base[:, 0] = e0[:, 0]  # BOS stays itself: every sequence starts with it

    def logp(e):
        out = _forward_embeds(model, e)[:, -1].float()
        return torch.log_softmax(out, -1)[:, target]

    e = e0.clone().requires_grad_(True)
    lp = logp(e)
    (g,) = torch.autograd.grad(lp.sum(), e)
    gxi = (g * e0).sum(-1)[0]
    # integrated gradients: midpoint rule along base + alpha (e - base), all points in one batch
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    path = (base + alphas[:, None, None] * (e0 - base)).requires_grad_(True)
    (gp,) = torch.autograd.grad(logp(path).sum(), path)
    ig = (gp.mean(0) * (e0 - base)[0]).sum(-1)
    with torch.no_grad():
        lb = float(logp(base)[0])
    lp0 = float(lp.detach()[0])
    ig_list = ig.detach().tolist()
    return {"logprob": lp0, "grad_x_input": gxi.detach().tolist(), "integrated_gradients": ig_list,
            "ig_baseline_logprob": lb, "ig_steps": steps, "baseline_token": int(baseline_token),
            # completeness: sum(integrated_gradients) should equal logprob - baseline's; the quadrature's miss
            "ig_gap": sum(ig_list) - (lp0 - lb)}


# ---- plots ----------------------------------------------------------------------------------------------

def plot_attention(maps: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "",
                   columns: int = 4) -> Path:
    """A grid of query x key heat maps, one per (layer, head), `columns` heads to a row."""
    from .common import pyplot

    plt = pyplot()
    n_layers, n_heads, t, _ = maps.shape
    cols = min(columns, n_heads)
    rows_per_layer = -(-n_heads // cols)
    n_rows = n_layers * rows_per_layer
    cell = max(1.8, 0.13 * t + 0.7)
    fig, axes = plt.subplots(n_rows, cols, figsize=(cell * cols + 0.4, cell * n_rows + 0.5), squeeze=False)
    shown = [show(s) for s in labels]
    font = 6 if t <= 24 else 4
    for li in range(n_layers):
        for hi in range(rows_per_layer * cols):
            ax = axes[li * rows_per_layer + hi // cols][hi % cols]
            if hi >= n_heads:
                ax.axis("off")
                continue
            ax.imshow(maps[li, hi], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"layer {li} head {hi}", fontsize=8)
            ax.set_xticks(range(t), shown, fontsize=font, rotation=90, family="monospace")
            ax.set_yticks(range(t), shown, fontsize=font, family="monospace")
            ax.tick_params(length=0, pad=1)
    fig.suptitle(title or "attention (row: query, column: key)", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def plot_attribution(result: dict, labels: Sequence[str], target_label: str, path: str | Path,
                     title: str = "") -> Path:
    from .common import pyplot

    plt = pyplot()
    n = len(result["grad_x_input"])
    shown = [show(s) for s in labels[:n]]
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 0.5 * n + 3), 2.8), sharex=True)
    for ax, key, name in ((axes[0], "grad_x_input", "gradient x input"),
                          (axes[1], "integrated_gradients", f"integrated gradients ({result['ig_steps']} steps)")):
        vals = np.asarray(result[key])
        ax.bar(range(n), vals, color=["#5cb85c" if v >= 0 else "#d9534f" for v in vals])
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xticks(range(n), shown, fontsize=8, family="monospace")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel(f"share of log p({show(target_label)})", fontsize=8)
    fig.suptitle(title or f"which tokens log p({show(target_label)}) = {result['logprob']:.3f} rests on", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)
