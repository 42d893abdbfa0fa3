"""Engine c without torch: the data stream is torch's, checkpoints in the arrays format, training,
Ctrl-C, resuming and exporting with torch absent (a subprocess with sys.modules['torch'] = None,
as tests/test_eval.py does), and the same numbers as with torch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tinymath.train.checkpoint import load_checkpoint, save_array_checkpoint, save_checkpoint
from tinymath.train.config import TrainConfig
from tinymath.train.data import Batches, Encoded
from tinymath.train.torch_rng import TorchGenerator
from tinymath.train.train import train

pytest.importorskip("tinymath.train.engine_c")

NO_TORCH = "import sys; sys.modules['torch'] = None\nfrom tinymath.cli import main\nsys.exit(main({args!r}))"
DIGITS = {"task": "arith", "ops": "+", "lo": 0, "hi": 9, "holdout": None}


def no_torch(*args: str) -> list[str]:
    return [sys.executable, "-c", NO_TORCH.format(args=list(args))]


def cfg_dict(out: Path, **kw) -> dict:
    d = {"out_dir": str(out), "task": dict(DIGITS), "progress": False, "engine": "c",
         "model": {"dim": 16, "n_layers": 1, "n_heads": 2}, "max_steps": 60, "eval_every": 20,
         "batch_size": 32, "lr": 1e-2, "warmup_steps": 5, "test_at_end": True, "threads": 1}
    d.update(kw)
    return d


def same_state(a: dict, b: dict) -> bool:
    eq = [np.array_equal(a["model"][k], b["model"][k]) for k in a["model"]]
    eq += [np.array_equal(x, y) for k in ("exp_avg", "exp_avg_sq")
           for ga, gb in zip(a["optimizer"][k], b["optimizer"][k]) for x, y in zip(ga, gb)]
    return a["model"].keys() == b["model"].keys() and all(eq) and a["optimizer"]["steps"] == b["optimizer"]["steps"]


def untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "time"}


def records(run: Path) -> list[dict]:
    return [untimed(json.loads(x)) for x in (run / "metrics.jsonl").read_text().splitlines()]


# ---- torch's permutations in numpy ---------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 17, 2**33 + 5])
def test_randperm_is_torchs(seed):
    g, t = TorchGenerator(seed), torch.Generator().manual_seed(seed)
    for n in (0, 1, 2, 3, 100, 4097):
        np.testing.assert_array_equal(g.randperm(n), torch.randperm(n, generator=t).numpy())


@pytest.mark.parametrize("bucket", [False, True])
def test_numpy_batches_are_the_torch_batches(bucket):
    rng = np.random.default_rng(0)
    n = 700
    lengths = rng.integers(4, 20, n)
    arrays = (rng.integers(0, 30, (n, 19)), rng.integers(0, 30, (n, 19)), lengths, lengths // 3)
    enc_np = Encoded(list(range(n)), *arrays, prompts=[])
    enc_t = Encoded(list(range(n)), *(torch.from_numpy(a) for a in arrays), prompts=[])
    a, b = Batches(enc_np, 64, 3, bucket), Batches(enc_t, 64, 3, bucket)
    for step in (0, 9, 10, 11, 40):
        xa, ya, ta, na = a.get(step)
        xb, yb, tb, nb = b.get(step)
        assert isinstance(xa, np.ndarray) and isinstance(xb, torch.Tensor)
        np.testing.assert_array_equal(xa, xb.numpy())
        np.testing.assert_array_equal(ya, yb.numpy())
        assert (ta, na) == (tb, nb)


# ---- the arrays format ---------------------------------------------------------------------------

def test_arrays_checkpoint_round_trip_and_damage(tmp_path):
    ck = {"model_config": {"dim": 4}, "model": {"w": torch.arange(6.0).reshape(2, 3)},
          "optimizer": {"exp_avg": [[torch.ones(3)], []], "steps": 3}, "step": 3, "tokens_seen": 5,
          "train_config": {"lr": 0.1}, "tokenizer": "t.bin", "metrics": {"loss": 1.5, "val_acc": None}}
    path = tmp_path / "ckpt.pt"
    save_array_checkpoint(path, ck)
    assert {"model/w", "optimizer/exp_avg/0/0"} <= set(np.load(path).files)
    back = load_checkpoint(path, arrays="numpy")
    np.testing.assert_array_equal(back["model"]["w"], np.arange(6.0, dtype=np.float32).reshape(2, 3))
    assert back["metrics"] == ck["metrics"] and back["optimizer"]["steps"] == 3
    assert isinstance(load_checkpoint(path)["model"]["w"], torch.Tensor)
    save_checkpoint(tmp_path / "torch.pt", ck)  # torch's format reads as numpy too
    assert isinstance(load_checkpoint(tmp_path / "torch.pt", arrays="numpy")["model"]["w"], np.ndarray)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a TinyMath checkpoint|damaged"):
        load_checkpoint(tmp_path / "cut.pt", arrays="numpy")


# ---- training without torch ---------------------------------------------------------------------------

def test_a_run_resumed_without_torch_is_the_run_with_torch(tmp_path):
    """A run started with torch, interrupted, and resumed with torch absent ends bit for bit where the
    uninterrupted run ends, with the same metrics; runc's evaluation equals greedy_eval's."""
    from tinymath.train.greedy_eval import evaluate
    from tinymath.train.model import ModelConfig, Transformer
    from tinymath.tokenizer import Tokenizer
    from tinymath.train.data import encode, load_splits

    longer = {"max_steps": 300, "eval_every": 100}
    full = train(TrainConfig.from_dict(cfg_dict(tmp_path / "full", **longer)))
    assert full["init"] == "torch"
    part = train(TrainConfig.from_dict(cfg_dict(tmp_path / "part", **longer)), interrupt_at=127)
    assert part["interrupted"] and part["step"] == 127
    r = subprocess.run(no_torch("train", "--resume", str(tmp_path / "part" / "ckpt.pt"), "--no-progress"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("ckpt.pt", "best.pt"):
        a, b = (load_checkpoint(tmp_path / run / name, arrays="numpy") for run in ("full", "part"))
        assert same_state(a, b) and untimed(a["metrics"]) == untimed(b["metrics"])
    assert records(tmp_path / "full") == records(tmp_path / "part")
    final = records(tmp_path / "full")[-1]
    assert final["event"] == "final" and final["test_n"] > 0 and 0 < final["val_acc"] < 1
    # the torch evaluator on the same weights gives the same numbers
    ck = load_checkpoint(tmp_path / "full" / "ckpt.pt")
    model = Transformer(ModelConfig.from_dict(ck["model_config"]))
    model.load_state_dict(ck["model"])
    tok = Tokenizer.load(tmp_path / "full" / "tokenizer.bin")
    splits, task = load_splits(DIGITS, None, 0)
    for split in ("val", "test"):
        got = evaluate(model, encode(splits[split], tok), tok, torch.device("cpu"))
        assert (got["acc"], got["n"]) == (final[f"{split}_acc"], final[f"{split}_n"])
    # the PyTorch engine starts from the C engine's checkpoint (--init-from)
    tuned = train(TrainConfig.from_dict(cfg_dict(tmp_path / "tuned", engine="torch", max_steps=5,
                                                 init_from=str(tmp_path / "full" / "best.pt"))))
    assert tuned["step"] == 5


def test_ctrl_c_without_torch_then_resume_bit_for_bit_and_export(tmp_path):
    args = ["train", "--no-progress", "--set", "engine=c", "--set", "threads=1", "--set", "max_steps=1500",
            "--set", "eval_every=100", "--set", "batch_size=32", "--set", "test_at_end=false",
            "--set", "model.dim=16", "--set", "model.n_layers=1", "--set", "model.n_heads=2",
            "--set", "task={task='arith', ops='+', lo=0, hi=9, holdout=[8, 9]}"]
    r = subprocess.run(no_torch(*args, "--set", f"out_dir={tmp_path / 'full'}"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    part = tmp_path / "part"
    proc = subprocess.Popen(no_torch(*args, "--set", f"out_dir={part}"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((part / "metrics.jsonl").is_file() and (part / "ckpt.pt").is_file()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err
    stopped = load_checkpoint(part / "ckpt.pt", arrays="numpy")["step"]
    assert 100 <= stopped < 1500
    r = subprocess.run(no_torch("train", "--resume", str(part / "ckpt.pt"), "--no-progress"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = (load_checkpoint(tmp_path / run / "ckpt.pt", arrays="numpy") for run in ("full", "part"))
    assert same_state(a, b) and a["step"] == b["step"] == 1500
    assert records(tmp_path / "full") == records(part)
    # export reads the checkpoint without torch, and writes what it writes with torch
    from tinymath.export import export_checkpoint

    r = subprocess.run(no_torch("export", str(part / "best.pt"), "--format", "v1", "--out", str(tmp_path / "nt.bin")),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    export_checkpoint(part / "best.pt", "v1", tmp_path / "t.bin")
    assert (tmp_path / "nt.bin").read_bytes() == (tmp_path / "t.bin").read_bytes()


# ---- sweep: the engine from the study file or the command line -----------------------------------------

SWEEP = """
name = "eng"
seeds = [0]
sizes = [600]
[train]
max_steps = 40
eval_every = 20
batch_size = 32
{engine}
[[variants]]
name = "digits"
task = {{ task = "arith", ops = "+", lo = 0, hi = 9, holdout = [8, 9] }}
"""


def test_sweep_takes_the_engine_from_the_study_or_the_command_line(tmp_path):
    from tinymath.study.sweep import sweep

    toml = tmp_path / "eng.toml"
    toml.write_text(SWEEP.format(engine=""))
    rows = sweep(toml, tmp_path / "cli", engine="c", log=lambda *a: None)
    assert [r["train"]["engine"] for r in rows] == ["c"]
    assert rows[0]["train"]["kernels"] in ("avx512", "avx2", "portable C")  # which build of the engine ran it
    assert "engine" not in rows[0]["config"]  # how it ran, not what it asked for
    lines = []
    again = sweep(toml, tmp_path / "cli", log=lines.append)  # the study's default engine now: still finished
    assert again == rows and any("finished earlier, skipped" in x for x in lines)
    toml.write_text(SWEEP.format(engine='engine = "c"'))
    rows = sweep(toml, tmp_path / "file", log=lambda *a: None)
    assert rows[0]["train"]["engine"] == "c" and rows[0]["config"]["engine"] == "c"
