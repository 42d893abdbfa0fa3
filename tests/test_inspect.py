"""tinymath inspect on tiny models trained here: the numbers behind each view, and its PNG.

One single-digit addition model is trained (200 steps, ~3.5K parameters, weights
kept at every evaluation), subtraction and multiplication models for the
transfer matrix (fewer steps), and each view is checked:
- tokens: each step's distribution sums to 1, its entropy is -sum p log p of
  that distribution, the chosen token is the argmax and has the engine's own
  log-probability, the answer is solve()'s;
- confidence: answers are solve()'s, confidences are the exp-mean of the
  per-token log-probabilities (EOS included), AUROC against a pairwise count,
  the coverage curve ends at the overall accuracy, which is `eval`'s;
- internals: torch logits equal the engine's, attention rows are causal and sum
  to 1, integrated gradients add up to logp(input) - logp(baseline);
- transfer: the matrix's diagonal equals each model's own `tinymath eval`, and
  the engine's answer loss equals the trainer's teacher-forced loss;
- training: one point per evaluation and per snapshot, entropies in [0, log V].
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from tinymath.cli import main as cli_main  # noqa: E402

DIGITS = {"task": "arith", "ops": "+", "lo": 0, "hi": 9, "holdout": None}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]


def _train(out: Path, task: dict, steps: int, eval_every: int, snapshots: bool = False) -> Path:
    from tinymath.export import export_checkpoint
    from tinymath.inspect.training import SnapshotSaver
    from tinymath.train.config import TrainConfig
    from tinymath.train.train import train

    cfg = TrainConfig.from_dict({"out_dir": str(out), "task": task, "model": {"params": 3000},
                                 "max_steps": steps, "eval_every": eval_every, "progress": False})
    train(cfg, overwrite=True, on_eval=SnapshotSaver(out) if snapshots else None)
    export_checkpoint(out / "best.pt", "v1", out / "model.bin")
    return out / "model.bin"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inspect")


@pytest.fixture(scope="module")
def add_model(work) -> Path:
    return _train(work / "add", DIGITS, 200, 50, snapshots=True)


@pytest.fixture(scope="module")
def task_models(work, add_model) -> list[Path]:
    sub = _train(work / "sub", {**DIGITS, "ops": "-"}, 120, 60)
    mul = _train(work / "mul", {**DIGITS, "ops": "*"}, 120, 60)
    return [add_model, sub, mul]


def _png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000, f"{path}: not a drawn PNG ({len(data)} bytes)"


def _open_tokenizer(path: Path) -> Path:
    from tinymath.inspect.common import open_model

    model, _, tok = open_model(path)
    model.close()
    return tok


def _open(path: Path):
    from tinymath.inspect.common import open_model

    return open_model(path)[0]


# ---- tokens ------------------------------------------------------------------------------------------

def test_trace_probabilities_and_entropy(add_model, work):
    from tinymath.inspect.common import EOS_ID
    from tinymath.inspect.tokens import plot_trace, trace

    with _open(add_model) as m:
        for prompt in ("2 + 3 =", "9 + 9 =", "0 + 0 ="):
            t = trace(m, prompt, k=4, keep_probs=True)
            assert t.answer == m.solve([prompt])[0]
            gen = m.generate_tokens(prompt, temperature=0.0)
            assert t.tokens == gen.tokens
            assert len(t.steps) == len(t.tokens) + 1 and t.steps[-1].token == EOS_ID  # the stop is shown
            for s in t.steps:
                p = s.probs
                assert p.shape == (m.vocab_size,) and np.all(p >= 0)
                assert abs(p.sum() - 1) < 1e-9
                assert abs(s.entropy - float(-(p[p > 0] * np.log(p[p > 0])).sum())) < 1e-9
                assert 0 <= s.entropy <= math.log(m.vocab_size) + 1e-9
                assert s.token == int(np.argmax(p)) and abs(s.prob - p[s.token]) < 1e-12
                assert abs(s.logprob - math.log(s.prob)) < 1e-9
                probs = [c[2] for c in s.top]
                assert len(s.top) == 4 and probs == sorted(probs, reverse=True) and s.top[0][0] == s.token
            # the engine's own log-probabilities of the generated tokens
            assert np.allclose([s.logprob for s in t.steps[:-1]], gen.logprobs, atol=1e-4)
    _png(plot_trace(t, work / "trace.png"))


def test_prompt_view_cli(add_model, work, capsys):
    out = work / "out-prompt"
    assert cli_main(["inspect", str(add_model), "7 + 8", "--out", str(out), "-k", "3"]) == 0
    text = capsys.readouterr().out
    assert "7 + 8 =" in text and "entropy" in text and "integrated gradients" in text
    for kind in ("tokens", "attention", "attribution"):
        _png(out / f"add_{kind}.png")
    d = json.loads((out / "add_inspect.json").read_text())
    with _open(add_model) as m:
        assert d["answer"] == m.solve(["7 + 8 ="])[0]
    maps = np.asarray(d["attention"])
    assert maps.shape[2] == maps.shape[3] == len(d["prompt_ids"]) + len(d["tokens"])
    # --no-torch: only the engine's view
    out2 = work / "out-prompt-notorch"
    assert cli_main(["inspect", "prompt", str(add_model), "1 + 1 =", "--no-torch", "--out", str(out2)]) == 0
    assert (out2 / "add_tokens.png").is_file() and not (out2 / "add_attention.png").exists()


# ---- internals (torch) ---------------------------------------------------------------------------------

def test_attention_and_attribution(add_model):
    from tinymath.inspect import internals
    from tinymath.inspect.tokens import trace

    ckpt = internals.find_checkpoint(add_model)
    tm, _ = internals.load_torch_model(ckpt)
    # the .bin's own weights (no checkpoint found) give the same model, as run by the C engine
    (add_model.parent / "lone").mkdir(exist_ok=True)
    lone = add_model.parent / "lone" / add_model.name
    shutil.copy(add_model, lone)
    shutil.copy(add_model.parent / "tokenizer.bin", lone.parent / "tokenizer.bin")
    from_bin, config, source = internals.load_model_behind(lone)
    assert "its own weights" in source and config["dim"] == tm.cfg.dim
    assert all(torch.equal(v, from_bin.state_dict()[k]) for k, v in tm.state_dict().items())
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):  # a named one is never replaced
        internals.load_model_behind(lone, str(lone.parent / "missing.pt"))
    with _open(add_model) as m:
        t = trace(m, "4 + 5 =")
        assert np.abs(internals.logits(tm, t.ids) - m.logits(t.ids)).max() < 1e-3
        space = next(i for i in range(m.vocab_size) if m.decode([i], prev=2) == " ")
    maps = internals.attention_maps(tm, t.ids)
    n = len(t.ids)
    assert maps.shape == (tm.cfg.n_layers, tm.cfg.n_heads, n, n)
    assert np.allclose(maps.sum(-1), 1, atol=1e-5)
    assert np.all(np.triu(maps, 1) == 0)  # causal: no query sees a later key
    for j in range(len(t.tokens)):
        pos = len(t.prompt_ids) - 1 + j
        r = internals.attribution(tm, t.ids, pos, t.tokens[j], space)
        assert len(r["grad_x_input"]) == len(r["integrated_gradients"]) == pos + 1
        assert abs(r["logprob"] - t.steps[j].logprob) < 1e-4
        diff = r["logprob"] - r["ig_baseline_logprob"]
        assert abs(sum(r["integrated_gradients"]) - diff) < 0.02 * max(1.0, abs(diff))  # completeness
        assert r["integrated_gradients"][0] == 0.0  # BOS is its own baseline


# ---- confidence ----------------------------------------------------------------------------------------

def test_auroc_and_curves():
    from tinymath.inspect.confidence import auroc, calibration, coverage_curve, thresholds

    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5] * 4, [True, False, True, False]) == 0.5
    assert auroc([0.3, 0.4], [True, True]) is None
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60) / 4
    y = rng.random(60) < s
    pairs = [(a > b) + 0.5 * (a == b) for a, ya in zip(s, y) for b, yb in zip(s, y) if ya and not yb]
    assert abs(auroc(s, y) - sum(pairs) / len(pairs)) < 1e-12
    bins = calibration(s, y)
    assert sum(b["n"] for b in bins) == 60
    curve = coverage_curve(s, y)
    assert curve[-1]["coverage"] == 1.0 and abs(curve[-1]["accuracy"] - y.mean()) < 1e-12
    assert all(a["coverage"] < b["coverage"] and a["threshold"] > b["threshold"] for a, b in zip(curve, curve[1:]))
    for t in thresholds(curve):
        assert t["threshold"] is None or t["accuracy"] >= t["target"] - 1e-12


def test_confidence_study(add_model, work, capsys):
    from tinymath.inspect.confidence import solve_with_confidence
    from tinymath.inspect.tokens import trace
    from tinymath.study.evaluate import evaluate

    with _open(add_model) as m:
        prompts = [f"{a} + {b} =" for a in range(10) for b in range(0, 10, 3)]
        answers, confs = solve_with_confidence(m, prompts)
        assert answers == m.solve(prompts)
        for p, c in zip(prompts[:8], confs):
            t = trace(m, p)
            assert 0 < c <= 1
            assert abs(c - math.exp(np.mean([s.logprob for s in t.steps]))) < 1e-4
    out = work / "out-conf"
    assert cli_main(["inspect", "confidence", str(add_model), "--splits", "test,val", "--out", str(out)]) == 0
    assert "AUROC" in capsys.readouterr().out
    _png(out / "add_confidence.png")
    d = json.loads((out / "add_confidence.json").read_text())
    own = evaluate(add_model, splits=("test", "val"), progress=False)["report"].exact
    assert abs(d["accuracy"] - own) < 1e-12 and d["n"] == len(d["problems"])
    assert abs(d["coverage_curve"][-1]["accuracy"] - own) < 1e-12


def test_calc_says_not_sure(add_model, work, capsys):
    with _open(add_model) as m:
        expected = m.solve(["3 + 4 ="])[0]
    assert cli_main(["inspect", "calc", str(add_model), "-i", "3 + 4", "--threshold", "0"]) == 0
    assert capsys.readouterr().out.strip() == expected
    assert cli_main(["inspect", "calc", str(add_model), "-i", "3 + 4", "--threshold", "1.01"]) == 0
    assert capsys.readouterr().out.startswith(f"not sure (maybe {expected}")
    # a threshold near 1 is printed with the digits that decide it (0.997 is not "1.00")
    assert cli_main(["inspect", "calc", str(add_model), "-i", "3 + 4", "--threshold", "0.997"]) == 0
    got = capsys.readouterr()
    assert "0.9970" in got.err and ("< 0.9970" in got.out or got.out.strip() == expected)


def test_calc_threshold_is_this_models_and_said(add_model, work, capsys, monkeypatch):
    """The threshold comes from a confidence study of this very file, and where it came from is said;
    one line the model cannot read is answered with its error, and the session goes on."""
    out = work / "out-calc"
    assert cli_main(["inspect", "confidence", str(add_model), "--splits", "test,val", "--out", str(out)]) == 0
    capsys.readouterr()
    study = json.loads((out / "add_confidence.json").read_text())
    monkeypatch.setattr("sys.stdin", io.StringIO("3 + 4\n3 x 4\n2 + 2\n"))
    assert cli_main(["inspect", "calc", str(add_model), "--out", str(out)]) == 0
    got = capsys.readouterr()
    lines = got.out.strip().splitlines()
    assert len(lines) == 3 and lines[1].startswith("error:") and "'x'" in lines[1], lines
    found = [t["threshold"] for t in study["thresholds"] if abs(t["target"] - 0.99) < 1e-9][0]
    assert (f"in {out / 'add_confidence.json'}" in got.err) == (found is not None), got.err
    # a study of another model file is not used
    study["model_sha256"] = "0" * 64
    (out / "add_confidence.json").write_text(json.dumps(study))
    assert cli_main(["inspect", "calc", str(add_model), "-i", "3 + 4", "--out", str(out)]) == 0
    assert "studied another model file" in capsys.readouterr().err


# ---- transfer ----------------------------------------------------------------------------------------------

def test_transfer_matrix(task_models, work, capsys):
    from tinymath.inspect.transfer import answer_loss
    from tinymath.tasks import TaskSpec, build_splits
    from tinymath.tokenizer import Tokenizer

    out = work / "out-transfer"
    args = ["inspect", "transfer", *map(str, task_models), "--out", str(out)]
    assert cli_main(args) == 0
    assert "own task" in capsys.readouterr().out
    _png(out / "transfer.png")
    r = json.loads((out / "transfer.json").read_text())
    assert len(r["rows"]) == len(r["tasks"]) == 3
    for i, (path, row) in enumerate(zip(task_models, r["rows"])):
        assert row["own_task"] == i
        # the diagonal is the model's own evaluation: `tinymath eval` (which writes MODEL.eval.json)
        assert cli_main(["eval", str(path), "--splits", "test"]) == 0
        own = json.loads(path.with_name("model.eval.json").read_text())["splits"]["test"]["groups"]["all"]["exact"]
        assert row["cells"][i]["accuracy"] == own
        assert all(c["loss"] is not None and c["loss"] > 0 for c in row["cells"])
    capsys.readouterr()
    # the engine's teacher-forced answer loss is the trainer's loss
    from tinymath.inspect.internals import load_torch_model
    from tinymath.train.data import IGNORE, encode

    tm, ck = load_torch_model(task_models[0].parent / "best.pt")
    tok = Tokenizer.load(task_models[0].parent / "tokenizer.bin")
    problems = build_splits(TaskSpec.from_dict(DIGITS))["test"]
    enc = encode(problems, tok)
    with torch.no_grad():
        logits = tm(enc.inputs)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), enc.targets.reshape(-1),
                                            ignore_index=IGNORE).item()
    with _open(task_models[0]) as m:
        loss, n_tok, skipped = answer_loss(m, tok, problems)
    assert skipped == 0 and n_tok == int((enc.targets != IGNORE).sum())
    assert abs(loss - ref) < 1e-4 and abs(r["rows"][0]["cells"][0]["loss"] - ref) < 1e-4


def test_fewshot(add_model, work, capsys):
    out = work / "fewshot"
    task = json.dumps({**DIGITS, "ops": "-"})
    assert cli_main(["inspect", "fewshot", str(add_model.parent / "best.pt"), "--task", task, "--shots", "20",
                     "--steps", "40", "--eval-every", "20", "--out", str(out)]) == 0
    assert "fine-tuned" in capsys.readouterr().out
    _png(out / "fewshot.png")
    r = json.loads((out / "fewshot.json").read_text())
    kinds = {x["kind"]: x for x in r["runs"]}
    assert set(kinds) == {"init", "scratch"} and all(len(x["curve"]) == 2 for x in r["runs"])
    init = torch.load(out / "init-20" / "ckpt.pt", weights_only=True)
    scratch = torch.load(out / "scratch-20" / "ckpt.pt", weights_only=True)
    assert init["train_config"]["init_from"] and not scratch["train_config"]["init_from"]
    shape = ("dim", "n_layers", "n_heads", "hidden_dim", "vocab_size")
    assert all(init["model_config"][k] == scratch["model_config"][k] for k in shape)
    assert init["task"]["max_train"] == scratch["task"]["max_train"] == 20


# ---- over training ---------------------------------------------------------------------------------------------

def test_over_training(add_model, work, capsys):
    from tinymath.inspect.training import over_training, read_metrics

    run = add_model.parent
    out = work / "out-training"
    assert cli_main(["inspect", "training", str(run), "--out", str(out)]) == 0
    capsys.readouterr()
    _png(out / "add_training.png")
    r = json.loads((out / "add_training.json").read_text())
    evals, _ = read_metrics(run)
    assert [e["step"] for e in r["evals"]] == [e["step"] for e in evals] == [50, 100, 150, 200]
    assert [c["step"] for c in r["checkpoints"]] == [50, 100, 150, 200]  # one snapshot per evaluation
    vocab = json.loads(add_model.with_suffix(".json").read_text())["config"]["vocab_size"]
    assert all(0 <= c["entropy"] <= math.log(vocab) and c["loss"] > 0 for c in r["checkpoints"])
    assert r["checkpoints"][0]["entropy"] > r["checkpoints"][-1]["entropy"]  # it grows sure of itself
    # a run folder as the trainer leaves it (ckpt.pt and best.pt only) still gives its points
    plain = work / "plain-run"
    shutil.copytree(run, plain, ignore=shutil.ignore_patterns("snapshots"))
    r2 = over_training(plain)
    assert len(r2["evals"]) == 4 and 1 <= len(r2["checkpoints"]) <= 2
    last = r2["checkpoints"][-1]
    assert last["step"] == 200 and abs(last["entropy"] - r["checkpoints"][-1]["entropy"]) < 1e-9


# ---- int8 against fp32 ---------------------------------------------------------------------------------------

def test_quant_view(add_model, work, capsys):
    from tinymath.export import export_checkpoint
    from tinymath.inspect.common import InspectError
    from tinymath.inspect.quant import study
    from tinymath.inspect.tokens import trace

    q8 = work / "add" / "model.q8.bin"
    export_checkpoint(work / "add" / "best.pt", "v2", q8)
    out = work / "out-quant"
    assert cli_main(["inspect", "quant", str(add_model), str(q8), "--splits", "test,train", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "int8 = fp32" in text and "weights only" in text
    _png(out / "add_quant.png")
    d = json.loads((out / "add_quant.json").read_text())
    for split, probs in d["problems"].items():
        prompts = probs["prompts"]
        with _open(add_model) as m32, _open(q8) as m8:
            a32, a8 = m32.solve(prompts), m8.solve(prompts)
            # the gap, from the token view's top-2 at every decision of the answer (EOS included)
            for i in range(0, len(prompts), max(1, len(prompts) // 12)):
                t = trace(m32, prompts[i], k=2)
                want = min(math.log(s.top[0][2]) - math.log(s.top[1][2]) for s in t.steps)
                assert abs(probs["gap"][i] - want) < 1e-6, prompts[i]
        assert probs["fp32"] == a32 and probs["int8"] == a8
        row = d["splits"][split]["all"]
        same = sum(x == y for x, y in zip(a32, a8))
        assert row["int8=fp32"]["k"] == same and row["n"] == len(prompts)
        right = [i for i, e in enumerate(probs["expected"]) if a32[i] == e]
        assert row["kept_right"]["n"] == len(right)
        assert row["accuracy"]["fp32"] == len(right) / len(prompts)
        gaps = d["splits"][split]["gaps"]
        assert sum(g["problems"] for g in gaps) == len(prompts)
        assert sum(g["flipped"] for g in gaps) == len(prompts) - same
        assert min(probs["gap"]) >= 0
    # a float32 file that is the int8 weights expanded: weight rounding then changes nothing, and all
    # of int8's differences are the activations'
    from tinymath.export import encode_bin, from_state_dict, read_bin

    bm = read_bin(q8, dequantize=True)
    snapped = work / "add" / "snapped.bin"
    snapped.write_bytes(encode_bin(from_state_dict(bm.config.model_config(), bm.state_dict()), "v1"))
    s = study(snapped, q8, tokenizer=str(_open_tokenizer(add_model)), task=json.dumps(DIGITS), splits=("test",)).summary()["splits"]["test"]["all"]
    assert s["weights=fp32"]["rate"] == 1.0 and s["int8=fp32"] == s["int8=weights"]
    # bad input: the files swapped, two different models, a split the task lacks
    with pytest.raises(InspectError, match="float32 file first"):
        study(q8, add_model)
    other = work / "add" / "longer.bin"
    longer = {**bm.config.model_config(), "max_seq_len": bm.config.max_seq_len + 1}
    other.write_bytes(encode_bin(from_state_dict(longer, bm.state_dict()), "v1"))
    with pytest.raises(InspectError, match="not the same shape"):
        study(other, q8)
    with pytest.raises(InspectError, match="no split 'nope'"):
        study(add_model, q8, splits=("nope",))


# ---- layering and the shipped model ----------------------------------------------------------------------------------

def test_engine_views_import_no_torch():
    code = ("import sys, tinymath.inspect.cli, tinymath.inspect.tokens, tinymath.inspect.confidence, "
            "tinymath.inspect.transfer, tinymath.inspect.common, tinymath.inspect.quant; assert 'torch' not in sys.modules, 'torch'; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_nothing_below_imports_inspect_or_serve():
    stages = ["tasks", "tokenizer", "train", "export", "runc"]
    for stage in stages:
        for f in (REPO / stage).rglob("*.py"):
            text = f.read_text(encoding="utf-8", errors="replace")
            for name in ("tinymath.inspect", "tinymath.serve", "from ..inspect", "from ..serve"):
                assert name not in text, f"{f} imports {name}"


SHIPPED = REPO / "models" / "tinymath.bin"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped model (models/tinymath.bin) is not in this checkout")
def test_shipped_model(work, capsys):
    out = work / "shipped"
    lone = work / "shipped-files"  # the shipped files alone: no training checkpoint anywhere near them
    lone.mkdir(exist_ok=True)
    for name in ("tinymath.bin", "tinymath.json", "tokenizer.bin", "tokenizer.model"):
        shutil.copy(SHIPPED.parent / name, lone / name)
    card = json.loads((lone / "tinymath.json").read_text())
    card.pop("source", None)
    (lone / "tinymath.json").write_text(json.dumps(card))
    assert cli_main(["inspect", str(lone / "tinymath.bin"), "24 + 82 =", "--out", str(out)]) == 0
    for kind in ("tokens", "attention", "attribution"):  # no checkpoint is shipped: the .bin's own weights
        _png(out / f"tinymath_{kind}.png")
    assert "its own weights" in json.loads((out / "tinymath_inspect.json").read_text())["checkpoint"]
    assert cli_main(["inspect", "confidence", str(SHIPPED), "--limit", "300", "--out", str(out)]) == 0
    _png(out / "tinymath_confidence.png")
    assert "AUROC" in capsys.readouterr().out
