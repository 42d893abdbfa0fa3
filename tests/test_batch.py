"""The batch engine through the bindings: Model.solve against runc_solve one problem at a time.

- the same greedy answers on 1,500 problems, on the shipped model (real weights, trained on the
  classic task with its work shown: about 70 tokens per answer; fp32 and int8) and on random models exported by tinymath.export (fp32 and int8,
  tied and untied, grouped-query attention), whatever the thread count;
- solve(prompts, confidence=True): Answer records whose mean / min log-probabilities are those of
  the greedy tokens and the closing EOS (checked against generate_tokens' log-probabilities);
- bad input raises clear exceptions: a bad model file, a closed model, a non-str prompt, an empty
  list, a prompt longer than the context, a character the vocabulary lacks, impossible thread counts;
- the call releases the GIL.

(runc/tests/test_batch.c checks the same engine from C, under ASan too.)
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinymath.export.layout import tensor_shapes
from tinymath.export.source import bin_config_from_model_config, from_state_dict
from tinymath.export.writers import encode_bin


from tinymath.runc import Answer, Model, RuncError  # noqa: E402
from tinymath.tokenizer import Tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "tinymath.bin"
SHIPPED_Q8 = ROOT / "models" / "tinymath.q8.bin"
TOKENIZER = ROOT / "models" / "tokenizer.bin"
N = 1_500  # the shipped model shows its work: ~70 tokens per answer, a second each 100 one at a time
EOS = 2

needs_shipped = pytest.mark.skipif(not (SHIPPED.is_file() and SHIPPED_Q8.is_file() and TOKENIZER.is_file()),
                                   reason="the shipped model (models/) is not present")


def problems(n: int, seed: int = 0) -> list[str]:
    """Classic prompts "A op B =", operands 0-99 (holdout range included)."""
    rng = np.random.default_rng(seed)
    a, b, op = rng.integers(0, 100, n), rng.integers(0, 100, n), rng.integers(0, 4, n)
    return [f"{x} {'+-*/'[o]} {y} =" for x, y, o in zip(a, b, op)]


def random_model(path: Path, fmt: str, seed: int, **shape) -> Path:
    """A random model of the classic task's vocabulary (20 tokens), exported by tinymath.export."""
    vocab = Tokenizer.load(TOKENIZER).vocab_size  # the shipped tokenizer's
    mc = dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=8, hidden_dim=172, vocab_size=vocab, max_seq_len=20,
              norm_eps=1e-5, rope_theta=10000.0, tied=True)
    mc.update(shape)
    rng = np.random.default_rng(seed)
    cfg = bin_config_from_model_config(mc)
    sd = {n: (1.0 + 0.1 * rng.standard_normal(s) if n.endswith("norm.weight") else
              rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32) for n, s in tensor_shapes(cfg).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(encode_bin(from_state_dict(mc, sd), fmt))
    return path


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    if not TOKENIZER.is_file():
        pytest.skip("needs models/tokenizer.bin (the classic task's digits tokenizer)")
    return {
        "random fp32": random_model(d / "fp32.bin", "v1", 0),
        "random int8": random_model(d / "int8.bin", "v2", 1, hidden_dim=176),
        "random fp32 untied gqa": random_model(d / "gqa.bin", "v1", 2, dim=48, n_heads=6, n_kv_heads=2,
                                               hidden_dim=128, tied=False),
    }


# ---- the same answers ----------------------------------------------------------------------------------

@needs_shipped
@pytest.mark.parametrize("path,n", [(SHIPPED, N), (SHIPPED_Q8, N // 2)], ids=["shipped fp32", "shipped int8"])
def test_batch_equals_single_on_the_shipped_model(path, n):
    """(int8: half as many, as its one-at-a-time reference is slow; runc/tests/test_batch.c runs 200 of each.)"""
    prompts = problems(n)
    with Model(path, tokenizer=TOKENIZER) as m:
        batch = m.solve(prompts, steps=True)
        single = m.solve(prompts, batch=False, steps=True)
    assert batch == single
    assert sum(a != "" for a in batch) > n // 2  # a real model answers


@pytest.mark.parametrize("name", ["random fp32", "random int8", "random fp32 untied gqa"])
def test_batch_equals_single_on_random_models(random_models, name):
    prompts = problems(3000, seed=1)
    with Model(random_models[name], tokenizer=TOKENIZER, threads=3) as m:
        assert m.solve(prompts) == m.solve(prompts, batch=False)


def test_thread_counts_agree(random_models):
    prompts = problems(500, seed=2)
    answers = []
    for threads in (1, 2, 4):
        with Model(random_models["random fp32"], tokenizer=TOKENIZER, threads=threads) as m:
            assert m.threads == threads
            answers.append(m.solve(prompts))
            assert m.batch_info()["threads"] == threads
    assert answers[0] == answers[1] == answers[2]


def test_one_prompt_and_repeated_calls(random_models):
    with Model(random_models["random int8"], tokenizer=TOKENIZER) as m:
        one = m.solve(["7 * 8 ="])
        assert isinstance(one, list) and len(one) == 1 and isinstance(one[0], str)
        assert m.solve(["7 * 8 ="] * 3) == one * 3
        info = m.batch_info()
        assert info["threads"] >= 1 and info["slots"] >= 1 and info["bytes"] > 0 and info["kernels"]
        assert info["context"] == m.context and info["last_tokens"] > 0


# ---- confidence --------------------------------------------------------------------------------------------

def test_confidence_records(random_models):
    prompts = problems(200, seed=3)
    with Model(random_models["random fp32 untied gqa"], tokenizer=TOKENIZER) as m:
        plain = m.solve(prompts)
        recs = m.solve(prompts, confidence=True)
        assert all(isinstance(r, Answer) for r in recs)
        assert [r.text for r in recs] == plain
        for p, r in zip(prompts[:60], recs[:60]):
            # the greedy tokens with their log-probabilities, up to and including EOS
            g = m.generate_tokens(p, temperature=0.0, stop=None)
            toks, lps = g.tokens, list(g.logprobs)
            if EOS in toks:
                k = toks.index(EOS)
                toks, lps = toks[:k], lps[:k + 1]
            assert r.n_tokens == len(toks)
            assert r.mean_logprob == pytest.approx(float(np.mean(lps)), abs=1e-4)
            assert r.min_logprob == pytest.approx(float(np.min(lps)), abs=1e-4)
            assert r.min_logprob <= r.mean_logprob <= 0.0
        text, mean, low, n = recs[0]  # a record unpacks
        assert text == plain[0]


@needs_shipped
def test_confidence_tracks_correctness():
    """On the trained model, right answers are given with more confidence than wrong ones."""
    from tinymath.tasks import Problem  # noqa: F401 - the task package is importable without torch

    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 100, 3000), rng.integers(0, 100, 3000)  # operands 90-99 were never trained on
    ops = rng.integers(0, 3, 3000)
    prompts = [f"{x} {'+-*'[o]} {y} =" for x, y, o in zip(a, b, ops)]
    truth = [f"{(x + y, x - y, x * y)[o]}.00" for x, y, o in zip(a, b, ops)]
    with Model(SHIPPED, tokenizer=TOKENIZER) as m:
        recs = m.solve(prompts, confidence=True)
    right = [r.mean_logprob for r, t in zip(recs, truth) if r.text == t]
    wrong = [r.mean_logprob for r, t in zip(recs, truth) if r.text != t]
    assert right and wrong and np.mean(right) > np.mean(wrong)


# ---- bad input ---------------------------------------------------------------------------------------------

def test_bad_model_file(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a model at all" * 10)
    with pytest.raises(RuncError, match="magic"):
        Model(bad, tokenizer=TOKENIZER)
    with pytest.raises(RuncError):
        Model(tmp_path / "missing.bin", tokenizer=TOKENIZER)


def test_closed_model(random_models):
    m = Model(random_models["random fp32"], tokenizer=TOKENIZER)
    assert m.solve(["1 + 1 ="])
    m.close()
    with pytest.raises(RuncError, match="closed"):
        m.solve(["1 + 1 ="])
    with pytest.raises(RuncError, match="closed"):
        m.solve(["1 + 1 ="], confidence=True)


def test_bad_prompts(random_models):
    with Model(random_models["random fp32"], tokenizer=TOKENIZER) as m:
        with pytest.raises(TypeError, match="prompt 1 is a int"):
            m.solve(["1 + 1 =", 7])
        with pytest.raises(TypeError, match="list of prompt strings"):
            m.solve("1 + 1 =")
        with pytest.raises(TypeError):
            m.solve(None)
        with pytest.raises(ValueError, match="empty"):
            m.solve([])
        with pytest.raises(ValueError, match="NUL"):
            m.solve(["1 \x00 1 ="])
        long = "1" * (3 * m.context)
        with pytest.raises(RuncError, match=r"prompt 2 \('1111.*context") as e:
            m.solve(["1 + 1 =", "2 + 2 =", long, "x"])
        assert e.value.status == "RUNC_E_CONTEXT"
        with pytest.raises(RuncError, match=r"prompt 1 \('12 x 3 ='\).*cannot encode") as e:
            m.solve(["1 + 1 =", "12 x 3 =", long])
        assert e.value.status == "RUNC_E_ENCODE"
        # the model still works after errors
        assert m.solve(["1 + 1 ="]) == m.solve(["1 + 1 ="], batch=False)
        with pytest.raises(ValueError, match="batch engine"):
            m.solve(["1 + 1 ="], confidence=True, batch=False)


def test_no_tokenizer(random_models):
    with Model(random_models["random fp32"], tokenizer=False) as m:
        with pytest.raises(RuncError, match="tokenizer"):
            m.solve(["1 + 1 ="])


@pytest.mark.parametrize("threads,exc", [(-1, ValueError), (10 ** 6, ValueError), (1025, ValueError),
                                         ("2", TypeError), (2.0, TypeError), (True, TypeError), (None, TypeError)])
def test_impossible_thread_counts(random_models, threads, exc):
    with pytest.raises(exc, match="threads"):
        Model(random_models["random fp32"], tokenizer=TOKENIZER, threads=threads)
    with pytest.raises(exc, match="threads"):
        Model.from_bytes(random_models["random fp32"].read_bytes(), TOKENIZER.read_bytes(), threads=threads)


def test_zero_threads_means_all_cores(random_models):
    import os

    with Model(random_models["random fp32"], tokenizer=TOKENIZER, threads=0) as m:
        assert m.batch_info()["threads"] == (os.cpu_count() or 1)


# ---- the GIL -------------------------------------------------------------------------------------------------

def test_solve_releases_the_gil(random_models):
    prompts = problems(20_000, seed=5)
    with Model(random_models["random fp32"], tokenizer=TOKENIZER, threads=1) as m:
        m.solve(prompts[:100])  # open the engine first
        done = threading.Event()
        ticks = 0

        def work():
            m.solve(prompts)
            done.set()

        t = threading.Thread(target=work)
        start = time.perf_counter()
        t.start()
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)
        t.join()
        elapsed = time.perf_counter() - start
    # with the GIL held for the whole call, this loop could not have run during it
    assert elapsed > 0.05 and ticks >= 10, (elapsed, ticks)
