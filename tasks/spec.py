"""TaskSpec: everything needed to regenerate a task's problems and splits exactly.

A spec is a small JSON-able record (written as spec.json beside generated data
and inside every checkpoint), so any later stage rebuilds the same problems from
it. `build_splits(spec)` returns train / val / test / holdout, deterministic
from the seed:

- Problems are unique strings; each in-range problem lands in exactly one of
  train, val, test (a seeded permutation per op, cut by the fractions), so the
  three are disjoint and every op gets the same fractions.
- Every problem with an operand in the holdout range goes to holdout, and none
  of them is ever in train or val.
- `exclude` names another task whose val, test and holdout problems this one's
  train split leaves out: a curriculum stage never trains on a problem the final
  task evaluates on (count's `19 + 1` is a classic problem), and the stage's
  problems are still rebuilt from specs alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .formats import STEP_FORMATS, AnswerFormat
from .problem import Problem

SPLITS = ("train", "val", "test", "holdout")
TASKS = ("arith", "count", "mod", "dmmath", "file")


@dataclass
class TaskSpec:
    task: str = "arith"
    ops: str = "+-*/"
    lo: int = 0                       # operand range (both operands unless b_lo/b_hi given)
    hi: int = 89
    b_lo: int | None = None
    b_hi: int | None = None
    holdout: tuple[int, int] | None = (90, 99)   # operands held out of training; None: no holdout
    format: str | None = None         # answer format; None: the task's default
    modulus: int = 97                 # mod
    modules: tuple[str, ...] = ()     # dmmath modules
    path: str | None = None           # file
    n: int = 100_000                  # problems to sample when a space is too large to enumerate
    val_frac: float = 0.05
    test_frac: float = 0.10
    max_train: int | None = None      # cap on training problems (a budget lever)
    exclude: dict | None = None       # a task spec whose val/test/holdout prompts train leaves out
    reading: int = 0                  # reading problems added to train (steps format; tasks/reading.py)
    seed: int = 0

    # ---- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["holdout"] = list(self.holdout) if self.holdout is not None else None
        d["modules"] = list(self.modules)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TaskSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"task spec: unknown fields {sorted(unknown)} (known: {sorted(known)})")
        d = dict(d)
        if d.get("holdout") is not None:
            h = d["holdout"]
            if not isinstance(h, (list, tuple)) or len(h) != 2:
                raise ValueError(f"task spec: holdout must be [lo, hi] or null, got {h!r}")
            d["holdout"] = (int(h[0]), int(h[1]))
        if "modules" in d:
            d["modules"] = tuple(d["modules"])
        spec = cls(**d)
        spec.validate()
        return spec

    @classmethod
    def load(cls, path: str | Path) -> "TaskSpec":
        return cls.from_dict(json.loads(Path(path).read_text())["spec"])

    # ---- checks ----------------------------------------------------------------------
    @property
    def a_range(self) -> tuple[int, int]:
        return self.lo, self.hi

    @property
    def b_range(self) -> tuple[int, int]:
        return (self.lo if self.b_lo is None else self.b_lo, self.hi if self.b_hi is None else self.b_hi)

    def answer_format(self) -> AnswerFormat:
        """The task's answer format (its default where `format` is None), sized to its largest operand."""
        default = {"arith": "classic", "count": "classic", "mod": "int", "dmmath": "text", "file": "classic"}
        top = max(self.hi, self.b_range[1], self.holdout[1] if self.holdout else 0, 1)
        return AnswerFormat(self.format or default[self.task],
                            max_operand=self.modulus - 1 if self.task == "mod" else top)

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r} (known: {', '.join(TASKS)})")
        for name in ("n", "modulus"):
            if getattr(self, name) <= 0:
                raise ValueError(f"task spec: {name} must be positive, got {getattr(self, name)}")
        if self.max_train is not None and self.max_train <= 0:
            raise ValueError(f"task spec: max_train must be positive, got {self.max_train}")
        if not (0 <= self.val_frac < 1 and 0 < self.test_frac < 1 and self.val_frac + self.test_frac < 1):
            raise ValueError(f"task spec: need 0 <= val_frac, 0 < test_frac and val_frac + test_frac < 1, "
                             f"got val_frac={self.val_frac}, test_frac={self.test_frac}")
        if self.task in ("arith", "count"):
            for name, (lo, hi) in (("range", self.a_range), ("b range", self.b_range)):
                if lo < 0:
                    raise ValueError(f"task spec: {name} {lo}-{hi}: operands must be >= 0")
                if lo > hi:
                    raise ValueError(f"task spec: {name} {lo}-{hi} is empty (lo > hi)")
            if self.holdout is not None:
                hlo, hhi = self.holdout
                if hlo < 0 or hlo > hhi:
                    raise ValueError(f"task spec: holdout range {hlo}-{hhi} is empty or negative")
                for name, (lo, hi) in (("range", self.a_range), ("b range", self.b_range)):
                    if hlo <= lo and hi <= hhi:
                        raise ValueError(f"task spec: holdout range {hlo}-{hhi} swallows the whole {name} {lo}-{hi}")
        if self.task in ("arith", "mod"):
            allowed = "+-*/" if self.task == "arith" else "+-*"
            if not self.ops:
                raise ValueError("task spec: ops is empty")
            bad = [c for c in self.ops if c not in allowed]
            if bad:
                raise ValueError(f"task spec: unknown op {bad[0]!r} for {self.task} (known: {' '.join(allowed)})")
            if len(set(self.ops)) != len(self.ops):
                raise ValueError(f"task spec: ops {self.ops!r} repeats an op")
        if self.format is not None:
            self.answer_format()  # an unknown name is refused here, with the known ones
        if self.format in STEP_FORMATS and self.task in ("mod", "dmmath"):
            own = "int, reversed, padded, padded-reversed" if self.task == "mod" else "text"
            raise ValueError(f"task spec: the {self.task} task has no {self.format!r} format (its formats: {own}); "
                             f"{', '.join(STEP_FORMATS)} are for arith, count and file")
        if self.task == "file" and not self.path:
            raise ValueError("task spec: the file task needs a path")
        if self.task == "dmmath" and not self.modules:
            raise ValueError("task spec: the dmmath task needs at least one module")
        if self.reading < 0:
            raise ValueError(f"task spec: reading must be >= 0, got {self.reading}")
        if self.reading and (self.task != "arith" or self.format != "steps"):
            raise ValueError(f"task spec: reading problems copy digits into the steps layout, so they need "
                             f"task 'arith' with format 'steps' (got task {self.task!r}, format {self.format!r})")
        if self.exclude is not None:
            if not isinstance(self.exclude, dict):
                raise ValueError(f"task spec: exclude must be a task spec, got {self.exclude!r}")
            TaskSpec.from_dict(self.exclude)


def range_note(spec: TaskSpec, prompt: str) -> str | None:
    """A notice for a typed `a op b =` whose operands the task never trained on (a held-out operand,
    or one outside the task's range), or None. The answer may still be right: it is just not vouched for."""
    parts = prompt.split()
    if spec.task not in ("arith", "count") or len(parts) != 4 or not (parts[0].isdigit() and parts[2].isdigit()):
        return None
    notes = []
    for x, (lo, hi) in ((int(parts[0]), spec.a_range), (int(parts[2]), spec.b_range)):
        if spec.holdout is not None and spec.holdout[0] <= x <= spec.holdout[1]:
            notes.append(f"{x} is a held-out operand (never trained on)")
        elif not lo <= x <= hi:
            notes.append(f"{x} is outside the trained range {lo}-{hi}")
    return "; ".join(dict.fromkeys(notes)) or None


def _generate(spec: TaskSpec) -> list[Problem]:
    from . import arith, dmmath, fileset, mod  # each generator in its own module

    return {"arith": arith.generate, "count": arith.generate_count, "mod": mod.generate,
            "dmmath": dmmath.generate, "file": fileset.generate}[spec.task](spec)


def build_splits(spec: TaskSpec) -> dict[str, list[Problem]]:
    """train / val / test / holdout problems for `spec`, deterministic from spec.seed."""
    spec.validate()
    problems = _generate(spec)
    seen: set[str] = set()
    for p in problems:
        if p.prompt in seen:
            raise AssertionError(f"generator produced {p.prompt!r} twice")  # a bug, not bad input
        seen.add(p.prompt)
    rng = np.random.default_rng(spec.seed)
    out: dict[str, list[Problem]] = {s: [] for s in SPLITS}
    by_op: dict[str, list[Problem]] = {}
    for p in problems:
        if p.region == "holdout":
            out["holdout"].append(p)
        else:
            by_op.setdefault(p.op, []).append(p)
    for op in sorted(by_op):
        group = by_op[op]
        perm = rng.permutation(len(group))
        n_test = max(1, round(len(group) * spec.test_frac))
        n_val = round(len(group) * spec.val_frac)
        if n_test + n_val >= len(group):
            raise ValueError(f"task spec: only {len(group)} problems for op {op!r}: too few to split "
                             f"into train, val ({spec.val_frac}) and test ({spec.test_frac})")
        out["test"] += [group[i] for i in perm[:n_test]]
        out["val"] += [group[i] for i in perm[n_test:n_test + n_val]]
        out["train"] += [group[i] for i in perm[n_test + n_val:]]
    if spec.max_train is not None and spec.max_train < len(out["train"]):
        keep = np.sort(rng.permutation(len(out["train"]))[: spec.max_train])
        out["train"] = [out["train"][i] for i in keep]
    if spec.exclude is not None:
        other = build_splits(TaskSpec.from_dict(spec.exclude))
        unseen = {p.prompt for name in ("val", "test", "holdout") for p in other[name]}
        out["train"] = [p for p in out["train"] if p.prompt not in unseen]
    if spec.reading:
        from . import reading

        lo = min(spec.a_range[0], spec.b_range[0])
        hi = max(spec.a_range[1], spec.b_range[1], spec.holdout[1] if spec.holdout else 0)
        out["train"] += reading.problems(spec.reading, spec.ops, lo, hi, spec.seed)
    return out


def spec_record(spec: TaskSpec, splits: dict[str, list[Problem]]) -> dict:
    """The JSON written beside generated files: the spec and each split's size."""
    return {"spec": spec.to_dict(), "counts": {k: len(v) for k, v in splits.items()}}


