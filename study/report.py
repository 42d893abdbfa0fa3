"""`tinymath report STUDY_DIR [MORE...]`: results.jsonl -> report.md and PNG plots (no torch).

results.jsonl holds one JSON object per finished run (written by the sweep):

    run      unique run name            group   the study variant ("classic", "format=reversed", ...)
    seed     int                        params  exact trained-parameter count
    model    ModelConfig dict           task    TaskSpec dict
    train    {"steps", "tokens", "wall_s", "device", "flops"}
    fp32     {"test": GROUPS, "holdout": GROUPS}   GROUPS: ScoreReport summaries by group name
    int8     the same for the int8 file            ("all", "op +", ..., each {"n", "exact", "exact_ci95", ...})
    answer_tokens  {"fp32": {split: {"all": mean, "+": mean, ...}}, "int8": ...}: tokens generated per
             answer (EOS not counted); absent in results from before it was recorded (a direct
             answer's are then its expected answer's: see tokens_per_answer)
    run_dir  the run's folder (metrics.jsonl there gives training curves)

A model passes a bar on a split when the mean exact-match over its seeds reaches
it; the headline gives, for each op, the smallest such model and the spread
(min-max) of its seeds. Every number in report.md is computed here from
results.jsonl, so the report can always be rebuilt from it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tinymath import fileio
from tinymath.tasks import STEP_FORMATS, TaskSpec, build_splits

BARS = (0.70, 0.90, 0.99)
OPS = ("all", "op +", "op -", "op *", "op /")


def load_results(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}")
    rows = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{no}: not a JSON line ({e})") from None
    return rows


def exact(row: dict, split: str, op: str, precision: str = "fp32") -> float | None:
    g = row.get(precision, {}).get(split, {}).get(op)
    return None if g is None or not g.get("n") else float(g["exact"])


@dataclass
class Point:
    params: int
    values: list[float]  # one per seed

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)


def curve(rows: list[dict], group: str, split: str, op: str, precision: str = "fp32") -> list[Point]:
    """Exact-match against parameters for one group, seeds gathered per size."""
    # gathered by the study's size target, so two targets that resolve to one shape stay apart
    by_size: dict[tuple[int, int], list[float]] = defaultdict(list)
    for r in rows:
        if r["group"] == group:
            v = exact(r, split, op, precision)
            if v is not None:
                by_size[(int(r["params"]), int(r.get("size_target", r["params"])))].append(v)
    return [Point(p, v) for (p, _), v in sorted(by_size.items())]


def smallest_passing(points: list[Point], bar: float) -> Point | None:
    for p in points:
        if p.mean >= bar:
            return p
    return None


def groups_of(rows: list[dict]) -> list[str]:
    return sorted({r["group"] for r in rows}, key=lambda g: (g != "classic", g))


def ops_of(rows: list[dict]) -> list[str]:
    present = {op for r in rows for op in r.get("fp32", {}).get("test", {})}
    return [op for op in OPS if op in present] + sorted(o for o in present if o.startswith("op ") and o not in OPS)


def _cell(p: Point | None) -> str:
    if p is None:
        return "none"
    spread = f"{100 * min(p.values):.1f}-{100 * max(p.values):.1f}%" if len(p.values) > 1 else f"{100 * p.values[0]:.1f}%"
    return f"{p.params:,} ({spread}, {len(p.values)} seed{'s' if len(p.values) > 1 else ''})"


def headline(rows: list[dict], group: str) -> list[list[str]]:
    """Rows of the headline table for one group: op, then the smallest size per bar per split."""
    out = []
    for op in ops_of(rows):
        cells = [op.replace("op ", "")]
        for split in ("test", "holdout"):
            pts = curve(rows, group, split, op)
            cells += [_cell(smallest_passing(pts, bar)) if pts else "-" for bar in BARS]
        out.append(cells)
    return out


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def study_arg(text: str | Path) -> tuple[Path, str | None]:
    """A study on the command line: `DIR`, or `DIR=LABEL` to report all its runs as one group LABEL."""
    path, sep, label = str(text).partition("=")
    if sep and not label.strip():
        raise ValueError(f"study {text!r}: an empty label after '='")
    return Path(path), (label.strip() if sep else None)


def load_studies(study_dirs: list[tuple[Path, str | None]]) -> list[dict]:
    """Every finished run of several studies, each run_dir made absolute. A study given a label has
    all its runs in one group of that name (a ladder drawn across studies), each run named
    `LABEL/run`; runs are otherwise named by group, so two studies' runs stay apart as long as
    their variant names differ."""
    rows = []
    for d, label in study_dirs:
        for r in load_results(d / "results.jsonl"):
            r["run_dir"] = str((d / r.get("run_dir", "")).resolve())
            if label:
                r["group"], r["run"] = label, f"{label}/{r['run']}"
            rows.append(r)
    names = [r["run"] for r in rows]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        where = ", ".join(str(d) for d, _ in study_dirs)
        raise ValueError(f"studies {where} share run names {dup[:3]}: rename a variant or label the studies")
    return rows


def write_report(study_dir: str | Path, more: list[str | Path] = (), out_dir: str | Path | None = None) -> Path:
    """report.md and plots for one study, or several merged (written to out_dir, default the first);
    each study a folder, or `FOLDER=LABEL` (see study_arg)."""
    studies = [study_arg(study_dir), *map(study_arg, more)]
    dirs = [d for d, _ in studies]
    rows = load_studies(studies)
    if not rows:
        raise ValueError(f"{dirs[0] / 'results.jsonl'} has no finished runs")
    study = Path(out_dir) if out_dir else dirs[0]
    study.mkdir(parents=True, exist_ok=True)
    plots = make_plots(rows, study)
    head = ["op"] + [f"test {int(100 * b)}%" for b in BARS] + [f"holdout {int(100 * b)}%" for b in BARS]
    md = [f"# Study report: {' + '.join(d.name for d in dirs)}", "",
          f"{len(rows)} finished runs, {len({r['params'] for r in rows})} sizes, "
          f"{len({r['seed'] for r in rows})} seeds, groups: {', '.join(groups_of(rows))}.", "",
          "Exact-match on problems never trained on. A size passes a bar when the mean over its seeds "
          "reaches it; each cell is the smallest passing model's parameter count, with its seeds' spread.", ""]
    for group in groups_of(rows):
        md += [f"## {group}", "", _md_table(head, headline(rows, group)), ""]
    md += ["## All runs", "", _md_table(
        ["run", "params", "seed", "test exact", "95% CI", "holdout exact", "int8 test", "steps", "wall s", "device"],
        [[r["run"], f"{r['params']:,}", str(r["seed"]), _pct(exact(r, "test", "all")),
          _ci(r), _pct(exact(r, "holdout", "all")), _pct(exact(r, "test", "all", "int8")),
          str(r["train"]["steps"]), f"{r['train']['wall_s']:.0f}", r["train"].get("device", "?")]
         for r in sorted(rows, key=lambda r: (r["group"], r["params"], r["seed"]))]), ""]
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    out = study / "report.md"
    fileio.write_text(out, "\n".join(md))
    return out


def tokens_per_answer(row: dict, split: str = "test") -> tuple[float, bool] | None:
    """Mean tokens an answer takes on `split` and whether they were counted: as the sweep recorded
    them (True), or for a run recorded before it counted them whose task writes direct answers with
    the digits tokenizer, the expected answers' length (False): that tokenizer writes one token per
    character, the space before the answer included. None where neither is known."""
    recorded = (row.get("answer_tokens") or {}).get("fp32", {}).get(split, {}).get("all")
    if recorded is not None:
        return recorded, True
    config, task = row.get("config") or {}, row.get("task") or {}
    if (config.get("tokenizer") or config.get("tokenizer_preset", "digits") != "digits"
            or task.get("task") != "arith" or task.get("format") in STEP_FORMATS):
        return None
    return _expected_tokens(json.dumps(task, sort_keys=True), split), False


@lru_cache(maxsize=None)
def _expected_tokens(task: str, split: str) -> float:
    problems = build_splits(TaskSpec.from_dict(json.loads(task)))[split]
    return sum(len(" " + p.answer) for p in problems) / len(problems)


def answer_flops(row: dict, split: str = "test") -> float:
    """Inference FLOPs of one answer: 2 x params per generated token, the closing EOS included."""
    tokens = tokens_per_answer(row, split)
    if tokens is None:
        raise ValueError(f"run {row['run']}: no tokens per answer recorded or known for its task")
    return 2.0 * row["params"] * (tokens[0] + 1)


def compact(x: float) -> str:
    """An axis label: 500, 2K, 50K, 1M, 2G."""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _ci(r: dict) -> str:
    g = r.get("fp32", {}).get("test", {}).get("all")
    return "-" if not g else f"{100 * g['exact_ci95'][0]:.1f}-{100 * g['exact_ci95'][1]:.1f}"


# ---- plots ---------------------------------------------------------------------------------
def make_plots(rows: list[dict], study: Path) -> list[Path]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, ops = groups_of(rows), ops_of(rows)
    written = []

    def save(fig, name: str) -> None:
        path = study / name
        with fileio.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    def bars(ax) -> None:
        # labels at 1, 2 and 5 of each decade, so a span of less than a decade still has some;
        # matplotlib's own minor labels collide
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: compact(x)))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for b in BARS:
            ax.axhline(100 * b, color="grey", ls="--", lw=0.8)
            ax.text(ax.get_xlim()[0], 100 * b, f" {int(100 * b)}%", va="bottom", fontsize=7, color="grey")

    # accuracy against parameters, one panel per op, seeds as points, mean as a line
    # one colour per group in every panel; the legend sits on the first ("all") panel, which has them all
    colour = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    fig, axes = plt.subplots(1, len(ops), figsize=(4 * len(ops), 3.4), squeeze=False, sharey=True)
    for ax, op in zip(axes[0], ops):
        for g in groups:
            pts = curve(rows, g, "test", op)
            if not pts:
                continue
            ax.plot([p.params for p in pts], [100 * p.mean for p in pts], marker="o", label=g, color=colour[g])
            for p in pts:
                ax.scatter([p.params] * len(p.values), [100 * v for v in p.values], s=10, alpha=0.4,
                           color=colour[g])
        ax.set_xscale("log")
        ax.set_title(f"test exact, {op}")
        ax.set_xlabel("parameters")
        bars(ax)
    axes[0][0].set_ylabel("exact match %")
    axes[0][0].legend(fontsize=7)
    save(fig, "accuracy_vs_params.png")

    # in-range against held-out operands
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for g in groups:
        for split, style in (("test", "-"), ("holdout", ":")):
            pts = curve(rows, g, split, "all")
            if pts:
                ax.plot([p.params for p in pts], [100 * p.mean for p in pts], style, marker="o", label=f"{g} {split}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("exact match %")
    ax.set_title("in-range (test) vs held-out operands")
    bars(ax)
    ax.legend(fontsize=7)
    save(fig, "holdout_vs_inrange.png")

    def against(cost, runs: list[dict], xlabel: str, title: str, name: str, counted=lambda r: True) -> None:
        """Test accuracy of each run against a cost of it, one colour per group; a run whose cost is
        estimated (`counted` false) as a hollow marker."""
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for g in groups:
            for known in (True, False):
                pts = [(cost(r), exact(r, "test", "all")) for r in runs if r["group"] == g and counted(r) == known]
                if pts:
                    ax.scatter([p[0] for p in pts], [100 * p[1] for p in pts], s=14, color=colour[g],
                               facecolors=None if known else "none",
                               label=g if known else f"{g} (tokens: expected answers)")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test exact match %")
        ax.set_title(title)
        bars(ax)
        ax.legend(fontsize=7)
        save(fig, name)

    scored = [r for r in rows if exact(r, "test", "all") is not None]
    against(lambda r: r["train"].get("flops") or 6.0 * r["params"] * r["train"]["tokens"], scored,
            "training FLOPs (6 x params x tokens)", "accuracy against training compute", "accuracy_vs_compute.png")
    # accuracy against compute per answer: a steps model writes many tokens, a direct one few, so
    # compare them by what an answer costs (2 x params FLOPs per generated token, EOS included)
    per_answer = [r for r in scored if tokens_per_answer(r) is not None]
    if per_answer:
        against(answer_flops, per_answer, "FLOPs per answer (2 x params x tokens generated)",
                "accuracy against compute per answer", "accuracy_vs_answer_compute.png",
                counted=lambda r: tokens_per_answer(r)[1])

    # groups side by side where a size has several (a study of levers at one size)
    # by size target: a lever that changes the shape (depth, untied) lands on another exact count
    def target(r: dict) -> int:
        return int(r.get("size_target", r["params"]))

    shared = sorted({target(r) for r in rows if len({x["group"] for x in rows if target(x) == target(r)}) > 1})
    compared = [g for g in groups if any(r["group"] == g and target(r) in shared for r in rows)]
    if compared:
        fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(compared) * len(ops) / 2), 3.6))
        width = 0.8 / len(compared)
        for i, g in enumerate(compared):
            vals = []
            for op in ops:
                got = [exact(r, "test", op) for r in rows if r["group"] == g and target(r) in shared]
                got = [v for v in got if v is not None]
                vals.append(100 * sum(got) / len(got) if got else 0.0)
            ax.bar([j + i * width for j in range(len(ops))], vals, width, label=g)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ops))], [op.replace("op ", "") for op in ops])
        ax.set_ylabel("test exact match % (mean of seeds)")
        ax.set_title(f"groups at the same size target ({', '.join(f'{p:,}' for p in shared)} params)")
        for b in BARS:
            ax.axhline(100 * b, color="grey", ls="--", lw=0.8)
        ax.legend(fontsize=7, ncol=2)
        save(fig, "groups_compared.png")

    # training curves of the main group (the first whose runs kept their metrics), every size and
    # seed: validation accuracy and training loss against steps (late jumps in accuracy long after
    # the loss fell are grokking)
    main = next((g for g in groups if any((Path(r["run_dir"]) / "metrics.jsonl").is_file()
                                          for r in rows if r["group"] == g)), groups[0])
    chosen = sorted((r for r in rows if r["group"] == main), key=lambda r: (r["params"], r["seed"]))
    fig, (ax, axl) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors: dict[int, str] = {}
    for r in chosen:
        metrics = Path(r["run_dir"]) / "metrics.jsonl"  # absolute: load_studies resolved it
        if not metrics.is_file():
            continue
        pts = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        pts = [p for p in pts if p.get("val_acc") is not None and "event" not in p]
        if not pts:
            continue
        label = None if r["params"] in colors else f"{r['params']:,}"
        line, = ax.plot([p["step"] for p in pts], [100 * p["val_acc"] for p in pts], lw=1, label=label,
                        color=colors.get(r["params"]))
        colors.setdefault(r["params"], line.get_color())
        axl.plot([p["step"] for p in pts], [p["loss"] for p in pts], lw=1, color=colors[r["params"]])
    ax.set_xlabel("step")
    ax.set_ylabel("val exact match %")
    ax.set_title(f"training curves ({main}, every seed)")
    axl.set_xlabel("step")
    axl.set_ylabel("training loss (answer tokens)")
    axl.set_yscale("log")
    if colors:
        ax.legend(fontsize=7, title="params")
    save(fig, "training_curves.png")
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a study folder holding results.jsonl; FOLDER=LABEL reports all its runs as "
                                 "one group LABEL (a ladder drawn across studies)")
    p.add_argument("more", nargs="*", help="more study folders (or FOLDER=LABEL) to report together with the first")
    p.add_argument("--out", help="where report.md and the plots go (default: the first study folder)")


def run(args: argparse.Namespace) -> int:
    out = write_report(args.study, args.more, args.out)
    print(f"wrote {out} and its plots")
    print(out.read_text().split("## All runs")[0])
    return 0


