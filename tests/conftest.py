"""Shared test set-up: never test a stale build of the C engine.

In a source checkout (editable install) the engine is compiled into runc/ by
`pip install -e .`; a developer running pytest after editing runc.c would
otherwise test yesterday's C. runc/build_engine.py's refresh (the one guard,
which `make venv` runs too) rebuilds it when a source is newer than it, or
when runc/ holds more than one build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tinymath.runc import build_engine

build_engine.refresh()

# A model that shows its work (the steps format), trained once for every test that needs one: small
# and briefly trained, so what those tests check must hold whatever it learned
STEPS_TASK = {"task": "arith", "ops": "+*", "lo": 0, "hi": 19, "holdout": None, "format": "steps"}


@pytest.fixture(scope="session")
def steps_model(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from tinymath.export import export_checkpoint
    from tinymath.train.config import TrainConfig
    from tinymath.train.train import train

    out = tmp_path_factory.mktemp("steps")
    cfg = TrainConfig.from_dict({"out_dir": str(out), "task": STEPS_TASK, "progress": False,
                                 "model": {"dim": 32, "n_layers": 2, "n_heads": 4}, "max_steps": 150,
                                 "eval_every": 150, "batch_size": 64, "lr": 1e-2, "warmup_steps": 20})
    assert train(cfg)["metrics"]["val_n"] > 0
    export_checkpoint(out / "ckpt.pt", "v1", out / "model.bin")
    return out / "model.bin"
