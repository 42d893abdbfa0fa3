"""The optimizer: AdamW (weight decay on matrices only) and global-norm gradient clipping.
The learning rate of every step is schedule.lr_at (torch-free, shared with the C engine)."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


class AdamW:
    """torch.optim.AdamW's update (decoupled weight decay, bias correction) with foreach kernels.

    Same arithmetic as torch's foreach AdamW, but standalone: constructing any
    torch.optim optimizer imports torch._dynamo, which costs ~2 s at every start-up
    on a small CPU machine, noticeable when a study trains hundreds of small models.
    Offers the part of the Optimizer interface the loop uses: param_groups
    (with "lr"), zero_grad, step, state_dict, load_state_dict.
    """

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.param_groups = [{"params": list(g["params"]), "weight_decay": float(g.get("weight_decay", 0.0)),
                              "lr": lr, "betas": tuple(betas), "eps": eps} for g in groups]
        self.steps = 0
        self.exp_avg = [[torch.zeros_like(p, memory_format=torch.preserve_format) for p in g["params"]]
                        for g in self.param_groups]
        self.exp_avg_sq = [[torch.zeros_like(p, memory_format=torch.preserve_format) for p in g["params"]]
                           for g in self.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        t = self.steps
        for g, m, v in zip(self.param_groups, self.exp_avg, self.exp_avg_sq):
            live = [i for i, p in enumerate(g["params"]) if p.grad is not None]
            if not live:
                continue
            params = [g["params"][i] for i in live]
            grads = [g["params"][i].grad for i in live]
            m, v = [m[i] for i in live], [v[i] for i in live]
            lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(m, grads, 1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, 1 - b2)
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, math.sqrt(bc2))
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, m, denom, -lr / bc1)

    def state_dict(self) -> dict:
        return {"kind": "adamw", "steps": self.steps,
                "param_groups": [{"lr": g["lr"], "betas": list(g["betas"]), "eps": g["eps"],
                                  "weight_decay": g["weight_decay"], "n_params": len(g["params"])}
                                 for g in self.param_groups],
                "exp_avg": [list(x) for x in self.exp_avg], "exp_avg_sq": [list(x) for x in self.exp_avg_sq]}

    def load_state_dict(self, d: dict) -> None:
        if d.get("kind") != "adamw" or len(d["param_groups"]) != len(self.param_groups):
            raise ValueError("optimizer state in the checkpoint does not match this optimizer")
        for g, sg, m, v, sm, sv in zip(self.param_groups, d["param_groups"], self.exp_avg, self.exp_avg_sq,
                                       d["exp_avg"], d["exp_avg_sq"]):
            if len(sm) != len(m) or any(a.shape != b.shape for a, b in zip(m, sm)):
                raise ValueError("optimizer state in the checkpoint has other parameter shapes")
            g.update(lr=sg["lr"], betas=tuple(sg["betas"]), eps=sg["eps"], weight_decay=sg["weight_decay"])
            for a, b in zip(m + v, list(sm) + list(sv)):
                a.copy_(b)
        self.steps = int(d["steps"])


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> AdamW:
    """AdamW; weight decay on the matrices of the linear layers only (not norms, not embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # a tied classifier appears once, as tok_embeddings
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "tok_embeddings" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> None:
    """Scale all gradients so their global L2 norm is at most max_norm (torch's clip_grad_norm_)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
