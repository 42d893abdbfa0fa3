"""Export: round trips on real weights, header bytes against the format description, bad inputs.

The expected bytes here are built independently of export/layout.py, from the
format description (DESIGN.md, export/__init__.py): struct.pack of the header
fields at their offsets, tensors concatenated in llama2.c's order.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export tests build models with torch (the train extra)")

from tinymath.export import ExportError, export_checkpoint, export_model, read_bin  # noqa: E402
from tinymath.export.checkpoint import from_module  # noqa: E402
from tinymath.export.writers import ExportWarning  # noqa: E402
from tinymath.train.model import ModelConfig, Transformer, rope_tables  # noqa: E402

MAGIC = 0x616B3432

# ---------------------------------------------------------------------------------------------
# models and checkpoints


def make_model(trained: bool = False, seed: int = 0, **kw) -> Transformer:
    """A small Transformer; `trained`: a few AdamW steps on random tokens, so weights are not init."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=4, hidden_dim=96, vocab_size=24,
                                max_seq_len=16), **kw})
    m = Transformer(cfg)
    if trained:
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        for _ in range(5):
            x = torch.randint(0, cfg.vocab_size, (8, cfg.max_seq_len))
            loss = torch.nn.functional.cross_entropy(m(x[:, :-1]).reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # norms move off 1.0 slowly; make sure they are real data too
            for name, p in m.named_parameters():
                if name.endswith("norm.weight"):
                    p.mul_(1 + 0.1 * torch.randn_like(p))
    return m.eval()


def save_ckpt(path: Path, m: Transformer, **extra) -> Path:
    ck = {"model_config": m.cfg.to_dict(), "model": m.state_dict(), "step": 5, "tokens_seen": 640,
          "train_config": {"task": {"name": "arith", "ops": "+-"}, "seed": 7},
          "metrics": {"exact_match": 0.25, "loss": 1.5}}
    ck.update(extra)
    torch.save(ck, path)
    return path


def state(m: Transformer) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}


VARIANTS = {
    "tied-mha": dict(),
    "untied-mha": dict(tied=False),
    "tied-gqa": dict(n_kv_heads=2),
    "untied-mqa": dict(tied=False, n_kv_heads=1),
}

# ---------------------------------------------------------------------------------------------
# the format description, written out independently


def order_v0(L: int, tied: bool) -> list[str]:
    per = lambda s: [f"layers.{i}.{s}" for i in range(L)]  # noqa: E731
    names = ["tok_embeddings.weight", *per("attention_norm.weight"), *per("attention.wq.weight"),
             *per("attention.wk.weight"), *per("attention.wv.weight"), *per("attention.wo.weight"),
             *per("ffn_norm.weight"), *per("feed_forward.w1.weight"), *per("feed_forward.w2.weight"),
             *per("feed_forward.w3.weight"), "norm.weight", "FREQ_COS", "FREQ_SIN"]
    return names if tied else names + ["output.weight"]


def order_norms(L: int) -> list[str]:
    return ([f"layers.{i}.attention_norm.weight" for i in range(L)] + [f"layers.{i}.ffn_norm.weight" for i in range(L)]
            + ["norm.weight"])


def order_mats(L: int, tied: bool) -> list[str]:
    names = ["tok_embeddings.weight"]
    for s in ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
              "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"):
        names += [f"layers.{i}.{s}.weight" for i in range(L)]
    return names if tied else names + ["output.weight"]


def header_v0(c: ModelConfig) -> bytes:
    return struct.pack("<7i", c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                       c.vocab_size if c.tied else -c.vocab_size, c.max_seq_len)


def header_v12(c: ModelConfig, version: int, gs: int | None = None) -> bytes:
    h = bytearray(256)
    struct.pack_into("<I", h, 0, MAGIC)
    struct.pack_into("<i", h, 4, version)
    for k, v in enumerate((c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len)):
        struct.pack_into("<i", h, 8 + 4 * k, v)
    h[36] = 1 if c.tied else 0
    if version == 2:
        struct.pack_into("<i", h, 37, gs)
    if c.rope_theta != 10000.0 or c.norm_eps != 1e-5:
        h[240:244] = b"TMx1"
        struct.pack_into("<f", h, 244, c.rope_theta)
        struct.pack_into("<f", h, 248, c.norm_eps)
    return bytes(h)


def f32(a) -> bytes:
    return np.asarray(a, dtype="<f4").tobytes()


def q80_reference(w: np.ndarray, gs: int) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 as llama2.c's export.py describes it (torch ops here): scale = max|w|/127, round(w/scale)."""
    t = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).reshape(-1, gs)
    scale = t.abs().max(dim=1).values / 127.0
    q = torch.round(t / scale[:, None]).to(torch.int8)
    return q.numpy().reshape(-1), scale.numpy()


# ---------------------------------------------------------------------------------------------
# fp32 round trips and exact bytes


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("trained", [False, True], ids=["init", "trained"])
def test_v1_bytes_and_round_trip(tmp_path, variant, trained):
    m = make_model(trained, **VARIANTS[variant])
    c, sd = m.cfg, state(m)
    r = export_checkpoint(save_ckpt(tmp_path / "ck.pt", m), "v1", tmp_path / "m.bin")
    data = (tmp_path / "m.bin").read_bytes()
    want = header_v12(c, 1) + b"".join(f32(sd[n]) for n in order_norms(c.n_layers) + order_mats(c.n_layers, c.tied))
    assert data == want
    assert r.bytes == len(data) and r.sha256 == hashlib.sha256(data).hexdigest()
    # field by field, as a C reader would see them
    assert struct.unpack_from("<I", data, 0)[0] == MAGIC and data[:4] == b"24ka"
    assert struct.unpack_from("<i", data, 4)[0] == 1
    assert struct.unpack_from("<7i", data, 8) == (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                                                  c.vocab_size, c.max_seq_len)
    assert data[36] == int(c.tied) and data[37:256] == bytes(219)
    bm = read_bin(tmp_path / "m.bin")
    assert bm.version == 1 and bm.config.model_config() == c.to_dict()
    got = bm.state_dict()
    assert set(got) == set(sd)
    for name, a in sd.items():
        assert np.array_equal(got[name], a), name


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("trained", [False, True], ids=["init", "trained"])
def test_v0_bytes_and_round_trip(tmp_path, variant, trained):
    m = make_model(trained, **VARIANTS[variant])
    c, sd = m.cfg, state(m)
    export_checkpoint(save_ckpt(tmp_path / "ck.pt", m), "v0", tmp_path / "m.bin")
    data = (tmp_path / "m.bin").read_bytes()
    assert struct.unpack_from("<7i", data, 0) == struct.unpack("<7i", header_v0(c))
    assert (struct.unpack_from("<i", data, 20)[0] < 0) == (not c.tied)
    # walk the file in the described order
    off = 28
    cos, sin = rope_tables(c.head_dim, c.max_seq_len, c.rope_theta)
    for name in order_v0(c.n_layers, c.tied):
        if name.startswith("FREQ"):
            table = (cos if name == "FREQ_COS" else sin).numpy()
            got = np.frombuffer(data, "<f4", table.size, off).reshape(table.shape)
            np.testing.assert_allclose(got, table, atol=1e-6)  # RoPE tables run.c skips: ulp-level agreement
            off += 4 * table.size
        else:
            n = sd[name].size
            assert data[off: off + 4 * n] == f32(sd[name]), name
            off += 4 * n
    assert off == len(data)
    bm = read_bin(tmp_path / "m.bin")
    assert bm.version == 0 and bm.config.shared_classifier == c.tied
    got = bm.state_dict()
    for name, a in sd.items():
        assert np.array_equal(got[name], a), name
    assert bm.tensors["freq_cis_real"].shape == (c.max_seq_len, c.head_dim // 2)


# ---------------------------------------------------------------------------------------------
# int8


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("trained", [False, True], ids=["init", "trained"])
def test_v2_bytes_and_quantization_bound(tmp_path, variant, trained):
    m = make_model(trained, **VARIANTS[variant])
    c, sd = m.cfg, state(m)
    r = export_checkpoint(save_ckpt(tmp_path / "ck.pt", m), "v2", tmp_path / "m.bin")
    gs = 32  # dim 32, hidden 96 -> gcd 32 (<= 64)
    assert r.group_size == gs
    data = (tmp_path / "m.bin").read_bytes()
    assert data[:256] == header_v12(c, 2, gs)
    assert struct.unpack_from("<i", data, 37)[0] == gs
    off = 256
    for name in order_norms(c.n_layers):
        assert data[off: off + 4 * sd[name].size] == f32(sd[name]), name
        off += 4 * sd[name].size
    for name in order_mats(c.n_layers, c.tied):
        n = sd[name].size
        q_ref, s_ref = q80_reference(sd[name], gs)
        assert np.array_equal(np.frombuffer(data, np.int8, n, off), q_ref), name
        off += n
        assert data[off: off + 4 * (n // gs)] == f32(s_ref), name
        off += 4 * (n // gs)
    assert off == len(data)

    bm = read_bin(tmp_path / "m.bin")
    assert bm.config.group_size == gs
    deq = read_bin(tmp_path / "m.bin", dequantize=True).state_dict()
    for name, w in sd.items():
        if name.endswith("norm.weight"):
            assert np.array_equal(deq[name], w)
            continue
        qt = bm.tensors["tok_embeddings.weight" if (name == "output.weight" and c.tied) else name]
        assert qt.q.dtype == np.int8 and np.abs(qt.q.astype(int)).max() <= 127
        err = np.abs(deq[name] - w).reshape(-1, gs)
        half = qt.s[:, None] / 2
        # |err| <= scale/2 per group, up to float32 rounding (relative 1e-4 of the half-step)
        assert (err <= half * (1 + 1e-4) + 1e-12).all(), (name, float((err / half).max()))
        assert np.allclose(qt.s, np.abs(w).reshape(-1, gs).max(1) / 127, rtol=1e-6)


def test_group_size_rule_and_choice(tmp_path):
    from tinymath.export.layout import BinConfig, default_group_size

    def gs(dim, hidden, heads=2):
        return default_group_size(BinConfig(dim, hidden, 1, heads, heads, 10, 8, True))

    assert gs(64, 176) == 16  # gcd 16
    assert gs(64, 128) == 64
    assert gs(96, 256) == 32
    assert gs(288, 768) == 48  # gcd 96: the largest divisor <= 64
    assert gs(256, 512) == 64  # capped at 64
    assert gs(36, 50) == 2
    m = make_model(dim=32, hidden_dim=88)  # gcd(32, 88) = 8
    ck = save_ckpt(tmp_path / "ck.pt", m)
    assert export_checkpoint(ck, "v2", tmp_path / "a.bin").group_size == 8
    assert export_checkpoint(ck, "v2", tmp_path / "b.bin", group_size=4).group_size == 4
    with pytest.raises(ExportError, match="does not divide hidden_dim=88"):
        export_checkpoint(ck, "v2", tmp_path / "c.bin", group_size=16)
    with pytest.raises(ExportError, match="positive"):
        export_checkpoint(ck, "v2", tmp_path / "c.bin", group_size=0)
    with pytest.raises(ExportError, match="only to v2"):
        export_checkpoint(ck, "v1", tmp_path / "c.bin", group_size=8)
    assert not (tmp_path / "c.bin").exists()


# ---------------------------------------------------------------------------------------------
# rope_theta / norm_eps: the TMx1 header extension


@pytest.mark.parametrize("kw", [dict(rope_theta=500.0), dict(norm_eps=1e-6), dict(rope_theta=1e6, norm_eps=1e-6)])
@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_tmx1_extension(tmp_path, kw, fmt):
    m = make_model(True, tied=False, n_kv_heads=2, **kw)
    ck = save_ckpt(tmp_path / "ck.pt", m)
    with pytest.warns(ExportWarning, match="llama2.c's runners ignore"):
        r = export_checkpoint(ck, fmt, tmp_path / "m.bin")
    data = (tmp_path / "m.bin").read_bytes()
    assert data[:256] == header_v12(m.cfg, int(fmt[1]), r.group_size)
    assert data[240:244] == b"TMx1"
    theta, eps = struct.unpack_from("<ff", data, 244)
    assert theta == np.float32(m.cfg.rope_theta) and eps == np.float32(m.cfg.norm_eps)
    assert data[252:256] == bytes(4)
    cfg = read_bin(tmp_path / "m.bin").config
    assert cfg.extension and cfg.rope_theta == m.cfg.rope_theta and cfg.norm_eps == m.cfg.norm_eps
    assert r.card["header_extension"]["tag"] == "TMx1" and r.warnings
    # v0 cannot carry it: refused, nothing written
    with pytest.raises(ExportError, match="version 0 cannot carry"):
        export_checkpoint(ck, "v0", tmp_path / "v0.bin")
    assert not (tmp_path / "v0.bin").exists()


def test_default_model_has_no_extension_and_no_warning(tmp_path):
    ck = save_ckpt(tmp_path / "ck.pt", make_model())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fmt in ("v0", "v1", "v2"):
            export_checkpoint(ck, fmt, tmp_path / f"{fmt}.bin")
    for fmt in ("v1", "v2"):
        data = (tmp_path / f"{fmt}.bin").read_bytes()
        assert data[240:256] == bytes(16)
        assert not read_bin(tmp_path / f"{fmt}.bin").config.extension


# ---------------------------------------------------------------------------------------------
# Hugging Face


def _hf():
    return pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[test]')")


@pytest.mark.parametrize("kw", [dict(), dict(tied=False), dict(n_kv_heads=2), dict(tied=False, n_kv_heads=1),
                                dict(n_kv_heads=2, rope_theta=500.0, norm_eps=1e-6)],
                         ids=["tied", "untied", "gqa", "mqa-untied", "gqa-theta-eps"])
def test_hf_logits_match_torch(tmp_path, kw):
    transformers = _hf()
    pytest.importorskip("safetensors", reason="safetensors is not installed (pip install -e '.[test]')")
    m = make_model(True, **kw)
    r = export_checkpoint(save_ckpt(tmp_path / "ck.pt", m), "hf", tmp_path / "hf")
    assert r.path == tmp_path / "hf" and (tmp_path / "hf" / "model.safetensors").is_file()
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.tie_word_embeddings == m.cfg.tied
    x = torch.randint(0, m.cfg.vocab_size, (3, m.cfg.max_seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = m(x), hf(x).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def _train_sentencepiece(tmp_path: Path, vocab_size: int) -> Path:
    spm = pytest.importorskip("sentencepiece")
    lines = [f"{a} {op} {b} = {a + b}" for a in range(0, 100, 7) for b in range(3, 100, 11) for op in "+-"]
    (tmp_path / "corpus.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=vocab_size, model_type="bpe", split_digits=True,
                                   character_coverage=1.0, minloglevel=2)
    return tmp_path / "sp.model"


def test_hf_tokenizer_copied_and_loadable(tmp_path):
    transformers = _hf()
    tok = _train_sentencepiece(tmp_path, 20)
    m = make_model(vocab_size=24)
    ck = save_ckpt(tmp_path / "ck.pt", m, tokenizer=str(tok))
    with pytest.warns(ExportWarning, match="no tokenizer.json: the SentencePiece model sp.model normalises"):
        export_checkpoint(ck, "hf", tmp_path / "hf")  # SentencePiece's default normaliser (nmt_nfkc)
    d = tmp_path / "hf"
    assert (d / "tokenizer.model").read_bytes() == tok.read_bytes() and not (d / "tokenizer.json").exists()
    tc = json.loads((d / "tokenizer_config.json").read_text())
    assert tc["tokenizer_class"] == "LlamaTokenizer" and tc["bos_token"] == "<s>"
    cfg = json.loads((d / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)
    card = json.loads((d / "tinymath_card.json").read_text())
    assert card["tokenizer"]["model"]["sha256"] == hashlib.sha256(tok.read_bytes()).hexdigest()
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        pytest.skip("transformers needs protobuf to read a SentencePiece tokenizer.model; files checked above")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tok))
    t = transformers.AutoTokenizer.from_pretrained(d)
    for s in ["24 + 82 = 106", "7 - 93 = -86", "0 + 0 = 0"]:
        assert t(s)["input_ids"] == [sp.bos_id()] + sp.encode(s)


def test_hf_named_tokenizer_missing_is_an_error(tmp_path):
    _hf()
    ck = save_ckpt(tmp_path / "ck.pt", make_model(), tokenizer="nowhere/tok.model")
    with pytest.raises(ExportError, match="tokenizer nowhere/tok.model not found"):
        export_checkpoint(ck, "hf", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_hf_permutation_is_inverse_of_llama2c_reverse():
    from tinymath.export.hf import rotary_from_hf, rotary_to_hf

    w = np.arange(48 * 6, dtype=np.float32).reshape(48, 6)  # 48 rows: 8 heads of 6, 4 of 12, 2 of 24
    for heads in (8, 4, 2):
        p = rotary_to_hf(w, heads)
        hs = w.shape[0] // heads
        # head 0: rows 0,2,4,... then 1,3,5,...
        assert np.array_equal(p[:hs], np.concatenate([w[0:hs:2], w[1:hs:2]]))
        assert np.array_equal(rotary_from_hf(p, heads), w)


# ---------------------------------------------------------------------------------------------
# model card


def test_model_card(tmp_path):
    m = make_model(True, tied=False)
    tok = tmp_path / "tok.model"
    tok.write_bytes(b"not really a tokenizer")
    ck = save_ckpt(tmp_path / "ck.pt", m, tokenizer=str(tok))
    r = export_checkpoint(ck, "v2", tmp_path / "m.bin")
    card = json.loads((tmp_path / "m.json").read_text())
    assert r.card_path == tmp_path / "m.json" and card == r.card
    assert card["sha256"] == hashlib.sha256((tmp_path / "m.bin").read_bytes()).hexdigest()
    assert card["bytes"] == (tmp_path / "m.bin").stat().st_size
    assert card["format"] == "v2" and card["version"] == 2 and card["group_size"] == 32
    assert card["config"] == m.cfg.to_dict()
    assert card["n_params"] == m.cfg.n_params() == sum(p.numel() for p in m.parameters())
    assert card["tokenizer"] == {"model": {"path": "tok.model", "sha256": hashlib.sha256(tok.read_bytes()).hexdigest()}}
    assert card["task"] == {"name": "arith", "ops": "+-"} and card["seed"] == 7
    assert card["step"] == 5 and card["tokens_seen"] == 640
    assert card["accuracy"] == {"exact_match": 0.25}
    assert card["source"]["sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()
    assert 0 < card["quantization"]["max_abs_error"] < 0.01
    assert "llama2.c runq.c" in card["runs_in"]


def test_card_without_optional_metadata(tmp_path):
    m = make_model()
    torch.save({"model_config": m.cfg.to_dict(), "model": m.state_dict()}, tmp_path / "ck.pt")
    r = export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "m.bin")
    assert r.card["tokenizer"] is None and r.card["accuracy"] is None and r.card["step"] is None


# ---------------------------------------------------------------------------------------------
# bad inputs


def _listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


@pytest.fixture
def ckpt_dict():
    m = make_model()
    return {"model_config": m.cfg.to_dict(), "model": m.state_dict(), "step": 1, "tokens_seen": 1,
            "train_config": {"task": {}, "seed": 0}}


def test_missing_tensor(tmp_path, ckpt_dict):
    del ckpt_dict["model"]["layers.1.feed_forward.w3.weight"]
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    before = _listing(tmp_path)
    with pytest.raises(ExportError, match=r"missing tensors \['layers.1.feed_forward.w3.weight'\]"):
        export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "m.bin")
    assert _listing(tmp_path) == before


def test_unexpected_tensor(tmp_path, ckpt_dict):
    ckpt_dict["model"]["layers.2.attention.wq.weight"] = torch.zeros(32, 32)
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    with pytest.raises(ExportError, match=r"unexpected tensors \['layers.2.attention.wq.weight'\]"):
        export_checkpoint(tmp_path / "ck.pt", "v2", tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


def test_wrong_shape(tmp_path, ckpt_dict):
    ckpt_dict["model"]["layers.0.attention.wk.weight"] = torch.zeros(16, 32)
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    with pytest.raises(ExportError, match=r"layers.0.attention.wk.weight has shape \(16, 32\), the config implies \(32, 32\)"):
        export_checkpoint(tmp_path / "ck.pt", "v0", tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


def test_wrong_config_for_weights(tmp_path, ckpt_dict):
    ckpt_dict["model_config"]["hidden_dim"] = 64
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    with pytest.raises(ExportError, match="feed_forward.w1.weight has shape"):
        export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "m.bin")


def test_non_finite_and_broken_tie(tmp_path, ckpt_dict):
    ckpt_dict["model"]["norm.weight"] = ckpt_dict["model"]["norm.weight"].clone()
    ckpt_dict["model"]["norm.weight"][3] = float("nan")
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    with pytest.raises(ExportError, match="norm.weight has 1 non-finite"):
        export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "m.bin")
    m = make_model()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["output.weight"] += 1
    torch.save({"model_config": m.cfg.to_dict(), "model": sd}, tmp_path / "ck2.pt")
    with pytest.raises(ExportError, match="says tied, but output.weight differs"):
        export_checkpoint(tmp_path / "ck2.pt", "v1", tmp_path / "m.bin")


def test_not_a_checkpoint(tmp_path, ckpt_dict):
    (tmp_path / "junk.pt").write_bytes(b"hello")
    with pytest.raises(ExportError, match="not a loadable torch checkpoint"):
        export_checkpoint(tmp_path / "junk.pt", "v1", tmp_path / "m.bin")
    del ckpt_dict["model_config"]
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    with pytest.raises(ExportError, match="no 'model_config' entry"):
        export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "m.bin")
    with pytest.raises(ExportError, match="no such checkpoint"):
        export_checkpoint(tmp_path / "absent.pt", "v1", tmp_path / "m.bin")


def test_unknown_format(tmp_path, ckpt_dict):
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    with pytest.raises(ExportError, match=r"unknown format 'v3' \(known: v0, v1, v2, hf\)"):
        export_checkpoint(tmp_path / "ck.pt", "v3", tmp_path / "m.bin")
    with pytest.raises(ExportError, match="unknown format"):
        export_model(from_module(make_model()), "gguf", tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


@pytest.mark.parametrize("fmt", ["v0", "v1", "v2", "hf"])
def test_missing_output_directory(tmp_path, ckpt_dict, fmt):
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    with pytest.raises(ExportError, match="output directory does not exist"):
        export_checkpoint(tmp_path / "ck.pt", fmt, tmp_path / "no" / "such" / "m.bin")
    assert not (tmp_path / "no").exists()


def test_card_name_clash_and_directory_output(tmp_path, ckpt_dict):
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    with pytest.raises(ExportError, match="ends in .json"):
        export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "m.json")
    (tmp_path / "d").mkdir()
    with pytest.raises(ExportError, match="is a directory"):
        export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "d")


def test_failure_mid_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    ck = save_ckpt(tmp_path / "ck.pt", make_model())
    (tmp_path / "m.bin").write_bytes(b"old")
    import tinymath.export.writers as writers

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writers, "quantize", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_checkpoint(ck, "v2", tmp_path / "m.bin")
    assert (tmp_path / "m.bin").read_bytes() == b"old"
    assert _listing(tmp_path) == ["ck.pt", "m.bin"]


def test_compiled_or_ddp_prefixes_are_accepted(tmp_path, ckpt_dict):
    ckpt_dict["model"] = {"_orig_mod." + k: v for k, v in ckpt_dict["model"].items()}
    torch.save(ckpt_dict, tmp_path / "ck.pt")
    export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "m.bin")
    assert read_bin(tmp_path / "m.bin").config.dim == 32


# ---------------------------------------------------------------------------------------------
# the reader


def test_reader_rejects_broken_files(tmp_path):
    ck = save_ckpt(tmp_path / "ck.pt", make_model(tied=False))
    for fmt in ("v0", "v1", "v2"):
        export_checkpoint(ck, fmt, tmp_path / f"{fmt}.bin")
        data = (tmp_path / f"{fmt}.bin").read_bytes()
        (tmp_path / "t.bin").write_bytes(data[:-4])
        with pytest.raises(ExportError, match="truncated"):
            read_bin(tmp_path / "t.bin")
        (tmp_path / "t.bin").write_bytes(data + b"\0")
        with pytest.raises(ExportError, match="trailing bytes"):
            read_bin(tmp_path / "t.bin")
    v1 = bytearray((tmp_path / "v1.bin").read_bytes())
    struct.pack_into("<i", v1, 4, 3)
    (tmp_path / "t.bin").write_bytes(bytes(v1))
    with pytest.raises(ExportError, match="unknown version 3"):
        read_bin(tmp_path / "t.bin")
    v1 = bytearray((tmp_path / "v1.bin").read_bytes())
    struct.pack_into("<i", v1, 8 + 12, 5)  # n_heads 5 does not divide dim 32
    (tmp_path / "t.bin").write_bytes(bytes(v1))
    with pytest.raises(ExportError, match="n_heads"):
        read_bin(tmp_path / "t.bin")
    v1 = bytearray((tmp_path / "v1.bin").read_bytes())
    v1[240:244] = b"XYZ1"
    (tmp_path / "t.bin").write_bytes(bytes(v1))
    with pytest.raises(ExportError, match="unknown header extension at byte 240"):
        read_bin(tmp_path / "t.bin")
    with pytest.raises(ExportError, match="no such file"):
        read_bin(tmp_path / "absent.bin")


def test_reader_weights_run_in_the_torch_model(tmp_path):
    m = make_model(True, tied=False, n_kv_heads=2, rope_theta=500.0)
    with pytest.warns(ExportWarning):
        export_checkpoint(save_ckpt(tmp_path / "ck.pt", m), "v1", tmp_path / "m.bin")
    bm = read_bin(tmp_path / "m.bin")
    m2 = Transformer(ModelConfig.from_dict(bm.config.model_config()))
    m2.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in bm.state_dict().items()})
    x = torch.randint(0, 24, (2, 16))
    with torch.no_grad():
        assert torch.equal(m.eval()(x), m2.eval()(x))


def test_reexport_from_a_float32_bin(tmp_path):
    m = make_model(True, tied=False)
    export_checkpoint(save_ckpt(tmp_path / "ck.pt", m), "v0", tmp_path / "v0.bin")
    from tinymath.export.source import from_bin_model

    em = from_bin_model(read_bin(tmp_path / "v0.bin"))
    export_model(em, "v1", tmp_path / "v1.bin")
    export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "direct.bin")
    assert (tmp_path / "v1.bin").read_bytes() == (tmp_path / "direct.bin").read_bytes()
    export_model(em, "v2", tmp_path / "v2.bin")
    with pytest.raises(ExportError, match="cannot re-export a version 2"):
        from_bin_model(read_bin(tmp_path / "v2.bin"))


def test_reader_and_report_import_no_torch(tmp_path):
    m = make_model(True, n_kv_heads=2)
    ck = save_ckpt(tmp_path / "ck.pt", m)
    for fmt in ("v0", "v1", "v2"):
        export_checkpoint(ck, fmt, tmp_path / f"{fmt}.bin")
    code = f"""
import sys
sys.modules['torch'] = None  # any 'import torch' now raises ImportError
import numpy as np
from tinymath.export.reader import read_bin
from tinymath.export.int8_report import quant_report
from tinymath.export.cli import run, add_arguments
import tinymath.export
for v in ('v0', 'v1', 'v2'):
    b = read_bin(r'{tmp_path}/' + v + '.bin', dequantize=True)
    assert b.state_dict()['tok_embeddings.weight'].shape == (24, 32)
rep = quant_report(r'{tmp_path}/v2.bin', r'{tmp_path}/v1.bin')
assert rep.ok, rep.format()
from tinymath.cli import main
assert main(['export', r'{tmp_path}/v2.bin', '--report', '--against', r'{tmp_path}/v0.bin']) == 0
assert sys.modules['torch'] is None and not [k for k in sys.modules if k.startswith('torch.')]
print('OK')
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr + p.stdout
    assert "OK" in p.stdout


# ---------------------------------------------------------------------------------------------
# the int8 report


def test_report_v2_against_its_source_and_a_stranger(tmp_path):
    from tinymath.export import quant_report

    m = make_model(True)
    ck = save_ckpt(tmp_path / "ck.pt", m)
    for fmt in ("v1", "v2"):
        export_checkpoint(ck, fmt, tmp_path / f"{fmt}.bin")
    rep = quant_report(tmp_path / "v2.bin", tmp_path / "v1.bin")
    assert rep.ok and rep.fp32_max_diff == 0.0 and rep.group_size == 32
    assert {r.name for r in rep.rows} == set(order_mats(2, True))
    assert 0 < rep.max_abs < 1e-2
    sd = state(m)
    wq = sd["layers.0.attention.wq.weight"]
    row = next(r for r in rep.rows if r.name == "layers.0.attention.wq.weight")
    q, s = q80_reference(wq, 32)
    deq = (q.reshape(-1, 32).astype(np.float32) * s[:, None]).reshape(wq.shape)
    assert row.max_abs == pytest.approx(float(np.abs(deq - wq).max()), rel=1e-6)
    assert row.mean_abs == pytest.approx(float(np.abs(deq - wq).mean()), rel=1e-5)
    # the same, the other way round, against the checkpoint, and from the card's source
    assert quant_report(tmp_path / "v1.bin", tmp_path / "v2.bin").max_abs == rep.max_abs
    assert quant_report(tmp_path / "v2.bin", ck).max_abs == rep.max_abs
    assert quant_report(tmp_path / "v2.bin").reference.startswith(str(ck))
    # a float32 file alone: what a v2 export would lose
    assert quant_report(tmp_path / "v1.bin").max_abs == rep.max_abs
    # the wrong reference breaks the bound
    export_checkpoint(save_ckpt(tmp_path / "other.pt", make_model(True, seed=3)), "v1", tmp_path / "other.bin")
    bad = quant_report(tmp_path / "v2.bin", tmp_path / "other.bin")
    assert not bad.ok and not bad.within_bound and bad.fp32_max_diff > 0
    with pytest.raises(ExportError, match="both files are version 2"):
        quant_report(tmp_path / "v2.bin", tmp_path / "v2.bin")


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli(tmp_path, capsys):
    from tinymath.cli import main

    ck = save_ckpt(tmp_path / "ck.pt", make_model(True))
    assert main(["export", str(ck), "--format", "v2", "--out", str(tmp_path / "m.bin")]) == 0
    out = capsys.readouterr().out
    assert "group size 32" in out and "model card" in out
    assert (tmp_path / "m.bin").is_file() and (tmp_path / "m.json").is_file()
    assert main(["export", str(ck), "--format", "v1", "--out", str(tmp_path / "m1.bin")]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "m.bin"), "--report", "--against", str(tmp_path / "m1.bin")]) == 0
    out = capsys.readouterr().out
    assert "layers.1.feed_forward.w2.weight" in out and "identical to the reference" in out
    assert main(["export", str(tmp_path / "m.bin"), "--report", "--json"]) == 0  # reference from the card
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["group_size"] == 32 and len(rep["tensors"]) == 15
    # errors: one line, exit 2
    assert main(["export", str(ck), "--format", "v1", "--out", str(tmp_path / "nope" / "m.bin")]) == 2
    assert "output directory does not exist" in capsys.readouterr().err
    assert main(["export", str(ck), "--format", "v1"]) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", str(ck), "--format", "v9", "--out", str(tmp_path / "x.bin")])
    assert e.value.code == 2
    assert "invalid choice: 'v9'" in capsys.readouterr().err
    # rope_theta: v1 warns on stderr, v0 refuses
    ck2 = save_ckpt(tmp_path / "ck2.pt", make_model(rope_theta=500.0))
    assert main(["export", str(ck2), "--format", "v1", "--out", str(tmp_path / "r.bin")]) == 0
    assert "warning:" in capsys.readouterr().err
    assert main(["export", str(ck2), "--format", "v0", "--out", str(tmp_path / "r0.bin")]) == 2
    assert "version 0 cannot carry" in capsys.readouterr().err
    assert not (tmp_path / "r0.bin").exists()


def test_training_stage_checkpoint_layout_moved_run_folder(tmp_path):
    """train/ records tokenizer (tokenizer.bin) and tokenizer_model as absolute paths in the run folder;
    a run folder that moved still finds them beside the checkpoint."""
    _hf()
    run = tmp_path / "run"
    run.mkdir()
    tok = _train_sentencepiece(tmp_path, 20)
    (run / "tokenizer.model").write_bytes(tok.read_bytes())
    (run / "tokenizer.bin").write_bytes(b"\x01\x00\x00\x00")
    m = make_model(vocab_size=24)
    gone = "/no/longer/here/run"
    ck = save_ckpt(run / "ckpt.pt", m, tokenizer=f"{gone}/tokenizer.bin", tokenizer_model=f"{gone}/tokenizer.model",
                   task={"name": "arith"}, metrics={"step": 5, "val_acc": 0.5, "holdout_acc": 0.25, "loss": 1.0},
                   best_val_acc=0.5)
    r = export_checkpoint(ck, "v1", tmp_path / "m.bin")
    tokc = r.card["tokenizer"]
    assert tokc["bin"]["sha256"] == hashlib.sha256(b"\x01\x00\x00\x00").hexdigest()
    assert tokc["model"]["sha256"] == hashlib.sha256(tok.read_bytes()).hexdigest()
    assert r.card["accuracy"] == {"val_acc": 0.5, "holdout_acc": 0.25, "best_val_acc": 0.5}
    with pytest.warns(ExportWarning, match="no tokenizer.json"):  # SentencePiece's default normaliser
        export_checkpoint(ck, "hf", tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.model").read_bytes() == tok.read_bytes()


def test_bf16_checkpoint_and_hf_reexport_into_existing_folder(tmp_path):
    m = make_model(True, tied=False)
    sd = {k: v.to(torch.bfloat16) for k, v in m.state_dict().items()}
    torch.save({"model_config": m.cfg.to_dict(), "model": sd}, tmp_path / "ck.pt")
    export_checkpoint(tmp_path / "ck.pt", "v1", tmp_path / "m.bin")
    got = read_bin(tmp_path / "m.bin").state_dict()
    for k, v in sd.items():
        assert np.array_equal(got[k], v.float().numpy()), k
    _hf()
    export_checkpoint(tmp_path / "ck.pt", "hf", tmp_path / "hf")
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    export_checkpoint(tmp_path / "ck.pt", "hf", tmp_path / "hf")  # into the existing folder, file by file
    assert (tmp_path / "hf" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_int8_bin_with_a_bad_group_size_names_the_header(tmp_path, capsys):
    """A v2 file whose group size is wrong is a .bin with a bad header, not 'not a torch checkpoint'."""
    from tinymath.cli import main

    models = Path(__file__).resolve().parent.parent / "models"
    data = bytearray((models / "tinymath.q8.bin").read_bytes())
    struct.pack_into("<i", data, 37, 7)
    bad = tmp_path / "bad.q8.bin"
    bad.write_bytes(bytes(data))
    assert main(["export", str(bad), "--format", "v1", "--out", str(tmp_path / "out.bin")]) == 2
    err = capsys.readouterr().err
    assert "group size 7" in err and "checkpoint" not in err, err


@pytest.mark.parametrize("tied", [True, False])
def test_llama2c_checkpoint_with_model_args_exports(tmp_path, tied):
    """llama2.c's train.py checkpoint (model_args, llama2.c's weight names, torch.compile's prefix, a
    tied classifier stored twice) exports to the same file as our own checkpoint of the same weights."""
    m = make_model(True, tied=tied, n_kv_heads=2)
    ours = save_ckpt(tmp_path / "ours.pt", m)
    sd = {f"_orig_mod.{k}": v for k, v in m.state_dict().items()}
    if tied:
        sd["_orig_mod.output.weight"] = sd["_orig_mod.tok_embeddings.weight"]  # llama2.c shares the tensor
    args = {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 24, "multiple_of": 32,
            "max_seq_len": 16, "dropout": 0.0}
    theirs = tmp_path / "llama2c.pt"
    torch.save({"model": sd, "model_args": args, "iter_num": 5, "best_val_loss": 1.0, "config": {}}, theirs)
    a = export_checkpoint(ours, "v1", tmp_path / "a.bin")
    b = export_checkpoint(theirs, "v1", tmp_path / "b.bin")
    assert a.path.read_bytes() == b.path.read_bytes()
    with pytest.raises(ExportError, match="model_config"):
        torch.save({"model": sd}, tmp_path / "bare.pt")
        export_checkpoint(tmp_path / "bare.pt", "v1", tmp_path / "c.bin")


def test_reexport_of_the_shipped_bin_keeps_its_card_and_hf_folder_is_readable(tmp_path):
    """A .bin re-exported (here to HF and to int8) keeps what its card knew: task, seed, accuracy,
    tokenizer; the HF folder gets the usual folder mode, not mkdtemp's 0700."""
    _hf()
    models = Path(__file__).resolve().parent.parent / "models"
    src = json.loads((models / "tinymath.json").read_text())
    export_model_from = [sys.executable, "-m", "tinymath.cli", "export", str(models / "tinymath.bin")]
    r = subprocess.run(export_model_from + ["--format", "hf", "--out", str(tmp_path / "hf")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "hf" / "tinymath_card.json").read_text())
    assert card["task"] == src["task"] and card["seed"] == src["seed"] and card["accuracy"] == src["accuracy"]
    assert (tmp_path / "hf" / "tokenizer.model").read_bytes() == (models / "tokenizer.model").read_bytes()
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "hf").stat().st_mode & 0o777 == 0o777 & ~mask
    r = subprocess.run(export_model_from + ["--format", "v2", "--out", str(tmp_path / "m.q8.bin")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    q8 = json.loads((tmp_path / "m.q8.json").read_text())
    assert q8["task"] == src["task"] and q8["tokenizer"]["bin"]["sha256"] == src["tokenizer"]["bin"]["sha256"]


def test_reexport_and_report_refuse_non_finite_weights(tmp_path, capsys):
    """A .bin with a NaN or inf weight is refused by every export path and by --report, naming the tensor
    (it used to pass v1, write a NaN scale for v2 and then raise a TypeError, and --report said yes)."""
    from tinymath.cli import main

    models = Path(__file__).resolve().parent.parent / "models"
    data = bytearray((models / "tinymath.bin").read_bytes())
    struct.pack_into("<f", data, 256 + 4 * 3, float("nan"))  # a weight just past the 256-byte v1 header
    bad = tmp_path / "nan.bin"
    bad.write_bytes(bytes(data))
    for args in (["--format", "v1", "--out", str(tmp_path / "a.bin")],
                 ["--format", "v2", "--out", str(tmp_path / "b.bin")], ["--report"]):
        assert main(["export", str(bad), *args]) == 2, args
        err = capsys.readouterr().err
        assert "non-finite" in err and "Traceback" not in err, err
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "b.bin").exists()


# ---------------------------------------------------------------------------------------------
# a Hugging Face Llama folder -> .bin (the import llama2.c's export.py does with --hf)

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_hf_folder_back_to_bin_is_byte_identical_and_answers_the_same(tmp_path, capsys):
    """The shipped model -> HF folder -> v1 .bin: the same bytes, the card's task kept, and the C engine
    answers the same; the int8 file from the folder equals the int8 file from the original."""
    _hf()
    from tinymath.cli import main
    from tinymath.runc import Model

    assert main(["export", str(MODELS / "tinymath.bin"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert main(["export", str(tmp_path / "hf"), "--format", "v1", "--out", str(tmp_path / "back.bin")]) == 0
    assert main(["export", str(tmp_path / "hf"), "--format", "v2", "--out", str(tmp_path / "back.q8.bin")]) == 0
    assert main(["export", str(MODELS / "tinymath.bin"), "--format", "v2", "--out", str(tmp_path / "q8.bin")]) == 0
    capsys.readouterr()
    assert (tmp_path / "back.bin").read_bytes() == (MODELS / "tinymath.bin").read_bytes()
    assert (tmp_path / "back.q8.bin").read_bytes() == (tmp_path / "q8.bin").read_bytes()
    card = json.loads((tmp_path / "back.json").read_text())
    src = json.loads((MODELS / "tinymath.json").read_text())
    assert card["task"] == src["task"] and card["accuracy"] == src["accuracy"]
    assert card["source"] == {"hf": "hf"} and card["tokenizer"]["model"]["path"] == "hf/tokenizer.model"
    prompts = ["24 + 82 =", "36 / 3 =", "7 * 8 =", "91 - 45 ="]
    with Model(MODELS / "tinymath.bin", tokenizer=MODELS / "tokenizer.bin") as a, \
            Model(tmp_path / "back.bin", tokenizer=MODELS / "tokenizer.bin") as b:
        assert a.solve(prompts) == b.solve(prompts)


@pytest.mark.parametrize("kw", [dict(tied=False, n_kv_heads=1), dict(n_kv_heads=2, rope_theta=500.0, norm_eps=1e-6)],
                         ids=["mqa-untied", "gqa-theta-eps"])
def test_hf_folder_back_to_bin_variants(tmp_path, kw):
    """Untied MQA; GQA with other rope_theta/norm_eps: checkpoint -> hf -> v1 equals checkpoint -> v1
    (the shipped model, tied MHA, is the test above)."""
    _hf()
    from tinymath.export.hf_import import read_hf_folder

    ck = save_ckpt(tmp_path / "ck.pt", make_model(False, **kw))  # init weights: every row distinct already
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExportWarning)
        want = export_checkpoint(ck, "v1", tmp_path / "want.bin").path.read_bytes()
        export_checkpoint(ck, "hf", tmp_path / "hf")
        got = export_model(read_hf_folder(tmp_path / "hf"), "v1", tmp_path / "got.bin").path.read_bytes()
    assert got == want


def test_hf_folder_bf16_sharded_and_torch_weights(tmp_path):
    """bfloat16 safetensors shards (as many Hub models are saved) and pytorch_model.bin read too."""
    _hf()
    from safetensors.torch import load_file, save_file

    from tinymath.export.hf_import import read_hf_folder

    m = make_model(True, tied=False)
    export_checkpoint(save_ckpt(tmp_path / "ck.pt", m), "hf", tmp_path / "hf")
    sd = load_file(tmp_path / "hf" / "model.safetensors")
    ref = read_hf_folder(tmp_path / "hf").tensors
    names = sorted(sd)
    (tmp_path / "hf" / "model.safetensors").unlink()
    half = len(names) // 2
    shards = {"a.safetensors": names[:half], "b.safetensors": names[half:]}
    for fname, keys in shards.items():
        save_file({k: sd[k].to(torch.bfloat16) for k in keys}, tmp_path / "hf" / fname)
    (tmp_path / "hf" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: f for f, keys in shards.items() for k in keys}}))
    got = read_hf_folder(tmp_path / "hf").tensors
    for k, v in ref.items():
        assert np.array_equal(got[k], torch.tensor(v).to(torch.bfloat16).float().numpy()), k
    for f in ("a.safetensors", "b.safetensors", "model.safetensors.index.json"):
        (tmp_path / "hf" / f).unlink()
    torch.save(sd, tmp_path / "hf" / "pytorch_model.bin")
    got = read_hf_folder(tmp_path / "hf").tensors
    assert all(np.array_equal(got[k], v) for k, v in ref.items())


def test_hf_folder_that_is_not_a_llama_is_refused(tmp_path, capsys):
    from tinymath.cli import main

    def export(folder):
        rc = main(["export", str(folder), "--format", "v1", "--out", str(tmp_path / "m.bin")])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and not (tmp_path / "m.bin").exists()
        return err

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    assert "is not a Llama model (model_type 'gpt2'" in export(gpt2)
    assert "not a Hugging Face model folder" in export(tmp_path)  # a folder without config.json
    llama = tmp_path / "llama"
    llama.mkdir()
    cfg = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 1,
           "intermediate_size": 64, "vocab_size": 24}
    (llama / "config.json").write_text(json.dumps(cfg))
    assert "no weights" in export(llama)
    (llama / "config.json").write_text(json.dumps({**cfg, "attention_bias": True}))
    assert "no bias tensors" in export(llama)
    (llama / "config.json").write_text(json.dumps({**cfg, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}))
    assert "plain RoPE only" in export(llama)
    (llama / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "hidden_size"}))
    assert "lacks 'hidden_size'" in export(llama)


_HF_NO_SENTENCEPIECE = r"""
import json, sys
sys.modules["sentencepiece"] = None  # import fails: the folder must load without sentencepiece or protobuf
sys.modules["google.protobuf"] = None
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
folder, prompts = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder).eval()
out = {"ids": [], "answers": [], "pipeline": []}
for p in prompts:
    ids = tok(p, return_tensors="pt").input_ids
    out["ids"].append(ids[0].tolist())
    new = []  # greedy, one token at a time (generate() costs ~0.3 s a call; the pipeline below runs it)
    with torch.no_grad():
        while ids.shape[1] < model.config.max_position_embeddings:
            nxt = int(model(ids).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    out["answers"].append(tok.decode(new, skip_special_tokens=True))
pipe = pipeline("text-generation", model=model, tokenizer=tok)
for p in prompts[:3]:
    room = model.config.max_position_embeddings - len(tok(p).input_ids)  # a whole answer, its work included
    new = pipe(p, max_new_tokens=room, do_sample=False, return_full_text=False)[0]["generated_text"]
    full = pipe(p, max_new_tokens=room, do_sample=False)[0]["generated_text"]
    out["pipeline"].append([new, full])
print(json.dumps(out))
"""


def test_hf_tokenizer_json_loads_without_sentencepiece_and_answers_as_the_c_runner(tmp_path):
    """The shipped model's HF export: AutoTokenizer reads tokenizer.json with sentencepiece and protobuf
    unimportable; its ids are our tokenizer's; greedy answers equal the C engine's on 40 problems; the
    text-generation pipeline keeps the answer's leading space (' 106.00', '24 + 82 = 106.00')."""
    _hf()
    from tinymath.runc import Model
    from tinymath.tokenizer import Tokenizer

    d = tmp_path / "hf"
    r = subprocess.run([sys.executable, "-m", "tinymath.cli", "export", str(MODELS / "tinymath.bin"), "--format", "hf",
                        "--out", str(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((d / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    rng = np.random.default_rng(0)
    prompts = ["24 + 82 =", "36 / 3 =", "7 * 8 =", "91 - 45 ="] + [
        f"{a} {op} {b} =" for a, op, b in zip(rng.integers(0, 90, 36), rng.choice(list("+-*/"), 36),
                                              rng.integers(1, 90, 36))]
    r = subprocess.run([sys.executable, "-c", _HF_NO_SENTENCEPIECE, str(d), json.dumps(prompts)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    tok = Tokenizer.load(MODELS / "tokenizer.bin")
    assert got["ids"] == [tok.encode_prompt(p) for p in prompts]
    with Model(MODELS / "tinymath.bin", tokenizer=MODELS / "tokenizer.bin") as m:
        want = m.solve(prompts, steps=True)  # whole answers: the shipped model writes its work
    assert all(a.startswith(" ") for a in got["answers"])
    assert [a.strip() for a in got["answers"]] == want
    for p, a, (new, full) in zip(prompts, want, got["pipeline"]):
        assert (new, full) == (" " + a, f"{p} {a}")


def test_hf_tokenizer_json_matches_our_encoder_for_a_bpe_tokenizer(tmp_path):
    """A BPE SentencePiece model (merges, not only characters): tokenizer.json segments as our
    llama2.c-algorithm encoder does, and decoding keeps every space."""
    _hf()
    tokenizers = pytest.importorskip("tokenizers")
    from tinymath.export.hf import tokenizer_json
    from tinymath.tokenizer.train_sp import to_llama2c, train_sentencepiece
    import sentencepiece as spm

    lines = [f"{a} {op} {b} = {a + b}" for a in range(0, 100, 3) for b in range(1, 100, 7) for op in "+-"]
    model = train_sentencepiece(lines, "bpe", vocab_size=320)
    (tmp_path / "bpe.model").write_bytes(model)
    tj = tokenizer_json(tmp_path / "bpe.model")
    assert tj["model"]["merges"] and tj["model"]["byte_fallback"]
    t = tokenizers.Tokenizer.from_str(json.dumps(tj))
    ours = to_llama2c(spm.SentencePieceProcessor(model_proto=model))
    for s in lines[::37] + ["12 + 3 =", "  7  *  8 =", "1000 / 25 ="]:
        assert t.encode(s).ids == ours.encode(s, bos=True), s
        assert t.decode(t.encode(s).ids, skip_special_tokens=True) == " " + s
