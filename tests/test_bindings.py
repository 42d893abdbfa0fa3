"""The cffi bindings of the C engine against the PyTorch reference model.

A random-weight torch Transformer (train/model.py) is written to llama2.c files
by TinyMath's exporter (tinymath.export: v0, v1 with the TMx1 extension, v2
Q8_0), with a small digits tokenizer.bin; then the C logits must equal torch's
at every position, greedy continuations must agree token for token, int8 must
stay close, and every misuse must raise a clear exception. A minimal numpy
writer of the formats, written from the spec, checks that the exporter writes
what runc reads (byte for byte).
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinymath.runc import Generation, Model, RuncError  # noqa: E402
from tinymath.train.model import ModelConfig, Transformer  # noqa: E402


from tinymath.runc import _engine  # noqa: E402,F401  (built by `pip install -e .`; a missing build fails, never skips)

BOS, EOS = 1, 2
PIECES = ["<unk>", "\n<s>\n", "\n</s>\n", " ", *"0123456789", *"+-*/=.", " =", "00", ".0", ".00", "10", "99"]
SCORES = [0.0, 0.0, 0.0] + [-1.0] * 17 + [-2.0, -3.0, -4.0, -5.0, -6.0, -7.0]
PROMPTS = ["24 + 82 =", "36 / 3 =", "7 * 8 =", "91 - 45 =", "0 + 0 =", "99 * 99 ="]


# ---- a minimal numpy writer of llama2.c files, from the spec (the real one is tinymath.export) ----

def _f32(a) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def _tensors(model: Transformer) -> dict[str, list[np.ndarray]]:
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    L = model.cfg.n_layers
    per = lambda name: [sd[f"layers.{i}.{name}"] for i in range(L)]  # noqa: E731
    return {
        "tok": [sd["tok_embeddings.weight"]], "out": [sd["output.weight"]], "norm": [sd["norm.weight"]],
        "att_norm": per("attention_norm.weight"), "ffn_norm": per("ffn_norm.weight"),
        "wq": per("attention.wq.weight"), "wk": per("attention.wk.weight"), "wv": per("attention.wv.weight"),
        "wo": per("attention.wo.weight"), "w1": per("feed_forward.w1.weight"),
        "w2": per("feed_forward.w2.weight"), "w3": per("feed_forward.w3.weight"),
    }


def _params(cfg: ModelConfig) -> list[int]:
    return [cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size, cfg.max_seq_len]


def _header(cfg: ModelConfig, version: int, group_size: int | None = None) -> bytes:
    h = struct.pack("<Ii7iB", 0x616B3432, version, *_params(cfg), int(cfg.tied))
    if version == 2:
        h += struct.pack("<i", group_size)
    h = h.ljust(240, b"\0")
    if (np.float32(cfg.rope_theta), np.float32(cfg.norm_eps)) != (np.float32(10000.0), np.float32(1e-5)):
        h += b"TMx1" + struct.pack("<ff", cfg.rope_theta, cfg.norm_eps)
    return h.ljust(256, b"\0")


def write_v1(path, model: Transformer) -> None:
    t, cfg = _tensors(model), model.cfg
    order = ["att_norm", "ffn_norm", "norm", "tok", "wq", "wk", "wv", "wo", "w1", "w2", "w3"]
    if not cfg.tied:
        order.append("out")
    with open(path, "wb") as f:
        f.write(_header(cfg, 1))
        for name in order:
            for a in t[name]:
                f.write(_f32(a))


def quantize_q80(w: np.ndarray, gs: int) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 as llama2.c's export.py: per group of gs, scale = max|w| / 127, q = round(w / scale)."""
    g = w.astype(np.float32).reshape(-1, gs)
    scale = (np.abs(g).max(axis=1) / np.float32(127.0)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.round(g / safe[:, None]).astype(np.int8)
    return q.reshape(-1), scale


def write_v2(path, model: Transformer, gs: int) -> None:
    t, cfg = _tensors(model), model.cfg
    mats = ["tok", "wq", "wk", "wv", "wo", "w1", "w2", "w3"] + ([] if cfg.tied else ["out"])
    with open(path, "wb") as f:
        f.write(_header(cfg, 2, gs))
        for name in ["att_norm", "ffn_norm", "norm"]:
            for a in t[name]:
                f.write(_f32(a))
        for name in mats:
            for a in t[name]:
                q, s = quantize_q80(a, gs)
                f.write(q.tobytes())
                f.write(_f32(s))


def write_v0(path, model: Transformer) -> None:
    t, cfg = _tensors(model), model.cfg
    p = _params(cfg)
    if not cfg.tied:
        p[5] = -p[5]
    order = ["tok", "att_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "norm"]
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", *p))
        for name in order:
            for a in t[name]:
                f.write(_f32(a))
        cos, sin = model.rope_cos.numpy(), model.rope_sin.numpy()  # freq_cis_real / imag
        f.write(_f32(cos))
        f.write(_f32(sin))
        if not cfg.tied:
            f.write(_f32(t["out"][0]))


def tokenizer_bytes(pieces=PIECES, scores=SCORES) -> bytes:
    raw = [p.encode("utf-8") for p in pieces]
    out = [struct.pack("<i", max(len(p) for p in raw))]
    for p, s in zip(raw, scores):
        out.append(struct.pack("<fi", s, len(p)) + p)
    return b"".join(out)


def make_model(seed=0, tied=True, n_kv_heads=2, rope_theta=10000.0, norm_eps=1e-5, max_seq_len=24, dim=32,
               n_heads=4, hidden_dim=64, n_layers=2, vocab_size=len(PIECES)) -> Transformer:
    """A random Transformer with well-separated logits (unit-scale weights, not the tiny init)."""
    cfg = ModelConfig(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, hidden_dim=hidden_dim,
                      vocab_size=vocab_size, max_seq_len=max_seq_len, norm_eps=norm_eps, rope_theta=rope_theta,
                      tied=tied)
    torch.manual_seed(seed)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name == "tok_embeddings.weight":
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
    return model


def export_bytes(model: Transformer, fmt: str, gs: int | None = None) -> bytes:
    """The exporter's bytes of a model (its ExportWarning about TMx1 is expected here)."""
    from tinymath.export import encode_bin, from_module

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return encode_bin(from_module(model), fmt, group_size=gs if fmt == "v2" else None)


@pytest.fixture()
def files(tmp_path):
    """Write a model with the exporter in the given format; returns (model path, tokenizer path)."""
    tok = tmp_path / "tokenizer.bin"
    tok.write_bytes(tokenizer_bytes())

    def write(model: Transformer, fmt: str = "v1", gs: int = 16, name: str | None = None):
        path = tmp_path / (name or f"model_{fmt}.bin")
        path.write_bytes(export_bytes(model, fmt, gs))
        return path, tok

    return write


def torch_logits(model: Transformer, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0].numpy()


# ---- C against torch ---------------------------------------------------------------

MODEL_CASES = {
    "tied-gqa": dict(tied=True, n_kv_heads=2),
    "untied-mha": dict(tied=False, n_kv_heads=4, seed=1),
    "mqa-theta-eps": dict(tied=True, n_kv_heads=1, rope_theta=500.0, norm_eps=1e-3, seed=2),
    "one-layer-untied-ext": dict(tied=False, n_kv_heads=2, n_layers=1, rope_theta=1e6, norm_eps=1e-6, seed=3),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_logits_equal_torch_at_every_position(files, case):
    model = make_model(**MODEL_CASES[case])
    path, tok = files(model, "v1")
    rng = np.random.default_rng(0)
    ids = [BOS] + rng.integers(0, len(PIECES), size=model.cfg.max_seq_len - 1).tolist()
    want = torch_logits(model, ids)
    with Model(path, tokenizer=tok) as m:
        assert m.config["has_extension"] == (case in ("mqa-theta-eps", "one-layer-untied-ext"))
        assert m.rope_theta == pytest.approx(model.cfg.rope_theta) and m.norm_eps == pytest.approx(model.cfg.norm_eps)
        got = m.logits(ids)
        assert got.shape == (len(ids), len(PIECES)) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        # a str prompt is [BOS] + encode(prompt)
        ids2 = m.encode("24 + 82 =")
        np.testing.assert_allclose(m.logits("24 + 82 ="), torch_logits(model, ids2), atol=1e-4, rtol=0)


def test_v0_and_v1_give_identical_logits(files):
    for tied in (True, False):
        model = make_model(tied=tied, seed=4)
        p0, tok = files(model, "v0", name=f"m0_{tied}.bin")
        p1, _ = files(model, "v1", name=f"m1_{tied}.bin")
        with Model(p0, tokenizer=tok) as m0, Model(p1, tokenizer=tok) as m1:
            assert (m0.version, m1.version) == (0, 1)
            assert m0.shared_classifier == m1.shared_classifier == tied
            np.testing.assert_array_equal(m0.logits("36 / 3 ="), m1.logits("36 / 3 ="))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_greedy_continuations_agree_with_torch(files, seed):
    model = make_model(seed=seed, tied=seed == 3)
    path, tok = files(model, "v1")
    with Model(path, tokenizer=tok) as m:
        prompts = [m.encode(p) for p in PROMPTS]
        want = model.generate_greedy(prompts, max_new=model.cfg.max_seq_len, stop=EOS)
        got = [m.generate_tokens(ids, temperature=0.0).tokens for ids in prompts]
        assert got == want
        # solve = the same greedy continuation, decoded and stripped
        answers = m.solve(PROMPTS)
        assert answers == [m.decode(w, prev=p[-1]).strip() for p, w in zip(prompts, want)]
        assert answers == [m.decode(w).strip() for w in want]


def test_greedy_cases_cover_eos_and_context_end(files):
    """The models above stop at EOS on some prompts and run to the context end on others."""
    stops = set()
    for seed in range(3):
        model = make_model(seed=seed, tied=False)
        path, tok = files(model, "v1", name=f"g{seed}.bin")
        with Model(path, tokenizer=tok) as m:
            for p in PROMPTS:
                ids = m.encode(p)
                g = m.generate_tokens(ids, temperature=0.0)
                stops.add("eos" if len(ids) + len(g.tokens) < m.context else "end")
    assert stops == {"eos", "end"}


def test_int8_close_to_torch(files):
    model = make_model(seed=7, dim=64, hidden_dim=128, max_seq_len=20)
    path, tok = files(model, "v2", gs=32)
    rng = np.random.default_rng(1)
    ids = [BOS] + rng.integers(0, len(PIECES), size=19).tolist()
    want = torch_logits(model, ids)
    with Model(path, tokenizer=tok) as m:
        assert m.quantized and m.group_size == 32
        got = m.logits(ids)
    rel = np.sqrt(((got - want) ** 2).mean() / (want ** 2).mean())
    assert rel < 0.05, rel
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.85


def test_logprobs_and_sampling(files):
    model = make_model(seed=8)
    path, tok = files(model, "v1")
    with Model(path, tokenizer=tok) as m:
        g = m.generate_tokens("7 * 8 =", max_new=6, temperature=0.0, stop=None)
        assert isinstance(g, Generation) and len(g.tokens) == 6 and g.logprobs.shape == (6,)
        ids = m.encode("7 * 8 =")
        full = torch.log_softmax(torch.tensor(torch_logits(model, ids + g.tokens)), -1).numpy()
        want = [full[len(ids) - 1 + i, t] for i, t in enumerate(g.tokens)]
        np.testing.assert_allclose(g.logprobs, want, atol=1e-4)
        np.testing.assert_allclose(m.logprobs("7 * 8 =", max_new=6), g.logprobs[: len(m.logprobs("7 * 8 =", max_new=6))])
        a = m.generate("1 + 1 =", temperature=1.0, topp=0.9, seed=123)
        b = m.generate("1 + 1 =", temperature=1.0, topp=0.9, seed=123)
        assert a == b and isinstance(a, str)
        many = {m.generate("1 + 1 =", temperature=2.0, topp=1.0, seed=s, max_new=4) for s in range(20)}
        assert len(many) > 1
        assert m.generate("1 + 1 =", max_new=0) == ""


def test_encoding_matches_the_python_tokenizer(files):
    Tokenizer = pytest.importorskip("tinymath.tokenizer").Tokenizer
    ref = Tokenizer([p.encode() for p in PIECES], SCORES)
    model = make_model()
    path, tok = files(model, "v1")
    with Model(path, tokenizer=tok) as m:
        for text in PROMPTS + ["", "1.00", "000", "10.00 + 99", "  =", "9999 / 1000 = 9.99"]:
            assert m.encode(text) == ref.encode(text, bos=True), text
            assert m.decode(m.encode(text)[1:], prev=BOS) == text


@pytest.mark.parametrize("preset", ["digits", "bpe"])
def test_encoding_matches_sentencepiece(tmp_path, preset):
    """The C encoder gives SentencePiece's ids on problem strings (tokenizers trained by tinymath.tokenizer)."""
    spm = pytest.importorskip("sentencepiece")
    train_tokenizer = pytest.importorskip("tinymath.tokenizer").train_tokenizer
    rng = np.random.default_rng(0)
    problems = []
    for _ in range(400):
        a, b, op = int(rng.integers(0, 100)), int(rng.integers(1, 100)), "+-*/"[int(rng.integers(0, 4))]
        r = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
        problems.append((f"{a} {op} {b} =", f"{r:.2f}"))
    tok_path = train_tokenizer([f"{p} {r}" for p, r in problems], tmp_path / preset, preset=preset, vocab_size=300)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / preset / "tokenizer.model"))
    model = make_model(vocab_size=sp.get_piece_size(), max_seq_len=64)
    path = tmp_path / "model.bin"
    path.write_bytes(export_bytes(model, "v1"))
    with Model(path, tokenizer=tok_path) as m:
        for p, r in problems[:200]:
            for text in (p, f"{p} {r}", r):
                assert m.encode(text) == [BOS] + sp.encode(text), text
                assert m.decode(m.encode(text)[1:], prev=BOS) == text
        if preset == "bpe":  # byte fallback for characters outside the training lines
            assert m.encode("é") == [BOS] + sp.encode("é")
        else:
            with pytest.raises(RuncError, match="U\\+00E9"):
                m.encode("é + 1")


def test_config_properties(files):
    model = make_model(tied=False, n_kv_heads=1, rope_theta=500.0, norm_eps=1e-3)
    path, tok = files(model, "v1")
    with Model(path, tokenizer=tok) as m:
        c = model.cfg
        assert (m.dim, m.hidden_dim, m.n_layers, m.n_heads, m.n_kv_heads, m.vocab_size, m.max_seq_len) == (
            c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len)
        assert m.head_size == c.head_dim and m.version == 1 and m.group_size == 0 and not m.quantized
        assert m.shared_classifier is False and m.context == c.max_seq_len and m.has_tokenizer
        assert m.config["file_bytes"] == path.stat().st_size
        assert "dim=32" in repr(m)
    with Model(path, tokenizer=tok, context=8, mmap=False) as m:
        assert m.context == 8
    # the tokenizer beside the model is found by default; False opens none
    with Model(path) as m:
        assert m.has_tokenizer and m.solve(["1 + 1 ="])
    with Model(path, tokenizer=False) as m:
        assert not m.has_tokenizer
        assert m.logits([BOS, 4, 5]).shape == (3, len(PIECES))
        with pytest.raises(RuncError, match="no tokenizer"):
            m.solve(["1 + 1 ="])


def test_from_bytes(files):
    model = make_model(seed=9)
    path, tok = files(model, "v1")
    with Model(path, tokenizer=tok) as a, Model.from_bytes(path.read_bytes(), tok.read_bytes()) as b:
        assert a.solve(PROMPTS) == b.solve(PROMPTS)
        np.testing.assert_array_equal(a.logits("24 + 82 ="), b.logits("24 + 82 ="))


@pytest.mark.parametrize("kw", [dict(), dict(tied=False, n_kv_heads=4), dict(rope_theta=500.0, norm_eps=1e-3)])
def test_exporter_writes_what_the_spec_says(tmp_path, kw):
    """tinymath.export and the spec writer above agree byte for byte (v0: except its RoPE
    tables, which runc skips and which torch and numpy round differently)."""
    model = make_model(**kw)
    writers = {"v0": write_v0, "v1": write_v1, "v2": lambda p, m: write_v2(p, m, 16)}
    for fmt, writer in writers.items():
        if fmt == "v0" and "rope_theta" in kw:
            continue  # v0 cannot carry the extension: the exporter refuses it
        path = tmp_path / f"spec_{fmt}.bin"
        writer(path, model)
        ours, theirs = path.read_bytes(), export_bytes(model, fmt, 16)
        assert len(ours) == len(theirs), fmt
        if fmt == "v0":
            c = model.cfg
            start = 28 + 4 * (c.vocab_size * c.dim + c.n_layers * (2 * c.dim + 2 * c.dim * c.dim
                                                               + 2 * c.dim * c.n_kv_heads * c.head_dim
                                                               + 3 * c.dim * c.hidden_dim) + c.dim)
            end = start + 4 * c.max_seq_len * c.head_dim
            ours, theirs = ours[:start] + ours[end:], theirs[:start] + theirs[end:]
        assert ours == theirs, fmt


# ---- misuse and bad input ---------------------------------------------------------------

def test_closed_model_and_context_manager(files):
    path, tok = files(make_model(), "v1")
    m = Model(path, tokenizer=tok)
    with m:
        assert not m.closed
    assert m.closed
    for call in (lambda: m.solve(["1 + 1 ="]), lambda: m.logits([1]), lambda: m.generate("1"), lambda: m.dim,
                 lambda: m.encode("1")):
        with pytest.raises(RuncError, match="closed"):
            call()
    m.close()  # idempotent
    assert "closed" in repr(m)


def test_bad_arguments(files):
    path, tok = files(make_model(), "v1")
    with Model(path, tokenizer=tok) as m:
        with pytest.raises(TypeError, match="list of prompt strings"):
            m.solve("24 + 82 =")
        with pytest.raises(ValueError, match="empty list"):
            m.solve([])
        with pytest.raises(TypeError, match="prompt 1 is a int"):
            m.solve(["1 + 1 =", 5])
        with pytest.raises(TypeError):
            m.solve(None)
        with pytest.raises(ValueError, match="NUL"):
            m.solve(["1\x00"])
        with pytest.raises(RuncError, match="context") as e:
            m.solve(["1 + 1 =", "1" * 40])
        assert e.value.status == "RUNC_E_CONTEXT" and "prompt 1" in str(e.value)
        with pytest.raises(RuncError, match="'x'") as e:
            m.solve(["x + 1 ="])
        assert e.value.status == "RUNC_E_ENCODE"
        with pytest.raises(RuncError, match="exceeds the context"):
            m.logits([BOS] * 25)
        with pytest.raises(ValueError, match="empty"):
            m.logits([])
        with pytest.raises(RuncError, match="out of range"):
            m.logits([BOS, 999])
        with pytest.raises(TypeError):
            m.logits([BOS, 1.5])
        with pytest.raises(TypeError):
            m.logits(b"1 + 1")
        with pytest.raises(RuncError, match="temperature"):
            m.generate("1", temperature=-1.0)
        with pytest.raises(RuncError, match="top-p"):
            m.generate("1", topp=2.0)
        with pytest.raises(ValueError, match="max_new"):
            m.generate("1", max_new=-1)
        with pytest.raises(ValueError, match="seed"):
            m.generate("1", seed=-5)
        with pytest.raises(TypeError):
            m.encode(12)
        # still usable after all that
        assert len(m.solve(PROMPTS)) == len(PROMPTS)


def test_bad_files(tmp_path, files):
    path, tok = files(make_model(), "v1")
    data = path.read_bytes()
    cases = {
        "missing": (None, "RUNC_E_IO"),
        "empty": (b"", "RUNC_E_EMPTY"),
        "truncated": (data[:-3], "RUNC_E_TRUNCATED"),
        "header": (data[:100], "RUNC_E_TRUNCATED"),
        "magic": (b"XXXX" + data[4:], "RUNC_E_MAGIC"),
        "version": (data[:4] + struct.pack("<i", 7) + data[8:], "RUNC_E_VERSION"),
        "dim": (data[:8] + struct.pack("<i", 0) + data[12:], "RUNC_E_FIELD"),
        "trailing": (data + b"\0", "RUNC_E_TRAILING"),
    }
    for name, (content, status) in cases.items():
        p = tmp_path / f"bad_{name}.bin"
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(RuncError) as e:
            Model(p, tokenizer=tok)
        assert e.value.status == status, (name, str(e.value))
        assert str(p) in str(e.value)
    # tokenizers: missing, truncated, of another vocabulary
    tdata = tok.read_bytes()
    for name, content, status in [("missing", None, "RUNC_E_IO"), ("cut", tdata[:-1], "RUNC_E_TRUNCATED"),
                                  ("bigger", tdata + struct.pack("<fi", 0.0, 1) + b"x", "RUNC_E_VOCAB"),
                                  ("bad len", tdata[:8] + struct.pack("<i", -1) + tdata[12:], "RUNC_E_TOKENIZER")]:
        tp = tmp_path / f"tok_{name}.bin"
        if content is not None:
            tp.write_bytes(content)
        with pytest.raises(RuncError) as e:
            Model(path, tokenizer=tp)
        assert e.value.status == status, (name, str(e.value))
    with pytest.raises(ValueError, match="context"):
        Model(path, tokenizer=tok, context=0)
    with pytest.raises(RuncError, match="context"):
        Model(path, tokenizer=tok, context=1000)


def test_threads_share_a_model(files):
    model = make_model(seed=10)
    path, tok = files(model, "v1")
    with Model(path, tokenizer=tok) as m:
        want = m.solve(PROMPTS)
        results, errors = [], []

        def work():
            try:
                for _ in range(5):
                    results.append(m.solve(PROMPTS))
            except Exception as e:  # pragma: no cover
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(results) == 20 and all(r == want for r in results)


# ---- which build of the engine is loaded ----------------------------------------------------------------------

def test_a_stale_build_is_named(tmp_path):
    """runc/build_engine.py's guard: one build, newer than every source, or the reason it is not."""
    import os

    from tinymath.runc.build_engine import SOURCES, stale

    for name in (*SOURCES, "build_engine.py"):
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (1_000_000_000, 1_000_000_000))
    assert "no build" in stale(tmp_path)
    (tmp_path / "_engine.abi3.so").write_bytes(b"")
    assert stale(tmp_path) is None  # one build, newer than its sources
    (tmp_path / "_engine.py").write_text("")  # not a build
    assert stale(tmp_path) is None
    os.utime(tmp_path / "batch_kernels.c.inc", (2_000_000_000, 2_000_000_000))
    assert stale(tmp_path) == "batch_kernels.c.inc newer than _engine.abi3.so"
    os.utime(tmp_path / "batch_kernels.c.inc", (1_000_000_000, 1_000_000_000))
    (tmp_path / "_engine.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")  # Python would import this one first
    assert "2 builds" in stale(tmp_path)


def test_a_new_build_replaces_the_old_by_one_rename(tmp_path):
    """refresh() installs a build the way a running sweep can live with: the new file is renamed over
    the old one (the path never goes missing or half-written; a handle on the old file still reads
    it), and a build under another suffix, which Python might import first, is removed."""
    import os

    from tinymath.runc.build_engine import builds, install

    folder, out = tmp_path / "runc", tmp_path / "build"
    folder.mkdir()
    out.mkdir()
    (folder / "_engine.abi3.so").write_bytes(b"old")
    (folder / "_engine.cpython-311-x86_64-linux-gnu.so").write_bytes(b"other")
    (out / "_engine.abi3.so").write_bytes(b"new")
    inode = os.stat(out / "_engine.abi3.so").st_ino
    with open(folder / "_engine.abi3.so", "rb") as held:
        dest = install(out / "_engine.abi3.so", folder)
        assert held.read() == b"old"
    assert builds(folder) == [dest] == [folder / "_engine.abi3.so"]
    assert dest.read_bytes() == b"new" and os.stat(dest).st_ino == inode  # moved, not copied
    assert not (out / "_engine.abi3.so").exists()


def test_a_fresh_interpreter_loads_the_one_fresh_build():
    """What conftest.py makes so in a source checkout: runc/ holds one build, not older than its sources."""
    from tinymath.runc import build_engine

    if not (Path(build_engine.HERE).parent / "setup.py").is_file():
        pytest.skip("an installed package, not a source checkout")
    assert build_engine.stale() is None
    code = ("import sys, tinymath.runc.model as m; m._load_engine(); "
            "print(sys.modules['tinymath.runc._engine'].__file__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [Path(r.stdout.strip()).resolve()] == [p.resolve() for p in build_engine.builds()] == \
        [Path(_engine.__file__).resolve()]


def test_solve_typed_normalises_and_warns_for_untrained_operands(tmp_path):
    """solve(typed=True): the calculators' input rule. Spacing and a trailing '=' as typed give the
    answers of the trained prompt form; an operand outside the card's trained range (here 0-89, 90-99
    held out) is answered with a RangeWarning naming it; plain solve() is untouched."""
    import json
    import shutil

    from tinymath.runc import RangeWarning

    models = Path(__file__).resolve().parent.parent / "models"
    shutil.copy(models / "tinymath.bin", tmp_path / "m.bin")
    card = json.loads((models / "tinymath.json").read_text())  # its sha256 is the copy's too
    card["task"] = {"task": "arith", "ops": "+-*/", "lo": 0, "hi": 89, "holdout": [90, 99]}
    (tmp_path / "m.json").write_text(json.dumps(card))
    with Model(tmp_path / "m.bin", tokenizer=models / "tokenizer.bin") as m:
        assert m.task == card["task"]
        want = m.solve(["24 + 82 =", "12 + 3 =", "5 + 5 ="])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing to warn about
            assert m.solve(["24+82", "  12   +   3", "5+5="], typed=True) == want
        with pytest.warns(RangeWarning, match=r"2 of 3 problems .*prompt 1 \('100 \+ 1 ='\): 100 is outside the "
                                              r"trained range 0-89; prompt 2 \('91 - 45 ='\): 91 is a held-out"):
            assert len(m.solve(["24+82", "100+1", "91 - 45"], typed=True)) == 3
        assert m.range_notes(["24+82", "100+1"]) == [None, "100 is outside the trained range 0-89"]
        with pytest.raises(TypeError, match="typed must be a bool"):
            m.solve(["1 + 1"], typed="yes")
    (tmp_path / "m.json").unlink()  # no card: normalised, no notice possible
    with Model(tmp_path / "m.bin", tokenizer=models / "tokenizer.bin") as m, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.task is None and m.solve(["100+1"], typed=True) == m.solve(["100 + 1 ="])
