"""TrainConfig: every knob of a training run, from a TOML/JSON file plus command-line overrides.

A config file is TOML (read with tomllib) or JSON with the same shape: top-level
training fields, a `[model]` table (explicit shape fields or a target `params`
count) and a `[task]` table (a task spec, see tinymath.tasks.TaskSpec):

    out_dir = "runs/add"
    lr = 1e-2
    [model]
    params = 50000          # or dim = 48, n_layers = 2, ...
    [task]
    task = "arith"
    ops = "+"

Overrides are `key=value` strings with dotted keys (`model.dim=64`,
`task.ops="+-"`, `lr=3e-3`); a value is read as a TOML value when it parses as
one (numbers, booleans, quoted strings, arrays) and as a bare string otherwise.
The fully resolved config (`to_dict`) is saved inside every checkpoint.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_TASK: dict = {"task": "arith"}  # the classic task: + - * / on 0-89, 90-99 held out


@dataclass
class ModelSection:
    """The model's shape: explicit fields, or `params` (a target count for ModelConfig.for_params).

    Fields left as None are filled in: vocab_size from the tokenizer, max_seq_len
    from the longest problem, the shape from `params` or from ModelConfig's defaults.
    """

    params: int | None = None        # target parameter count (ModelConfig.for_params)
    dim: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    hidden_dim: int | None = None
    vocab_size: int | None = None    # must equal the tokenizer's when given
    max_seq_len: int | None = None   # must hold the longest problem when given
    head_dim: int = 8                # with `params`: channels per head
    hidden_multiple: int = 4         # hidden_dim left out: the multiple of this nearest 8/3 * dim
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tied: bool = True


@dataclass
class TrainConfig:
    # ---- where and what -------------------------------------------------------------
    out_dir: str = "runs/train"
    seed: int = 0                     # model init and data order (the task has its own seed)
    task: dict = field(default_factory=lambda: dict(DEFAULT_TASK))
    data: str | None = None           # a file of `prompt = answer` lines, or a folder of
                                      # train.txt/val.txt/test.txt[/holdout.txt]; replaces `task`
    tokenizer: str | None = None      # a tokenizer.bin to use; default: train one on the train lines
    tokenizer_preset: str = "digits"
    tokenizer_vocab_size: int = 512   # bpe preset only
    init_from: str | None = None      # a checkpoint to fine-tune from (weights only)
    model: ModelSection = field(default_factory=ModelSection)
    # ---- optimisation --------------------------------------------------------------------
    batch_size: int = 128             # problems per step (global, across DDP ranks)
    max_steps: int = 3000
    max_time: float | None = None     # seconds of training before stopping (None: no limit)
    lr: float = 1e-2
    min_lr: float = 0.0               # end of the decay, as a fraction of lr
    warmup_steps: int = 50
    schedule: str = "cosine"          # cosine | linear | constant (after the warm-up)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    adam_eps: float = 1e-8
    grad_clip: float = 1.0            # max global gradient norm (0: off)
    bucket: bool = False              # group problems of similar length into batches
    # ---- evaluation ----------------------------------------------------------------------
    eval_every: int = 100             # steps between evaluations (and checkpoints)
    eval_max: int | None = None       # cap on val/holdout problems in periodic evals (None: all)
    eval_batch_size: int = 1024
    eval_decode: bool = True          # confirm teacher-forced misses by real greedy decoding
    target_acc: float | None = None   # stop once val exact-match reaches this (0..1)
    test_at_end: bool = True          # evaluate the test split once, at the end
    # ---- machine -------------------------------------------------------------------------
    device: str = "auto"              # auto | cpu | cuda | cuda:N | mps
    engine: str = "torch"             # torch | c (runc/train.c: the CPU, one process, float32)
    dtype: str = "auto"               # auto (bf16 autocast on CUDA) | float32 | bfloat16
    compile: bool = False             # torch.compile the model
    threads: int | None = None        # torch.set_num_threads (None: 1 below 5M params, else all cores)
    progress: bool = True             # tqdm progress bar

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return _build(cls, d, "")

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work (model shape is checked later)."""
        def positive(name: str, value: Any, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if value is None or value <= 0:
                raise ValueError(f"train config: {name} must be positive, got {value!r}")

        for name in ("batch_size", "max_steps", "eval_every", "eval_batch_size"):
            positive(name, getattr(self, name))
        positive("max_time", self.max_time, allow_none=True)
        positive("eval_max", self.eval_max, allow_none=True)
        positive("threads", self.threads, allow_none=True)
        positive("lr", self.lr)
        if self.warmup_steps < 0:
            raise ValueError(f"train config: warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr <= 1:
            raise ValueError(f"train config: min_lr is a fraction of lr in [0, 1], got {self.min_lr}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"train config: schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.weight_decay < 0:
            raise ValueError(f"train config: weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"train config: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.grad_clip < 0:
            raise ValueError(f"train config: grad_clip must be >= 0, got {self.grad_clip}")
        if self.target_acc is not None and not 0 < self.target_acc <= 1:
            raise ValueError(f"train config: target_acc is a fraction in (0, 1], got {self.target_acc}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"train config: dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ValueError(f"train config: device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.engine not in ("torch", "c"):
            raise ValueError(f"train config: engine must be torch or c, got {self.engine!r}")
        if self.engine == "c":
            for name, bad in (("device", self.device not in ("auto", "cpu")), ("compile", self.compile),
                              ("dtype", self.dtype == "bfloat16")):
                if bad:
                    raise ValueError(f"train config: engine c trains on the CPU in float32 without torch.compile; "
                                     f"{name}={getattr(self, name)!r} needs engine torch")
        m = self.model
        for name in ("params", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size",
                     "max_seq_len", "head_dim"):
            positive(f"model.{name}", getattr(m, name), allow_none=True)
        if m.params is not None and any(getattr(m, n) is not None for n in ("dim", "n_heads", "n_kv_heads",
                                                                            "hidden_dim")):
            raise ValueError("train config: give either model.params or an explicit shape "
                             "(model.dim, model.n_heads, ...), not both")


# ---- loading -------------------------------------------------------------------------------

def load_file(path: str | Path) -> dict:
    """The raw dict of a TOML or JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            d = json.loads(text)
        else:
            d = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {e}") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a config file must hold a table/object at the top level")
    return d


def parse_value(text: str) -> Any:
    """A command-line value: TOML syntax where it parses (1e-3, true, "x", [1, 2]), else the bare string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(d: dict, item: str) -> None:
    """Apply one `dotted.key=value` override to a raw config dict."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override {item!r}: expected key=value (e.g. lr=3e-3, model.dim=64)")
    parts = key.split(".")
    node = d
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ValueError(f"override {item!r}: {p} is not a table")
        node = child
    node[parts[-1]] = parse_value(value)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> TrainConfig:
    """A validated TrainConfig: `base` (a dict), then the file at `path`, then each override."""
    d: dict = _deep_copy(base or {})
    if path is not None:
        _merge(d, load_file(path))
    for item in overrides or []:
        apply_override(d, item)
    cfg = TrainConfig.from_dict(d)
    cfg.validate()
    return cfg


def _deep_copy(d: dict) -> dict:
    return json.loads(json.dumps(d))


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if k == "task" and isinstance(v, dict):
            into[k] = dict(v)  # a task table replaces the default task as a whole
        elif isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """value converted to the annotated type, or ValueError naming the field."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(name, value, a)
            except ValueError as e:
                errors.append(e)
        raise errors[0]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    want = getattr(hint, "__name__", str(hint))
    raise ValueError(f"train config: {name} must be {'a table' if want == 'dict' else want}, got {value!r}")


def _build(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"train config: {prefix.rstrip('.') or 'config'} must be a table, got {d!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"train config: unknown field {prefix}{unknown[0]} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        hint = hints[f.name]
        if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
            kwargs[f.name] = _build(hint, d[f.name], f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _check_type(prefix + f.name, d[f.name], hint)
    return cls(**kwargs)
