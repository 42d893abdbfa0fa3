"""A tiny study end to end: sweep, interrupt, resume, report; the report agrees with results.jsonl."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinymath.tasks import TaskSpec, build_splits
from tinymath.study.report import (BARS, curve, headline, load_results, smallest_passing, tokens_per_answer,
                                   write_report)
from tinymath.study.sweep import load_study, log_sizes, parse_study, run_config
from tinymath.train.config import TrainConfig

STUDY = """
name = "tiny"
seeds = [0]
sizes = [600, 4000]
[train]
max_steps = 400
batch_size = 64
lr = 0.01
eval_every = 50
[[variants]]
name = "digits-add"
task = { task = "arith", ops = "+-", lo = 0, hi = 9, holdout = [7, 9], val_frac = 0.1, test_frac = 0.2 }
"""


def periodic_steps(metrics: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, metrics.read_text().splitlines()) if "event" not in r]


def sweep_cmd(toml: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tinymath.cli", "sweep", str(toml), *extra]


def test_tiny_study_interrupt_resume_report(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(STUDY)
    study_dir = tmp_path / "tiny"
    # 1. one run, then stop
    r = subprocess.run(sweep_cmd(toml, "--max-runs", "1"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first = study_dir / "runs" / "digits-add-p600-s0" / "result.json"
    assert first.is_file()
    stamp = first.stat().st_mtime_ns
    # 2. interrupt the second run mid-training (SIGINT: the trainer checkpoints and exits)
    proc = subprocess.Popen(sweep_cmd(toml), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = study_dir / "runs" / "digits-add-p4000-s0" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    second = study_dir / "runs" / "digits-add-p4000-s0"
    assert (second / "ckpt.pt").is_file()
    interrupted = not (second / "result.json").is_file()
    steps_before = periodic_steps(metrics)
    # 3. resume: the finished run is skipped, the interrupted one continues from its checkpoint
    r = subprocess.run(sweep_cmd(toml, "--report"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "digits-add-p600-s0: finished earlier, skipped" in r.stdout
    assert first.stat().st_mtime_ns == stamp
    steps_after = periodic_steps(metrics)
    assert steps_after[: len(steps_before)] == steps_before and steps_after == sorted(set(steps_after))
    if interrupted:
        assert steps_after[-1] == 400
    rows = load_results(study_dir / "results.jsonl")
    splits = build_splits(TaskSpec.from_dict(load_study(toml).variants[0].task))
    assert [r["run"] for r in rows] == ["digits-add-p600-s0", "digits-add-p4000-s0"]
    for row in rows:
        assert row["params"] > 0 and row["train"]["steps"] == 400
        for precision in ("fp32", "int8"):
            assert row[precision]["test"]["all"]["n"] == len(splits["test"])
            assert row[precision]["holdout"]["all"]["n"] == len(splits["holdout"])
    # 4. the report's numbers are results.jsonl's
    md = (study_dir / "report.md").read_text()
    table = headline(rows, "digits-add")
    for cells in table:
        assert "| " + " | ".join(cells) + " |" in md
    for op_cells, op in zip(table, ["all", "op +", "op -"]):
        pts = curve(rows, "digits-add", "test", op)
        for bar, cell in zip(BARS, op_cells[1:4]):
            best = smallest_passing(pts, bar)
            assert cell == ("none" if best is None else cell) and (best is None or cell.startswith(f"{best.params:,}"))
    for row in rows:
        exact = 100 * row["fp32"]["test"]["all"]["exact"]
        assert re.search(rf"\| {row['run']} \| {row['params']:,} \| 0 \| {exact:.2f}% \|", md)
    # compute per answer: tokens generated per answer, per split and op, and its plot
    for row in rows:
        tokens = row["answer_tokens"]["fp32"]["test"]
        assert set(tokens) == {"all", "+", "-"} and all(1 <= v <= 20 for v in tokens.values()), tokens
    assert (study_dir / "accuracy_vs_answer_compute.png").stat().st_size > 2000
    # 5. two studies reported together: a second study whose runs differ by variant name
    other = tmp_path / "other"
    other.mkdir()
    renamed = [{**r, "run": r["run"].replace("digits-add", "other"), "group": "other",
                "run_dir": str(study_dir / r["run_dir"])} for r in rows]
    (other / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in renamed))
    merged = write_report(study_dir, [other], tmp_path / "merged")
    md = merged.read_text()
    assert "## digits-add" in md and "## other" in md and (tmp_path / "merged" / "groups_compared.png").is_file()
    with pytest.raises(ValueError, match="share run names"):
        write_report(study_dir, [study_dir], tmp_path / "dup")
    # the same study twice under two labels: each label a group holding all its runs
    md = write_report(f"{study_dir}=first", [f"{study_dir}=second"], tmp_path / "labelled").read_text()
    assert "## first" in md and "## second" in md and "| first/digits-add-p600-s0 |" in md
    with pytest.raises(ValueError, match="empty label"):
        write_report(f"{study_dir}=", [], tmp_path / "nolabel")
    # a direct-answer run recorded before tokens per answer were counted: its expected answers' length,
    # within half a token of what the sweep counted for this model (even one mostly wrong)
    for row in rows:
        counted, known = tokens_per_answer(row)
        old = {k: v for k, v in row.items() if k != "answer_tokens"}
        estimate, estimated_known = tokens_per_answer(old)
        assert known and not estimated_known and abs(estimate - counted) <= 0.5, (estimate, counted)
        assert tokens_per_answer({**old, "task": {**old["task"], "format": "steps"}}) is None
    # 6. a changed study file does not silently reuse runs made under the old one
    toml.write_text(STUDY.replace("max_steps = 400", "max_steps = 500"))
    r = subprocess.run(sweep_cmd(toml), capture_output=True, text=True)
    assert r.returncode != 0 and "digits-add-p600-s0" in r.stderr and "another configuration" in r.stderr
    for png in ("accuracy_vs_params.png", "holdout_vs_inrange.png", "accuracy_vs_compute.png", "training_curves.png"):
        data = (study_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_shards_are_disjoint_and_cover_the_study():
    study = parse_study({"sizes": [1, 2, 3], "seeds": [0, 1], "variants": [{"name": "a", "task": {}},
                                                                             {"name": "b", "task": {}}]})
    names = [r.name for r in study.runs()]
    shards = [[n for i, n in enumerate(names) if i % 3 == k] for k in range(3)]
    assert sorted(sum(shards, [])) == sorted(names) and len(set(names)) == 12


def test_log_sizes_and_bad_studies(tmp_path):
    sizes = log_sizes(1000, 3_000_000, 10)
    assert sizes[0] == 1000 and sizes[-1] == 3_000_000 and len(sizes) == 10
    assert all(b / a == pytest.approx(sizes[1] / sizes[0], rel=0.01) for a, b in zip(sizes, sizes[1:]))
    with pytest.raises(ValueError, match="sizes"):
        parse_study({"sizes": []})
    with pytest.raises(ValueError, match="unknown keys"):
        parse_study({"sizes": [10], "sedes": [1]})
    with pytest.raises(ValueError, match="name"):
        parse_study({"sizes": [10], "variants": [{"name": "a b"}]})
    bad = tmp_path / "bad.toml"
    bad.write_text("sizes = [")
    with pytest.raises(ValueError, match="bad.toml"):
        load_study(bad)
    r = subprocess.run([sys.executable, "-m", "tinymath.cli", "sweep", str(tmp_path / "none.toml")],
                       capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 2 and "study file not found" in r.stderr


def test_a_variant_can_fix_its_shape(tmp_path):
    """model.dim in a variant: the run trains that exact shape (here grouped-query attention, which the
    size rule never picks), not the rule's shape for the study's size."""
    gqa = {"name": "gqa", "task": {}, "model": {"dim": 32, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 64}}
    study = parse_study({"sizes": [19232], "variants": [gqa, {"name": "rule", "task": {}}]})
    by_name = {r.variant.name: run_config(r, tmp_path, {}) for r in study.runs()}
    assert by_name["gqa"]["model"] == gqa["model"] and by_name["rule"]["model"] == {"params": 19232}
    TrainConfig.from_dict(by_name["gqa"]).validate()
    with pytest.raises(ValueError, match="one size"):
        parse_study({"sizes": [1000, 2000], "variants": [gqa]})


def test_curriculum_stages_chain_weights(tmp_path):
    """Stages train in turn, each from the previous stage's weights, on one tokenizer for all of them."""
    from tinymath.tokenizer import Tokenizer
    from tinymath.train.checkpoint import load_checkpoint

    toml = tmp_path / "cur.toml"
    toml.write_text("""
seeds = [0]
sizes = [600]
[train]
max_steps = 30
batch_size = 32
eval_every = 30
[[variants]]
name = "cur"
task = { task = "arith", ops = "+", lo = 0, hi = 19 }
stages = [{ task = { task = "count", lo = 0, hi = 19 }, train = { max_steps = 20 } },
          { task = { task = "arith", ops = "+", lo = 0, hi = 5 } }]
""")
    r = subprocess.run(sweep_cmd(toml, "--out", str(tmp_path / "cur")), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "cur" / "runs" / "cur-p600-s0"
    s0, s1, final = (load_checkpoint(run / d / "ckpt.pt") for d in ("stage0", "stage1", "."))
    assert (s0["step"], s1["step"], final["step"]) == (20, 30, 30)
    assert s1["train_config"]["init_from"] == str(run / "stage0" / "ckpt.pt")
    assert final["train_config"]["init_from"] == str(run / "stage1" / "ckpt.pt")
    tok = Tokenizer.load(run / "tokenizer-all" / "tokenizer.bin")
    for d in ("stage0", "stage1", "."):
        assert (run / d / "tokenizer.bin").read_bytes() == (run / "tokenizer-all" / "tokenizer.bin").read_bytes()
    assert tok.vocab_size == final["model"]["tok_embeddings.weight"].shape[0]
    row = json.loads((run / "result.json").read_text())
    assert row["train"]["tokens"] == s0["tokens_seen"] + s1["tokens_seen"] + final["tokens_seen"]
    assert row["config"]["stages"][0]["task"]["task"] == "count"
    # no stage trained on a problem the final task tests on (count's `5 + 1` is also an addition problem)
    final_splits = build_splits(TaskSpec.from_dict(row["config"]["task"]))
    unseen = {p.prompt for name in ("val", "test", "holdout") for p in final_splits[name]}
    for stage in (s0, s1):  # each stage's problems rebuilt from the spec its checkpoint records
        trained = {p.prompt for p in build_splits(TaskSpec.from_dict(stage["task"]))["train"]}
        assert trained and not trained & unseen
    count_all = build_splits(TaskSpec.from_dict(row["config"]["stages"][0]["task"]))["train"]
    assert any(p.prompt in unseen for p in count_all)  # so the filter had something to remove


def test_sweep_shows_each_runs_training_progress(tmp_path, capsys):
    """Minutes of training are not silent: with progress on, each run's trainer draws its bar (and a
    finished run is still skipped when only the bar setting differs: it is not part of the run)."""
    from tinymath.study.sweep import sweep

    toml = tmp_path / "p.toml"
    toml.write_text(STUDY.replace("sizes = [600, 4000]", "sizes = [600]").replace("max_steps = 400", "max_steps = 20")
                    .replace("eval_every = 50", "eval_every = 20"))
    sweep(toml, tmp_path / "p", progress=True)
    err = capsys.readouterr().err
    assert "train digits-add-p600-s0" in err and "20/20" in err, err[-500:]
    lines = []
    sweep(toml, tmp_path / "p", progress=False, log=lines.append)
    assert lines == ["[1/1] digits-add-p600-s0: finished earlier, skipped"]
