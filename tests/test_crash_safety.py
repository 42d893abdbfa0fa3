"""Crash safety: training, export and a sweep killed with SIGKILL at random points.

After every kill, every file under its final name (temp files start with ".") must be complete and
loadable by its reader; then resuming must finish with exactly what an uninterrupted run gives:
bitwise-identical weights and optimizer state for training, identical bytes for exports, identical
results (timings aside) for a sweep. The kill points are random but seeded (TINYMATH_CRASH_SEED,
default 0) and named in every failure message, so a failure can be replayed.

Checkpoints are read with torch.load(weights_only=True): a pickle that would run code is refused.
"""

from __future__ import annotations

import ast
import json
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinymath.tokenizer import Tokenizer  # noqa: E402
from tinymath.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("TINYMATH_CRASH_SEED", "0"))
TASK = {"task": "arith", "ops": "+-", "lo": 0, "hi": 19, "holdout": [17, 19]}
TRAIN = ["--task", json.dumps(TASK), "--dim", "16", "--n-layers", "1", "--n-heads", "2", "--batch-size", "32",
         "--threads", "1", "--device", "cpu", "--no-progress", "--lr", "0.01"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinymath.cli", *args]


def run_ok(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def kill_at(cmd: list[str], delay: float | None = None, when=None, timeout: float = 300) -> str:
    """Start cmd; SIGKILL it `delay` s after start, or `delay` s after when() first holds. Returns
    a description of what happened (for failure messages)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
    try:
        if when is not None:
            while not when():
                if proc.poll() is not None:
                    return f"finished before the trigger ({time.monotonic() - start:.2f} s)"
                if time.monotonic() - start > timeout:
                    raise AssertionError(f"{cmd}: trigger never held in {timeout} s")
                time.sleep(0.01)
        t0 = time.monotonic()
        while time.monotonic() - t0 < (delay or 0.0):
            if proc.poll() is not None:
                return f"finished before the kill ({time.monotonic() - start:.2f} s)"
            time.sleep(0.005)
        if proc.poll() is not None:
            return f"finished before the kill ({time.monotonic() - start:.2f} s)"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        return f"killed at {time.monotonic() - start:.2f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


# ---- what "complete and loadable" means, per file ---------------------------------------------------

def _c_tokenizer_ok(data: bytes, vocab: int) -> None:
    from tinymath.runc.model import _load_engine

    ffi, lib = _load_engine()
    out, err = ffi.new("runc_tokenizer **"), ffi.new("runc_error *")
    rc = lib.runc_tokenizer_open_buffer(out, data, len(data), vocab, err)
    assert rc == 0, ffi.string(err.message).decode()
    lib.runc_tokenizer_close(out[0])


def check_file(path: Path) -> None:
    """Raise AssertionError unless `path` is whole and its reader loads it."""
    name, suffix = path.name, path.suffix
    what = f"{path} ({path.stat().st_size} bytes)"
    try:
        if suffix == ".pt":
            ck = load_checkpoint(path)  # weights_only=True
            assert ck["step"] >= 0 and ck["model"]
        elif name == "tokenizer.bin":
            tok = Tokenizer.load(path)
            _c_tokenizer_ok(path.read_bytes(), len(tok.pieces))
        elif name == "tokenizer.model":
            import sentencepiece as spm

            assert spm.SentencePieceProcessor(model_file=str(path)).get_piece_size() > 3
        elif suffix == ".bin":
            from tinymath.runc import Model

            with Model(path, tokenizer=False) as m:
                assert m.vocab_size > 0
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif suffix == ".toml":
            tomllib.loads(path.read_text())
        else:
            raise AssertionError(f"unexpected file {path}")
    except AssertionError:
        raise
    except Exception as e:
        raise AssertionError(f"{what} is not complete/loadable: {type(e).__name__}: {e}") from None


def check_tree(root: Path, context: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            try:
                check_file(path)
            except AssertionError as e:
                raise AssertionError(f"after {context}: {e}") from None


def same_checkpoint(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["step"] == cb["step"] and ca["tokens_seen"] == cb["tokens_seen"]
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), f"{a.name}: weight {k} differs after resuming"

    def flat(x):
        if isinstance(x, torch.Tensor):
            return [x]
        if isinstance(x, dict):
            return [t for k in sorted(x, key=str) for t in flat(x[k])]
        if isinstance(x, (list, tuple)):
            return [t for v in x for t in flat(v)]
        return []

    oa, ob = flat(ca["optimizer"]), flat(cb["optimizer"])
    assert len(oa) == len(ob) and all(torch.equal(x, y) for x, y in zip(oa, ob)), "optimizer state differs"


def metric_records(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


# ---- training ---------------------------------------------------------------------------------------------

def test_training_killed_anywhere_resumes_bitwise(tmp_path):
    rng = random.Random(SEED)
    max_steps = 120
    steps = ["--max-steps", str(max_steps), "--eval-every", "10"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    t0 = time.monotonic()
    run_ok(cli("train", *TRAIN, *steps, "--out", str(ref)))
    t_ref = time.monotonic() - t0

    def logged_step(at_least: int):
        def held() -> bool:
            try:
                lines = (run / "metrics.jsonl").read_text().splitlines()
            except FileNotFoundError:
                return False
            return any(json.loads(ln).get("step", 0) >= at_least for ln in lines if ln.strip().endswith("}"))
        return held

    def writing_checkpoint():
        before = {p.name for p in run.iterdir()}

        def held() -> bool:
            return any(p.name.startswith(".ckpt.pt.") and p.name not in before for p in run.iterdir())
        return held

    history, resumed_from = [], []

    def ckpt_step() -> int:
        return load_checkpoint(run / "ckpt.pt")["step"] if (run / "ckpt.pt").is_file() else 0

    def attempt(delay: float, trigger=None) -> None:
        """One run (resuming when there is a checkpoint), killed `delay` s after start or after trigger()."""
        resume = ["--resume"] if (run / "ckpt.pt").is_file() else []
        resumed_from.append(load_checkpoint(run / "ckpt.pt")["step"] if resume else 0)
        history.append(kill_at(cli("train", *TRAIN, *steps, "--out", str(run), *resume), delay=delay,
                               when=trigger() if trigger else None))
        check_tree(run, "; ".join(history))

    # 1. anywhere early: start-up, tokenizer training, the first steps
    attempt(rng.uniform(0.2, 0.5 * t_ref))
    run.mkdir(exist_ok=True)
    # 2. at a random point after a random logged step
    target = rng.randrange(20, 60, 10)
    attempt(rng.uniform(0.0, 0.2), lambda: logged_step(target))
    # 3. in the middle of writing ckpt.pt
    attempt(rng.uniform(0.0, 0.02), writing_checkpoint)
    # 4. late in the run, at a step past the checkpoint it resumes from (the log still holds the
    # killed run's records until the trainer rewrites it, which must not trigger the kill)
    late = rng.randrange(80, 111, 10)
    attempt(rng.uniform(0.0, 0.2), lambda: logged_step(max(late, ckpt_step() + 10)))
    # 5. finish
    resume = ["--resume"] if (run / "ckpt.pt").is_file() else []
    run_ok(cli("train", *TRAIN, *steps, "--out", str(run), *resume))
    check_tree(run, "; ".join(history) + "; the final resume")
    print(f"training kills (seed {SEED}): {'; '.join(history)}; resumed from steps {resumed_from}")
    # kills are timed, so where they land varies with the machine's speed; at least one must have
    # interrupted training (tests/test_train.py kills between each pair of writes deterministically)
    assert sum(0 < s < max_steps for s in resumed_from) >= 1, f"no kill landed mid-training: {history}, " \
                                                               f"resumed from {resumed_from}"
    try:
        for name in ("ckpt.pt", "best.pt"):
            same_checkpoint(ref / name, run / name)
        assert metric_records(ref / "metrics.jsonl") == metric_records(run / "metrics.jsonl")
        assert (ref / "tokenizer.bin").read_bytes() == (run / "tokenizer.bin").read_bytes()
    except AssertionError as e:
        raise AssertionError(f"{e} (seed {SEED}: {'; '.join(history)})") from None


# ---- export -----------------------------------------------------------------------------------------------

def big_checkpoint(path: Path, tok: Path, dim: int, seed: int) -> None:
    """A checkpoint of a model large enough that writing its export takes a while (~16 MB fp32)."""
    from tinymath.train.model import ModelConfig, Transformer

    torch.manual_seed(seed)
    cfg = ModelConfig(dim=dim, n_layers=4, n_heads=4, n_kv_heads=4, hidden_dim=4 * dim, vocab_size=len(
        Tokenizer.load(tok).pieces), max_seq_len=32)
    model = Transformer(cfg)
    save_checkpoint(path, {"model_config": cfg.to_dict(), "model": model.state_dict(), "optimizer": {}, "step": 1,
                           "tokens_seen": 0, "train_config": {"task": TASK, "seed": seed}, "tokenizer": str(tok),
                           "metrics": {}})


def test_export_killed_mid_write_leaves_the_old_file_or_none(tmp_path):
    import hashlib
    import warnings

    from tinymath.export import export_checkpoint
    from tinymath.tokenizer import Tokenizer as Tok

    rng = random.Random(SEED + 1)
    tok = tmp_path / "tokenizer.bin"
    Tok([b"<unk>", b"\n<s>\n", b"\n</s>\n", b" ", *[bytes([c]) for c in b"0123456789+-=."]],
        [0.0] * 18).save(tok)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    big_checkpoint(a, tok, 192, 1)
    big_checkpoint(b, tok, 192, 2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for fmt, name, kills in (("v1", "model.bin", 2), ("v2", "model.q8.bin", 1)):
        out = out_dir / name
        ref = tmp_path / f"ref_{name}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_checkpoint(b, fmt, ref)  # what an uninterrupted export of b writes
            export_checkpoint(a, fmt, out)  # the file that is there before
        old, new = out.read_bytes(), ref.read_bytes()
        history = []
        for _ in range(kills):  # exports of b, killed while they write
            before = {p.name for p in out_dir.iterdir()}  # temp files of earlier kills stay behind
            writing = lambda: any(p.name.startswith(f".{name}.") and p.name not in before  # noqa: E731
                                  for p in out_dir.iterdir())
            history.append(kill_at(cli("export", str(b), "--format", fmt, "--out", str(out)),
                                   delay=rng.uniform(0.0, 0.05), when=writing))
            check_tree(out_dir, "; ".join(history))
            assert out.read_bytes() in (old, new), \
                f"{out} is neither the old nor the new export after {'; '.join(history)}"
        assert any(h.startswith("killed") for h in history), f"no kill landed mid-export: {history}"
        # export again (the "resume" of an export): the uninterrupted result, and a card that matches it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_checkpoint(b, fmt, out)
        assert out.read_bytes() == new
        card = json.loads(out.with_suffix(".json").read_text())
        assert card["sha256"] == hashlib.sha256(new).hexdigest()


# ---- a sweep --------------------------------------------------------------------------------------------------

STUDY = """
name = "crash"
seeds = [0]
sizes = [900, 2500]
[train]
max_steps = 80
batch_size = 32
lr = 0.01
eval_every = 10
threads = 1
device = "cpu"
[[variants]]
name = "add"
task = { task = "arith", ops = "+", lo = 0, hi = 19, holdout = [17, 19], val_frac = 0.1, test_frac = 0.2 }
"""


def strip_timing(row: dict) -> dict:
    row = json.loads(json.dumps(row))
    row["train"].pop("wall_s", None)
    return row


def test_sweep_killed_anywhere_resumes_to_the_same_results(tmp_path):
    rng = random.Random(SEED + 2)
    ref_toml, toml = tmp_path / "ref.toml", tmp_path / "crash.toml"
    ref_toml.write_text(STUDY)
    toml.write_text(STUDY)
    run_ok(cli("sweep", str(ref_toml)))
    study = tmp_path / "crash"
    first = study / "runs" / "add-p900-s0"

    def logged(run_dir: Path, step: int):
        def held() -> bool:
            try:
                lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            except FileNotFoundError:
                return False
            return any(json.loads(ln).get("step", 0) >= step for ln in lines if ln.strip().endswith("}"))
        return held

    exists = lambda path: (lambda: path.exists())  # noqa: E731
    history = []
    for what, delay, when in [
            ("training the first run", rng.uniform(0.0, 0.3), logged(first, rng.randrange(10, 50, 10))),
            ("exporting/evaluating the first run", rng.uniform(0.0, 0.3), exists(first / "model.bin"))]:
        history.append(f"{what}: " + kill_at(cli("sweep", str(toml)), delay=delay, when=when))
        check_tree(study, "; ".join(history))
    run_ok(cli("sweep", str(toml)))
    check_tree(study, "; ".join(history) + "; the final resume")
    print(f"sweep kills (seed {SEED}): {'; '.join(history)}")
    assert all("killed" in h for h in history), history
    ref_rows = [strip_timing(json.loads(line)) for line in (tmp_path / "ref" / "results.jsonl").read_text().splitlines()]
    rows = [strip_timing(json.loads(line)) for line in (study / "results.jsonl").read_text().splitlines()]
    assert rows == ref_rows, f"results differ after {'; '.join(history)} (seed {SEED})"
    for run in ("add-p900-s0", "add-p2500-s0"):
        for name in ("model.bin", "model.q8.bin"):
            assert (study / "runs" / run / name).read_bytes() == (tmp_path / "ref" / "runs" / run / name).read_bytes(), \
                f"{run}/{name} differs after {'; '.join(history)}"


# ---- checkpoints never unpickle arbitrary objects ---------------------------------------------------------------

class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_load_with_weights_only(tmp_path):
    from tinymath.export import ExportError
    from tinymath.export import read_checkpoint as export_load

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model_config": {}, "model": {}, "step": 0, "payload": _Payload(str(marker))}, evil)
    with pytest.raises(ValueError, match="truncated or not a TinyMath checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(ExportError, match="not a loadable torch checkpoint"):
        export_load(evil)
    assert not marker.exists(), "loading a checkpoint ran code from its pickle"
    # and the package loads checkpoints nowhere else without weights_only=True
    for src in list(ROOT.glob("*/*.py")) + list(ROOT.glob("tinymath/**/*.py")):
        if ".venv" in src.parts or "tests" in src.parts:
            continue
        tree = ast.parse(src.read_text(), str(src))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                assert ok, f"{src}:{node.lineno}: torch.load without weights_only=True"
    # a truncated checkpoint is a clear error too
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model_config": {}, "model": {"w": torch.zeros(4)}, "optimizer": {}, "step": 0,
                           "tokens_seen": 0, "train_config": {}, "tokenizer": "", "metrics": {}})
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    for n in (0, 10, len(data) // 2, len(data) - 1):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match="truncated or not a TinyMath checkpoint"):
            load_checkpoint(cut)
    np.testing.assert_array_equal(load_checkpoint(good)["model"]["w"].numpy(), np.zeros(4))


def test_next_writer_removes_a_killed_writers_temp_files(tmp_path):
    """A kill mid-write leaves `.NAME.PID.*.tmp` behind; the next write of NAME removes it, but never
    the temp of a writer still running (a sweep shard writing the same file)."""
    import subprocess
    import sys

    from tinymath import fileio

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        target = tmp_path / "ckpt.pt"
        stale_file = tmp_path / f".ckpt.pt.{dead}.abc123.tmp"
        stale_dir = tmp_path / f".ckpt.pt.{dead}.def456.tmp"
        running = tmp_path / f".ckpt.pt.{live.pid}.ghi789.tmp"
        other = tmp_path / f".other.pt.{dead}.abc123.tmp"
        stale_file.write_bytes(b"x" * 1000)
        stale_dir.mkdir()
        (stale_dir / "model.safetensors").write_bytes(b"y")
        running.write_bytes(b"z")
        other.write_bytes(b"w")
        fileio.write_bytes(target, b"new")
        assert target.read_bytes() == b"new"
        assert not stale_file.exists() and not stale_dir.exists()
        assert running.exists() and other.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ckpt.pt", running.name, other.name])
    finally:
        live.kill()
        live.wait()
