"""DDP: two CPU processes on the gloo backend under torchrun train a few steps; only rank 0 writes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from tinymath.train.checkpoint import load_checkpoint  # noqa: E402
from tinymath.train.config import TrainConfig  # noqa: E402
from tinymath.train.train import train  # noqa: E402

DIGITS = {"task": "arith", "ops": "+", "lo": 0, "hi": 9, "holdout": None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
def test_torchrun_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "tinymath.cli", "train", "--out", str(out), "--task", json.dumps(DIGITS),
           "--dim", "16", "--n-layers", "1", "--n-heads", "2", "--max-steps", "12", "--eval-every", "4",
           "--batch-size", "32", "--device", "cpu", "--threads", "1", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    # rank 0 alone wrote: one metrics line per evaluation plus the final one, one summary printed
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [4, 8, 12, 12]
    assert lines[-1]["event"] == "final" and lines[-1]["test_n"] == 10 and lines[-1]["val_n"] == 5
    assert r.stdout.count("checkpoints:") == 1
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "ckpt.pt", "config.json", "metrics.jsonl",
                                                      "tokenizer.bin", "tokenizer.model"]
    ck = load_checkpoint(out / "ckpt.pt")
    assert ck["step"] == 12

    # the global batch and the loss normalisation do not depend on the number of ranks:
    # one process reaches the same weights, up to the order of gradient summation
    cfg = TrainConfig.from_dict({**ck["train_config"], "out_dir": str(tmp_path / "single"), "progress": False})
    single = load_checkpoint(train(cfg)["ckpt"])
    for k, v in ck["model"].items():
        assert torch.allclose(v, single["model"][k], atol=1e-5), k
