"""What int8 does to a model's answers, and why (no torch).

Three models answer every problem of a task's splits greedily through the C engine:

  fp32          the float32 file
  int8          the Q8_0 file: int8 weights, and activations rounded to int8 groups at every matmul
  weights only  the int8 file's weights expanded back to float32 and run in float32: the
                weight rounding alone, without the activation rounding

so the disagreements of int8 with fp32 split into the part the weight rounding makes (weights only
against fp32) and the part the activation rounding makes (int8 against weights only). Per split and
operation: accuracy of each, answer agreement with a 95% Wilson interval, and the share of fp32's
right answers that int8 keeps.

Why answers flip: for each problem, the smallest gap in fp32 between the log-probabilities of the
best and second-best token over the greedy answer's decisions (its tokens and the closing EOS).
A flip needs the rounding to move the logits by more than that gap, so disagreements gather where
the gap is small: the model was nearly tied between two answers.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import EOS_ID, InspectError, log_softmax, open_model, save_png, table, task_of

GAP_EDGES = (0.01, 0.03, 0.1, 0.3, 1.0)   # the gap table's bins (nats)


@dataclass
class QuantStudy:
    fp32: str
    int8: str
    group_size: int
    task: dict
    splits: dict[str, dict]    # split -> {"ops": [...], "problems": n, "fp32": [...], "int8": [...], "weights": [...]}

    def summary(self) -> dict:
        out = {"fp32": self.fp32, "int8": self.int8, "group_size": self.group_size, "task": self.task, "splits": {}}
        for split, d in self.splits.items():
            out["splits"][split] = {op: compare(d, op) for op in ["all", *sorted(set(d["ops"]))]}
            out["splits"][split]["gaps"] = gap_table(d)
        return out


def weights_only_file(int8_path: str | Path, folder: Path) -> Path:
    """Write the int8 file's weights, expanded to float32, as a v1 file in folder."""
    from tinymath.export import ExportError, encode_bin, from_state_dict, read_bin

    bm = read_bin(int8_path, dequantize=True)
    if bm.version != 2:
        raise InspectError(f"{int8_path} is a version {bm.version} file, not int8 (version 2)")
    try:
        data = encode_bin(from_state_dict(bm.config.model_config(), bm.state_dict()), "v1")
    except ExportError as e:
        raise InspectError(f"{int8_path}: {e}") from None
    path = folder / "weights_only.bin"
    path.write_bytes(data)
    return path


def smallest_gaps(model, prompts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(greedy answers, smallest top-2 log-probability gap over each answer's decisions) in fp32."""
    answers, gaps = [], np.empty(len(prompts))
    for i, p in enumerate(prompts):
        ids = model.encode(p)
        gen = model.generate_tokens(ids, temperature=0.0, stop=EOS_ID)
        seq = ids + list(gen.tokens)
        lp = log_softmax(model.logits(seq))
        last = len(seq) - 1 if len(seq) < model.context else len(seq) - 2  # the EOS decision, when there was room
        top2 = np.sort(lp[len(ids) - 1:last + 1], axis=-1)[:, -2:]
        gaps[i] = float((top2[:, 1] - top2[:, 0]).min())
        answers.append(model.decode(list(gen.tokens)).strip())
    return answers, gaps


def study(fp32: str | Path, int8: str | Path, tokenizer: str | None = None, task: str | None = None,
          splits: Sequence[str] = ("test", "holdout"), limit: int | None = None) -> QuantStudy:
    from tinymath.export import read_header
    from tinymath.tasks import build_splits

    if limit is not None and limit < 1:
        raise InspectError(f"--limit must be positive, got {limit}")
    head32, head8 = read_header(fp32), read_header(int8)
    if head32.version == 2 or head8.version != 2:
        raise InspectError(f"give the float32 file first and the int8 (version 2) file second; got versions "
                           f"{head32.version} and {head8.version}")
    if head32.model_config() != head8.model_config():
        raise InspectError(f"{fp32} and {int8} are not the same shape: their headers differ")
    m32, card, tok = open_model(fp32, tokenizer)
    spec = task_of(card, task)
    built = build_splits(spec)
    unknown = [s for s in splits if s not in built]
    if unknown:
        raise InspectError(f"no split {unknown[0]!r}; the task has {', '.join(built)}")
    result: dict[str, dict] = {}
    with m32, tempfile.TemporaryDirectory(prefix="tinymath-quant-") as tmp:
        wpath = weights_only_file(int8, Path(tmp))
        from tinymath.runc import Model

        with Model(str(int8), tokenizer=str(tok)) as m8, Model(str(wpath), tokenizer=str(tok)) as mw:
            for split in splits:
                problems = built[split][:limit] if limit else built[split]
                if not problems:
                    continue
                prompts = [p.prompt for p in problems]
                a32, gaps = smallest_gaps(m32, prompts)
                result[split] = {"ops": [p.op for p in problems], "expected": [p.answer for p in problems],
                                 "prompts": prompts, "fp32": a32, "int8": m8.solve(prompts, steps=True),
                                 "weights": mw.solve(prompts, steps=True), "gap": gaps.tolist()}
    return QuantStudy(str(fp32), str(int8), head8.group_size, spec.to_dict(), result)


def _share(k: int, n: int) -> dict:
    from tinymath.tasks.score import wilson

    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def compare(d: dict, op: str) -> dict:
    """Accuracies, agreements and kept right answers over the problems of one op ("all": every one)."""
    idx = [i for i, o in enumerate(d["ops"]) if op in ("all", o)]
    exp = [d["expected"][i] for i in idx]
    col = {k: [d[k][i] for i in idx] for k in ("fp32", "int8", "weights")}
    same = lambda a, b: sum(x == y for x, y in zip(col[a], col[b]))  # noqa: E731
    right = [j for j, e in enumerate(exp) if col["fp32"][j] == e]
    return {"n": len(idx),
            "accuracy": {k: sum(a == e for a, e in zip(v, exp)) / len(idx) for k, v in col.items()},
            "int8=fp32": _share(same("int8", "fp32"), len(idx)),
            "weights=fp32": _share(same("weights", "fp32"), len(idx)),
            "int8=weights": _share(same("int8", "weights"), len(idx)),
            "kept_right": _share(sum(col["int8"][j] == col["fp32"][j] for j in right), len(right))}


def gap_table(d: dict) -> list[dict]:
    """For bins of fp32's smallest top-2 gap: how many problems, and how many int8 answers differently."""
    gap = np.asarray(d["gap"])
    flip = np.array([a != b for a, b in zip(d["int8"], d["fp32"])])
    rows, lo = [], 0.0
    for hi in (*GAP_EDGES, float("inf")):
        sel = (gap >= lo) & (gap < hi)
        rows.append({"from": lo, "to": None if hi == float("inf") else hi, "problems": int(sel.sum()),
                     "flipped": int((sel & flip).sum())})
        lo = hi
    return rows


def format_summary(s: dict) -> str:
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731
    agree = lambda a: (f"{pct(a['rate'])} ({pct(a['ci95'][0])}-{pct(a['ci95'][1])})"  # noqa: E731
                       if a["n"] else "-")
    rows = []
    for split, ops in s["splits"].items():
        for op, c in ops.items():
            if op == "gaps":
                continue
            acc = c["accuracy"]
            rows.append([split, op, c["n"], pct(acc["fp32"]), pct(acc["int8"]), pct(acc["weights"]),
                         agree(c["int8=fp32"]), agree(c["weights=fp32"]), agree(c["int8=weights"]),
                         agree(c["kept_right"])])
    out = [f"int8 {s['int8']} (Q8_0, group size {s['group_size']}) against fp32 {s['fp32']}",
           table(["split", "op", "n", "acc fp32", "acc int8", "acc w-only", "int8 = fp32 (95% CI)",
                  "weights only = fp32", "int8 = weights only", "fp32's right kept"], rows),
           "(weights only: the int8 weights run in float32, i.e. the weight rounding alone; int8 = weights only:"
           " what rounding the activations adds)"]
    for split, ops in s["splits"].items():
        gaps = ops["gaps"]
        flips = sum(g["flipped"] for g in gaps)
        out.append(f"\n{split}: fp32's smallest top-2 log-probability gap along each answer, and the answers int8 "
                   f"changes ({flips} in all):")
        out.append(table(["gap (nats)", "problems", "int8 differs", "share"],
                         [[f"{g['from']:g}-{'' if g['to'] is None else format(g['to'], 'g')}", g["problems"],
                           g["flipped"], f"{100 * g['flipped'] / g['problems']:.1f}%" if g["problems"] else "-"]
                          for g in gaps]))
    return "\n".join(out)


def plot(s: dict, path: str | Path) -> Path:
    from .common import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    split = next(iter(s["splits"]))
    ops = [op for op in s["splits"][split] if op != "gaps"]
    x = np.arange(len(ops))
    for k, (key, label) in enumerate((("int8=fp32", "int8 = fp32"), ("weights=fp32", "weight rounding alone"),
                                      ("int8=weights", "activation rounding alone"))):
        vals = [100 * s["splits"][split][op][key]["rate"] for op in ops]
        axes[0].bar(x + (k - 1) * 0.27, vals, 0.27, label=label)
    axes[0].axhline(99, color="k", lw=0.8, ls="--")
    axes[0].set_xticks(x, ops)
    lowest = min(100 * s["splits"][split][op][key]["rate"] for op in ops
                 for key in ("int8=fp32", "weights=fp32", "int8=weights"))
    axes[0].set_ylim(max(0.0, 5 * np.floor(lowest / 5) - 5), 100.5)
    axes[0].set_ylabel(f"answers the same (%), {split} split")
    axes[0].legend(fontsize=8, loc="lower left")
    gaps = s["splits"][split]["gaps"]
    labels = [f"{g['from']:g}-{'' if g['to'] is None else format(g['to'], 'g')}" for g in gaps]
    shares = [100 * g["flipped"] / g["problems"] if g["problems"] else 0.0 for g in gaps]
    bars = axes[1].bar(range(len(gaps)), shares, color="tab:orange")
    for bar, g in zip(bars, gaps):
        axes[1].annotate(f"{g['flipped']}/{g['problems']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                         ha="center", va="bottom", fontsize=8)
    axes[1].set_xticks(range(len(gaps)), labels, fontsize=8)
    axes[1].set_xlabel("fp32's smallest top-2 log-probability gap along the answer (nats)")
    axes[1].set_ylabel("answers int8 changes (%)")
    fig.suptitle(f"int8 against fp32: {Path(s['int8']).name} (group size {s['group_size']})")
    return save_png(fig, path)
