"""Problems -> token batches.

- `load_splits(cfg)`: the task's train/val/test/holdout problems, regenerated from
  the task spec and its seed, or read from a data file / folder of `prompt = answer` lines.
- `encode(problems, tok)`: every problem as [BOS] + prompt + " answer" + [EOS] in one
  padded tensor, with targets only on the answer tokens (and EOS): the prompt is
  given, never predicted.
- `Batches`: batch k of a run is a pure function of (seed, k): the problems form an
  endless stream of seeded epoch permutations and batch k is stream items
  [k*B, (k+1)*B). Resuming at step k therefore needs no saved data state, and under
  DDP rank r takes rows r, r+world, ... of the same global batch, so the global
  batch does not depend on the number of ranks. Each batch is trimmed to its
  longest row, so no compute goes to columns that are padding everywhere
  (`bucket` groups problems of similar length to cut the rest). The permutations
  are torch's (torch_rng.TorchGenerator draws them in numpy), so the stream is the
  same with torch installed or not.

No torch at import: `encode(..., numpy=True)` and Batches over it serve the C
engine's torch-free loop (train_c.py); without numpy=True the arrays are torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .torch_rng import TorchGenerator

IGNORE = -100  # target of positions that carry no loss (prompt, padding)


@dataclass
class Encoded:
    """A split, tokenized. Row i: tokens[i, :lengths[i]] is the whole problem.

    The arrays are torch tensors, or numpy arrays when encoded with numpy=True.
    """

    problems: list
    inputs: Any              # (N, L-1) int64: tokens[:, :-1], padding 0
    targets: Any             # (N, L-1) int64: next token on answer positions, IGNORE elsewhere
    lengths: Any             # (N,) int64: tokens per problem (BOS .. EOS)
    n_prompt: Any            # (N,) int64: [BOS] + prompt tokens
    prompts: list            # [BOS] + encode(prompt) per problem (for greedy decoding)

    def __len__(self) -> int:
        return len(self.problems)

    @property
    def max_len(self) -> int:
        return int(self.lengths.max()) if len(self.problems) else 0


def encode(problems: list, tok, numpy: bool = False) -> Encoded:
    """Tokenize problems with the shared convention (tokenizer.encode_problem); numpy arrays if `numpy`."""
    rows, n_prompt = [], []
    for p in problems:
        ids, n = tok.encode_problem(p.prompt, p.answer)
        rows.append(ids)
        n_prompt.append(n)
    n = len(rows)
    lmax = max((len(r) for r in rows), default=2)
    tokens = np.zeros((n, lmax), dtype=np.int64)
    targets = np.full((n, lmax - 1), IGNORE, dtype=np.int64)
    for i, (r, k) in enumerate(zip(rows, n_prompt)):
        tokens[i, : len(r)] = r
        # position t predicts token t+1: the answer tokens are k .. len-1 (EOS included)
        targets[i, k - 1: len(r) - 1] = r[k:]
    arrays = (tokens[:, :-1].copy(), targets, np.array([len(r) for r in rows], dtype=np.int64),
              np.array(n_prompt, dtype=np.int64))
    if not numpy:
        import torch

        arrays = tuple(torch.from_numpy(a) for a in arrays)
    return Encoded(list(problems), *arrays, prompts=[r[:k] for r, k in zip(rows, n_prompt)])


# ---- where problems come from ---------------------------------------------------------------

def load_splits(task: dict | None, data: str | None, seed: int = 0) -> tuple[dict, dict]:
    """(splits, task_record): splits maps train/val/test/holdout to problem lists.

    `data` (a file or folder of lines) wins over `task`. A single file is the
    task library's `file` task (split by its seeded permutation); a folder holds
    train.txt, val.txt, test.txt and optionally holdout.txt, used as they are.
    task_record is JSON-able and rebuilds the same splits (saved in checkpoints).
    """
    from tinymath.tasks import TaskSpec, build_splits

    if data is not None:
        path = Path(data)
        if path.is_dir():
            from tinymath.tasks.fileset import read_problems

            splits = {}
            for name in ("train", "val", "test", "holdout"):
                f = path / f"{name}.txt"
                if f.is_file():
                    splits[name] = read_problems(f)
                elif name == "holdout":
                    splits[name] = []
                else:
                    raise FileNotFoundError(f"data folder {path} has no {name}.txt")
            _check_disjoint(splits, str(path))
            return splits, {"task": "folder", "path": str(path.resolve())}
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {path}")
        spec_dict = dict(task or {})
        spec_dict = {"task": "file", "path": str(path.resolve()), "seed": spec_dict.get("seed", seed)}
        spec = TaskSpec.from_dict(spec_dict)
        return build_splits(spec), spec.to_dict()
    spec = TaskSpec.from_dict(dict(task or {}))
    return build_splits(spec), spec.to_dict()


def answer_format(task_record: dict):
    """The answer format of a task record (None for a folder of lines, whose format is unknown)."""
    from tinymath.tasks import TaskSpec

    if task_record.get("task") == "folder":
        return None
    return TaskSpec.from_dict(task_record).answer_format()


def same_answer(fmt) -> Callable[[str, str], bool]:
    """(expected, decoded) -> right? The task format's rule (a format that shows its work is scored
    on its final answer, as `tinymath eval` scores it); the whole answer for a folder of lines."""
    if fmt is None:
        return lambda expected, got: got == expected.strip()
    return fmt.is_right


def subset(enc: Encoded, idx: list[int]) -> Encoded:
    """Rows `idx` of a split, arrays of the same kind."""
    t = np.asarray(idx, dtype=np.int64)
    if not isinstance(enc.inputs, np.ndarray):
        import torch

        t = torch.from_numpy(t)
    return Encoded([enc.problems[i] for i in idx], enc.inputs[t], enc.targets[t], enc.lengths[t],
                   enc.n_prompt[t], [enc.prompts[i] for i in idx])


def _check_disjoint(splits: dict, where: str) -> None:
    train = {p.prompt for p in splits["train"]}
    for name in ("val", "test", "holdout"):
        for p in splits[name]:
            if p.prompt in train:
                raise ValueError(f"{where}: {name}.txt problem {p.prompt!r} is also in train.txt")
    if not splits["train"]:
        raise ValueError(f"{where}: train.txt has no problems")


# ---- batches ---------------------------------------------------------------------------------

class Batches:
    """Batch k as a pure function of (seed, k); see the module docstring. Batches of an Encoded's
    own kind (torch tensors or numpy arrays)."""

    def __init__(self, data: Encoded, batch_size: int, seed: int, bucket: bool = False,
                 rank: int = 0, world: int = 1):
        if len(data) == 0:
            raise ValueError("no training problems")
        self.data, self.batch_size, self.seed, self.bucket = data, batch_size, seed, bucket
        self.rank, self.world = rank, world
        self._epochs: dict[int, np.ndarray] = {}
        self._lengths = np.asarray(data.lengths)
        self._answer_tokens = self._lengths - np.asarray(data.n_prompt)
        self._numpy = isinstance(data.inputs, np.ndarray)

    def epoch_order(self, epoch: int) -> np.ndarray:
        order = self._epochs.get(epoch)
        if order is None:
            g = TorchGenerator(self.seed * 1_000_003 + epoch)
            n = len(self.data)
            order = g.randperm(n)
            if self.bucket:
                # sort chunks of 16 batches by length, then shuffle the batches
                chunk = 16 * self.batch_size
                lens = self._lengths[order]
                order = np.concatenate([order[s:s + chunk][np.argsort(lens[s:s + chunk], kind="stable")]
                                        for s in range(0, n, chunk)])
                nb = n // self.batch_size
                if nb > 1:
                    blocks = order[: nb * self.batch_size].reshape(nb, self.batch_size)[g.randperm(nb)]
                    order = np.concatenate([blocks.reshape(-1), order[nb * self.batch_size:]])
            if len(self._epochs) >= 2:  # a batch spans at most two epochs
                self._epochs.pop(min(self._epochs))
            self._epochs[epoch] = order
        return order

    def global_indices(self, step: int) -> np.ndarray:
        """Problem indices of global batch `step` (0-based)."""
        n, b = len(self.data), self.batch_size
        start = step * b
        parts = []
        while b > 0:
            epoch, off = divmod(start, n)
            take = min(b, n - off)
            parts.append(self.epoch_order(epoch)[off:off + take])
            start += take
            b -= take
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / len(self.data)

    def get(self, step: int) -> tuple[Any, Any, int, int]:
        """(inputs, targets, global tokens, global answer tokens) of this rank's share of batch `step`."""
        idx = self.global_indices(step)
        n_tokens = int(self._lengths[idx].sum())
        n_answer = int(self._answer_tokens[idx].sum())
        local = idx[self.rank::self.world]
        width = int(self._lengths[local].max()) - 1
        if not self._numpy:
            import torch

            local = torch.from_numpy(local)
        return self.data.inputs[local, :width], self.data.targets[local, :width], n_tokens, n_answer
