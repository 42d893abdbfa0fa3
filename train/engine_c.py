"""The C training engine (runc/train.h) from Python: `CEngine`, one model's parameters, AdamW state and step.

    eng = CEngine(model_config, max_batch=128, threads=1, beta1=0.9, beta2=0.99, adam_eps=1e-8,
                  weight_decay=0.1, grad_clip=1.0)
    eng.load_state_dict(model.state_dict())        # torch tensors or numpy arrays, llama2.c names
    loss_sum, n_answer = eng.step(x, y, lr)         # x, y: (B, W) ints as Batches gives them
    eng.state_dict()                               # numpy arrays under the same names
    eng.optimizer_state_dict()                     # train/optim.py's AdamW.state_dict() layout

numpy only: no torch is imported here. The engine is part of `tinymath.runc._engine`
(runc/build_engine.py), the one build of runc's C, inference and training. train_c.py's
loop drives it.
"""

from __future__ import annotations


import numpy as np

from .model_config import ModelConfig

IGNORE = -100


class CEngineError(RuntimeError):
    """An error the C engine reported: .code is a runc_status, the message names what is wrong."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def load_engine():
    """(ffi, lib) of the compiled engine (tinymath.runc._engine, which holds runc/train.c)."""
    try:
        from tinymath.runc import _engine  # type: ignore[attr-defined]
    except ImportError as e:
        raise ImportError("tinymath.runc._engine (the C engine) is not built: run `pip install -e .` "
                          "or `python runc/build_engine.py`") from e
    return _engine.ffi, _engine.lib


def _array(x) -> np.ndarray:
    """numpy float32 from a numpy array or a torch tensor (without importing torch)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


class CEngine:
    """One model in the C engine: parameters, gradients, AdamW moments, and an arena for max_batch rows."""

    def __init__(self, cfg: ModelConfig, *, max_batch: int, threads: int = 1, beta1: float = 0.9,
                 beta2: float = 0.99, adam_eps: float = 1e-8, weight_decay: float = 0.1, grad_clip: float = 1.0):
        self.ffi, self.lib = load_engine()
        ffi, lib = self.ffi, self.lib
        self.cfg = cfg
        c = ffi.new("runc_train_config *")
        lib.runc_train_config_default(c)
        for k in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"):
            setattr(c, k, int(getattr(cfg, k)))
        c.tied = 1 if cfg.tied else 0
        c.norm_eps, c.rope_theta = float(cfg.norm_eps), float(cfg.rope_theta)
        c.max_batch, c.threads = int(max_batch), int(threads)
        c.beta1, c.beta2, c.adam_eps = float(beta1), float(beta2), float(adam_eps)
        c.weight_decay, c.grad_clip = float(weight_decay), float(grad_clip)
        self.threads, self.max_batch = int(threads), int(max_batch)
        self._err = ffi.new("runc_error *")
        out = ffi.new("runc_trainer **")
        self._check(lib.runc_train_open(out, c, self._err))
        self._t = out[0]
        self.n_params = int(lib.runc_train_n_params(self._t))
        self.kernels = ffi.string(lib.runc_train_kernels(self._t)).decode()  # "avx512", "avx2", "portable C"
        self._stats = ffi.new("runc_train_stats *")
        name = ffi.new("char[]", 128)
        off, rows, cols, decay = (ffi.new("long long *"), ffi.new("int *"), ffi.new("int *"), ffi.new("int *"))
        self.tensors: list[tuple[str, int, tuple[int, ...], bool]] = []  # (name, offset, shape, decay)
        for i in range(lib.runc_train_n_tensors(self._t)):
            self._check(lib.runc_train_tensor(self._t, i, name, 128, off, rows, cols, decay, self._err))
            shape = (rows[0],) if cols[0] == 1 else (rows[0], cols[0])
            self.tensors.append((ffi.string(name).decode(), int(off[0]), shape, bool(decay[0])))
        self._bufs = [np.frombuffer(ffi.buffer(lib.runc_train_buffer(self._t, w), 4 * self.n_params),
                                    dtype=np.float32) for w in range(4)]

    # ---- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_t", None) is not None:
            self._bufs = []
            self.lib.runc_train_close(self._t)
            self._t = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "CEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, status: int) -> None:
        if status != 0:
            raise CEngineError(int(status), self.ffi.string(self._err.message).decode("utf-8", "replace"))

    # ---- buffers -------------------------------------------------------------------------------
    @property
    def params(self) -> np.ndarray:
        return self._bufs[0]

    @property
    def grads(self) -> np.ndarray:
        return self._bufs[1]

    def _views(self, buf: np.ndarray) -> dict[str, np.ndarray]:
        return {name: buf[off:off + int(np.prod(shape))].reshape(shape) for name, off, shape, _ in self.tensors}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters under train/model.py's state_dict names (both names of a tied classifier)."""
        d = {k: v.copy() for k, v in self._views(self.params).items()}
        if self.cfg.tied:
            d["output.weight"] = d["tok_embeddings.weight"]
        return d

    def load_state_dict(self, state: dict) -> None:
        views = self._views(self.params)
        for name, view in views.items():
            if name not in state:
                raise ValueError(f"C engine: the state lacks {name}")
            a = _array(state[name])
            if a.shape != view.shape:
                raise ValueError(f"C engine: {name} has shape {a.shape}, the model wants {view.shape}")
            view[...] = a

    def grad_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._views(self.grads).items()}

    # ---- optimizer state (train/optim.py's AdamW.state_dict layout) -------------------------------
    def _groups(self) -> tuple[list[str], list[str]]:
        decay = [n for n, _, _, d in self.tensors if d]
        no_decay = [n for n, _, _, d in self.tensors if not d]
        return decay, no_decay

    @property
    def adam_steps(self) -> int:
        return int(self.lib.runc_train_adam_steps(self._t))

    def optimizer_state_dict(self, lr: float, weight_decay: float, betas: tuple[float, float], eps: float,
                             tensor=None) -> dict:
        """AdamW.state_dict() as train/optim.py writes it; `tensor` converts arrays (e.g. torch.from_numpy)."""
        conv = tensor or (lambda a: a)
        m, v = self._views(self._bufs[2]), self._views(self._bufs[3])
        groups = self._groups()
        return {"kind": "adamw", "steps": self.adam_steps,
                "param_groups": [{"lr": lr, "betas": list(betas), "eps": eps, "weight_decay": wd,
                                  "n_params": len(names)} for names, wd in zip(groups, (weight_decay, 0.0))],
                "exp_avg": [[conv(m[n].copy()) for n in names] for names in groups],
                "exp_avg_sq": [[conv(v[n].copy()) for n in names] for names in groups]}

    def load_optimizer_state_dict(self, d: dict) -> None:
        groups = self._groups()
        if d.get("kind") != "adamw" or len(d["param_groups"]) != 2:
            raise ValueError("optimizer state in the checkpoint does not match this optimizer")
        m, v = self._views(self._bufs[2]), self._views(self._bufs[3])
        for names, sm, sv in zip(groups, d["exp_avg"], d["exp_avg_sq"]):
            if len(sm) != len(names) or len(sv) != len(names):
                raise ValueError("optimizer state in the checkpoint has other parameter shapes")
            for n, a, b in zip(names, sm, sv):
                a, b = _array(a), _array(b)
                if a.shape != m[n].shape or b.shape != v[n].shape:
                    raise ValueError("optimizer state in the checkpoint has other parameter shapes")
                m[n][...] = a
                v[n][...] = b
        self.lib.runc_train_set_adam_steps(self._t, int(d["steps"]))

    # ---- a step ----------------------------------------------------------------------------------
    def _batch(self, x, y):
        if hasattr(x, "numpy"):
            x, y = x.numpy(), y.numpy()
        x = np.ascontiguousarray(x, dtype=np.int32)
        y = np.ascontiguousarray(y, dtype=np.int32)
        if x.ndim != 2 or x.shape != y.shape:
            raise ValueError(f"C engine: tokens {x.shape} and targets {y.shape} must be the same 2-D shape")
        return x, y, self.ffi.from_buffer("int[]", x), self.ffi.from_buffer("int[]", y)

    def forward_backward(self, x, y, want_logits: bool = False):
        """(loss_sum, n_answer, logits or None): gradients of mean answer-token cross-entropy, no update."""
        x, y, px, py = self._batch(x, y)
        logits, plog, cap = None, self.ffi.NULL, 0
        if want_logits:
            n_ans = int((y != IGNORE).sum())
            logits = np.zeros((n_ans, self.cfg.vocab_size), dtype=np.float32)
            plog, cap = self.ffi.from_buffer("float[]", logits), logits.size
        self._check(self.lib.runc_train_forward_backward(self._t, px, py, x.shape[0], x.shape[1], plog, cap,
                                                         self._stats, self._err))
        return self._stats.loss_sum, self._stats.n_answer, logits

    def update(self, lr: float) -> float:
        """Clip and take one AdamW step; the gradient norm before clipping."""
        self._check(self.lib.runc_train_update(self._t, float(lr), self._stats, self._err))
        return self._stats.grad_norm

    def step(self, x, y, lr: float) -> tuple[float, int]:
        """One training step on batch (x, y): (summed answer-token loss, answer tokens)."""
        x, y, px, py = self._batch(x, y)
        self._check(self.lib.runc_train_step(self._t, px, py, x.shape[0], x.shape[1], float(lr), self._stats,
                                             self._err))
        return self._stats.loss_sum, self._stats.n_answer
