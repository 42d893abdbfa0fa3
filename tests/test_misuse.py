"""Runtime misuse through the bindings, and damaged files through every loader: a clear error, never
a crash. (tests/test_bindings.py covers the common misuses; this file adds the rest of issue 10's
list: NaN/inf/negative temperature, top-p outside [0, 1], empty and too-long prompts, ids out of
range, NULL buffers through the raw C API, non-finite weights, bad tokenizer pieces.)

Models come from tinymath.export with numpy weights (no torch needed).
"""

from __future__ import annotations

import math
import struct
import warnings

import numpy as np
import pytest

from tinymath.export.layout import tensor_shapes
from tinymath.export.source import bin_config_from_model_config, from_state_dict
from tinymath.export.writers import encode_bin
from tinymath.tokenizer import Tokenizer



# no skip when the engine does not import: a broken build must fail here, not pass quietly
from tinymath.runc import Model, RuncError  # noqa: E402
from tinymath.runc.model import _load_engine  # noqa: E402

PIECES = [b"<unk>", b"\n<s>\n", b"\n</s>\n", b" ", *[bytes([c]) for c in b"0123456789+-*/=."], b" =", b"00", b".00"]
SCORES = [0.0, 0.0, 0.0] + [-1.0] * 17 + [-2.0, -3.0, -4.0]
BOS = 1


def tokenizer_bytes(pieces=PIECES, scores=SCORES) -> bytes:
    return Tokenizer(list(pieces), list(scores)).to_bytes()


def model_bytes(fmt: str = "v1", seq: int = 16, vocab: int = len(PIECES), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    mc = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=32, vocab_size=vocab, max_seq_len=seq,
              norm_eps=1e-5, rope_theta=10000.0, tied=False)
    cfg = bin_config_from_model_config(mc)
    sd = {n: (1.0 + 0.1 * rng.standard_normal(s) if n.endswith("norm.weight") else
              rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32) for n, s in tensor_shapes(cfg).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return encode_bin(from_state_dict(mc, sd), fmt)


@pytest.fixture(scope="module")
def model():
    with Model.from_bytes(model_bytes(), tokenizer_bytes()) as m:
        yield m


# ---- sampling settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [-1.0, -1e-30, math.nan, math.inf, -math.inf])
def test_bad_temperatures(model, temperature):
    with pytest.raises(RuncError, match="temperature") as e:
        model.generate("1 + 1 =", temperature=temperature, seed=1)
    assert e.value.status == "RUNC_E_ARG"


@pytest.mark.parametrize("topp", [-0.1, -1e-30, 1.0000001, 2.0, math.nan, math.inf, -math.inf])
def test_bad_top_p(model, topp):
    with pytest.raises(RuncError, match="top-p") as e:
        model.generate("1 + 1 =", temperature=1.0, topp=topp, seed=1)
    assert e.value.status == "RUNC_E_ARG"


@pytest.mark.parametrize("topp", [0.0, 1e-30, 0.5, 1.0])
def test_edge_top_p_and_temperature_are_fine(model, topp):
    for temperature in (0.0, 1e-30, 1e30):
        g = model.generate_tokens("1 + 1 =", max_new=3, temperature=temperature, topp=topp, seed=7)
        assert all(0 <= t < model.vocab_size for t in g.tokens)


@pytest.mark.parametrize("value", ["0.5", None, [1.0], True])
def test_settings_of_the_wrong_type(model, value):
    with pytest.raises(TypeError):
        model.generate("1", temperature=value)
    with pytest.raises(TypeError):
        model.generate("1", topp=value)


# ---- prompts and ids -----------------------------------------------------------------------------------

def test_empty_and_too_long_prompts(model):
    ctx = model.context
    for call in (lambda p: model.logits(p), lambda p: model.generate_tokens(p, seed=1)):
        with pytest.raises(ValueError, match="empty"):
            call([])
        with pytest.raises(ValueError, match="empty"):
            call(np.array([], dtype=np.int64))
        with pytest.raises(RuncError, match="context") as e:
            call([BOS] * (ctx + 1))
        assert e.value.status == "RUNC_E_CONTEXT"
    # a prompt that fills the context leaves no room for an answer
    with pytest.raises(RuncError, match="context"):
        model.generate_tokens([BOS] * ctx, seed=1)
    with pytest.raises(RuncError, match="context"):
        model.solve(["1" * (2 * ctx)])
    # an empty prompt is no problem: refused by both engines, not answered (issue 25)
    for batch in (True, False):
        for empty in ("", "  "):
            with pytest.raises(RuncError, match="empty prompt") as e:
                model.solve(["1 + 1 =", empty], batch=batch)
            assert e.value.status == "RUNC_E_ARG" and "prompt 1" in str(e.value)
    assert model.logits("").shape == (1, model.vocab_size)
    with pytest.raises(ValueError, match="empty list"):
        model.solve([])


@pytest.mark.parametrize("bad", [-1, -2**31, 2**31 - 1, 2**31, 2**63, len(PIECES)])
def test_ids_out_of_range(model, bad):
    for call in (lambda: model.logits([BOS, bad]), lambda: model.generate_tokens([BOS, bad], seed=1),
                 lambda: model.decode([3, bad])):
        with pytest.raises((RuncError, OverflowError, ValueError)) as e:
            call()
        if isinstance(e.value, RuncError):
            assert "out of range" in str(e.value) or "range" in str(e.value)


def test_ids_of_the_wrong_type(model):
    for bad in ([BOS, 1.0], [BOS, "2"], [BOS, None], np.zeros((2, 2), dtype=np.int32), np.array([1.5]),
                [True]):
        with pytest.raises(TypeError):
            model.logits(bad)


def test_text_that_cannot_be_encoded(model):
    for text, status in (("x", "RUNC_E_ENCODE"), ("\xe9", "RUNC_E_ENCODE"), ("1\t2", "RUNC_E_ENCODE")):
        with pytest.raises(RuncError) as e:
            model.encode(text)
        assert e.value.status == status
    with pytest.raises(ValueError, match="NUL"):
        model.encode("1\x002")
    with pytest.raises((UnicodeEncodeError, ValueError)):
        model.encode("\ud800")  # a lone surrogate has no UTF-8
    with pytest.raises(ValueError):
        model.solve(["\udfff"])


def test_max_new_and_seed(model):
    assert model.generate_tokens("1", max_new=0, seed=1).tokens == []
    g = model.generate_tokens("1", max_new=10**9, seed=2**64 - 1)
    assert len(g.tokens) <= model.context - 2
    for bad in (-1, 1.5, "3", True):
        with pytest.raises((ValueError, TypeError)):
            model.generate_tokens("1", max_new=bad)
    for bad in (-1, 2**64, 1.0):
        with pytest.raises((ValueError, TypeError)):
            model.generate_tokens("1", seed=bad)


def test_still_usable_after_every_misuse(model):
    answers = model.solve(["1 + 1 =", "2 * 3 ="])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


# ---- damaged files through the bindings ---------------------------------------------------------------------

def test_non_finite_weights_are_refused_with_the_tensor_named():
    data = bytearray(model_bytes("v1"))
    data[256 + 4 * 3:256 + 4 * 4] = struct.pack("<f", math.nan)  # rms_att of layer 0, index 3
    with pytest.raises(RuncError, match=r"rms_att \(layer 0\) weight has a NaN value at index 3") as e:
        Model.from_bytes(bytes(data))
    assert e.value.status == "RUNC_E_WEIGHT"
    data = bytearray(model_bytes("v1"))
    data[-4:] = struct.pack("<f", -math.inf)  # the untied classifier's last value
    with pytest.raises(RuncError, match="classifier weight has a infinite") as e:
        Model.from_bytes(bytes(data))
    q = bytearray(model_bytes("v2"))
    q[-4:] = struct.pack("<f", -0.25)  # the classifier's last Q8_0 scale
    with pytest.raises(RuncError, match="classifier Q8_0 scale .* is negative") as e:
        Model.from_bytes(bytes(q))
    assert e.value.status == "RUNC_E_WEIGHT"


def test_bad_tokenizers_through_the_bindings(tmp_path):
    m = model_bytes()
    cases = {
        "empty piece": (PIECES[:5] + [b""] + PIECES[6:], "empty piece"),
        "duplicate piece": (PIECES[:5] + [b"7"] + PIECES[6:], "same piece"),
        "invalid UTF-8": (PIECES[:5] + [b"\xff"] + PIECES[6:], "not valid UTF-8"),
        "surrogate": (PIECES[:5] + [b"\xed\xa0\x80"] + PIECES[6:], "not valid UTF-8"),
    }
    for name, (pieces, message) in cases.items():
        tok = tokenizer_bytes(pieces)
        with pytest.raises(RuncError, match=message) as e:
            Model.from_bytes(m, tok)
        assert e.value.status == "RUNC_E_TOKENIZER", name
        p = tmp_path / "tokenizer.bin"
        p.write_bytes(tok)
        (tmp_path / "model.bin").write_bytes(m)
        with pytest.raises(RuncError, match=message):
            Model(tmp_path / "model.bin", tokenizer=p)
    nan = bytearray(tokenizer_bytes())
    nan[4:8] = struct.pack("<f", math.nan)
    with pytest.raises(RuncError, match="NaN score"):
        Model.from_bytes(m, bytes(nan))
    with pytest.raises(RuncError, match="no vocabulary"):
        Model.from_bytes(m, struct.pack("<i", 6))
    for other in (PIECES[:-1], PIECES + [b"000"]):  # a vocabulary smaller / larger than the model's
        with pytest.raises(RuncError) as e:
            Model.from_bytes(m, tokenizer_bytes(other, [0.0] * len(other)))
        assert e.value.status in ("RUNC_E_VOCAB", "RUNC_E_TRUNCATED")


@pytest.mark.parametrize("data", [b"", b"\0", b"ak42", b"\x42\x34\x6b\x61" + b"\0" * 300, b"\xff" * 64])
def test_garbage_models(data):
    with pytest.raises(RuncError):
        Model.from_bytes(data)


def test_from_bytes_types():
    for bad in (None, "model.bin", 5, [1, 2]):
        with pytest.raises(TypeError):
            Model.from_bytes(bad)


# ---- NULL buffers through the raw C API (as a C caller could pass them) -----------------------------------

def test_null_buffers_through_the_c_api():
    ffi, lib = _load_engine()
    err = ffi.new("runc_error *")
    out_m, out_t = ffi.new("runc_model **"), ffi.new("runc_tokenizer **")
    assert lib.runc_model_open_buffer(out_m, ffi.NULL, 100, 0, err) == lib.RUNC_E_ARG and out_m[0] == ffi.NULL
    assert lib.runc_model_open_buffer(out_m, ffi.NULL, 0, 0, err) == lib.RUNC_E_EMPTY
    assert lib.runc_model_open_buffer(ffi.NULL, b"x", 1, 0, err) == lib.RUNC_E_ARG
    assert lib.runc_model_open(out_m, ffi.NULL, 0, err) == lib.RUNC_E_ARG
    assert lib.runc_tokenizer_open_buffer(out_t, ffi.NULL, 100, 10, err) == lib.RUNC_E_ARG
    assert lib.runc_tokenizer_open(out_t, ffi.NULL, 10, err) == lib.RUNC_E_ARG
    assert lib.runc_parse_header(ffi.NULL, 10, ffi.new("runc_config *"), err) == lib.RUNC_E_ARG
    m, t = model_bytes(), tokenizer_bytes()
    assert lib.runc_model_open_buffer(out_m, m, len(m), lib.RUNC_OPEN_COPY, err) == 0
    assert lib.runc_tokenizer_open_buffer(out_t, t, len(t), len(PIECES), err) == 0
    model, tok = out_m[0], out_t[0]
    st = ffi.new("runc_state **")
    assert lib.runc_state_open(st, model, 0, err) == 0
    state = st[0]
    n = ffi.new("int *")
    ids = ffi.new("int[]", 16)
    answer = ffi.new("char[]", 64)
    try:
        assert lib.runc_encode(tok, ffi.NULL, 1, 0, ids, 16, n, err) == lib.RUNC_E_ARG
        assert lib.runc_encode(tok, b"1", 1, 0, ffi.NULL, 16, n, err) == lib.RUNC_E_ARG
        assert lib.runc_encode(ffi.NULL, b"1", 1, 0, ids, 16, n, err) == lib.RUNC_E_ARG
        assert lib.runc_decode(tok, 1, ffi.NULL, 3, answer, 64, ffi.NULL, err) == lib.RUNC_E_ARG
        assert lib.runc_decode(tok, 1, ids, 1, ffi.NULL, 64, ffi.NULL, err) == lib.RUNC_E_ARG
        assert lib.runc_forward(ffi.NULL, 1, 0, ffi.NULL, err) == lib.RUNC_E_ARG
        assert lib.runc_forward_tokens(state, ffi.NULL, 3, 0, ffi.NULL, err) == lib.RUNC_E_ARG
        assert lib.runc_solve(state, tok, ffi.NULL, answer, 64, ffi.NULL, err) == lib.RUNC_E_ARG
        assert lib.runc_solve(state, tok, b"1 =", ffi.NULL, 64, ffi.NULL, err) == lib.RUNC_E_ARG
        assert lib.runc_solve(state, tok, b"1 =", answer, 0, ffi.NULL, err) == lib.RUNC_E_ARG
        assert lib.runc_solve(ffi.NULL, tok, b"1 =", answer, 64, ffi.NULL, err) == lib.RUNC_E_ARG
        assert lib.runc_solve(state, ffi.NULL, b"1 =", answer, 64, ffi.NULL, err) == lib.RUNC_E_ARG
        assert lib.runc_generate(state, ffi.NULL, ids, 1, 3, -1, ids, ffi.NULL, n, err) == lib.RUNC_E_ARG
        assert lib.runc_sample(ffi.NULL, ffi.NULL, n, ffi.NULL) == lib.RUNC_E_ARG
        # NULL error pointers are fine everywhere
        assert lib.runc_solve(state, tok, b"1 =", answer, 64, ffi.NULL, ffi.NULL) == 0
        assert lib.runc_forward(state, 10**6, 0, ffi.NULL, ffi.NULL) == lib.RUNC_E_ARG
        # closers take NULL
        lib.runc_model_close(ffi.NULL)
        lib.runc_tokenizer_close(ffi.NULL)
        lib.runc_state_close(ffi.NULL)
        lib.runc_sampler_close(ffi.NULL)
    finally:
        lib.runc_state_close(state)
        lib.runc_tokenizer_close(tok)
        lib.runc_model_close(model)


# ---- the batch engine: bad settings, zero and failing batches ----------------------------------------------

def test_batch_settings_and_batches():
    m, t = model_bytes(), tokenizer_bytes()
    for bad, exc in ((-1, ValueError), (10**6, ValueError), ("2", TypeError), (True, TypeError), (1.0, TypeError)):
        with pytest.raises(exc, match="threads"):
            Model.from_bytes(m, t, threads=bad)
    with Model.from_bytes(m, t, threads=2) as model:
        with pytest.raises(ValueError, match="empty list"):
            model.solve([])
        with pytest.raises(ValueError, match="empty list"):
            model.solve([], batch=False)
        with pytest.raises(ValueError, match="confidence"):
            model.solve(["1 ="], confidence=True, batch=False)
        prompts = ["1 + 1 =", "2 * 3 =", "9 - 4 =", "8 + 0 =", "7 / 7 ="] * 7
        assert model.solve(prompts) == model.solve(prompts, batch=False)
        # one bad prompt among many: the error names it; the model stays usable
        with pytest.raises(RuncError, match="prompt 12") as e:
            model.solve(prompts[:12] + ["x"] + prompts[12:])
        assert e.value.status == "RUNC_E_ENCODE"
        with pytest.raises(RuncError, match="prompt 3") as e:
            model.solve(prompts[:3] + ["1" * (3 * model.context)])
        assert e.value.status == "RUNC_E_CONTEXT"
        assert model.solve(prompts[:2]) == model.solve(prompts[:2], batch=False)


def test_batch_null_and_zero_through_the_c_api():
    ffi, lib = _load_engine()
    err = ffi.new("runc_error *")
    out_m, out_t, out_b = ffi.new("runc_model **"), ffi.new("runc_tokenizer **"), ffi.new("runc_batch **")
    m, t = model_bytes(), tokenizer_bytes()
    assert lib.runc_model_open_buffer(out_m, m, len(m), lib.RUNC_OPEN_COPY, err) == 0
    assert lib.runc_tokenizer_open_buffer(out_t, t, len(t), len(PIECES), err) == 0
    model, tok = out_m[0], out_t[0]
    opt = ffi.new("runc_batch_options *")
    opt.threads, opt.slots = 2, 2
    try:
        assert lib.runc_batch_open(ffi.NULL, model, tok, opt, err) == lib.RUNC_E_ARG
        assert lib.runc_batch_open(out_b, ffi.NULL, tok, opt, err) == lib.RUNC_E_ARG and out_b[0] == ffi.NULL
        assert lib.runc_batch_open(out_b, model, ffi.NULL, opt, err) == lib.RUNC_E_ARG
        for field, value in (("threads", -1), ("slots", -1), ("context", -1), ("context", 10**6), ("kernels", 9)):
            bad = ffi.new("runc_batch_options *")
            setattr(bad, field, value)
            assert lib.runc_batch_open(out_b, model, tok, bad, err) == lib.RUNC_E_ARG, field
        assert lib.runc_batch_open(out_b, model, tok, opt, err) == 0
        b = out_b[0]
        cap = lib.runc_batch_answer_cap(b)
        answers = ffi.new("char[]", 3 * cap)
        keep = [ffi.new("char[]", s) for s in (b"1 + 1 =", b"2 =")]
        prompts = ffi.new("char *[]", keep + [ffi.NULL])
        none = (ffi.NULL,) * 4  # no n_generated, mean_logprob, min_logprob, prompt_errors
        # zero batch: nothing to do, not an error; negative or NULL: RUNC_E_ARG
        assert lib.runc_batch_solve(b, ffi.NULL, 0, ffi.NULL, 0, *none, err) == 0
        assert lib.runc_batch_solve(b, prompts, -1, answers, cap, *none, err) == lib.RUNC_E_ARG
        assert lib.runc_batch_solve(b, ffi.NULL, 2, answers, cap, *none, err) == lib.RUNC_E_ARG
        assert lib.runc_batch_solve(b, prompts, 2, ffi.NULL, cap, *none, err) == lib.RUNC_E_ARG
        assert lib.runc_batch_solve(b, prompts, 2, answers, 0, *none, err) == lib.RUNC_E_ARG
        assert lib.runc_batch_solve(ffi.NULL, prompts, 2, answers, cap, *none, err) == lib.RUNC_E_ARG
        status = ffi.new("runc_error[]", 3)
        rc = lib.runc_batch_solve(b, prompts, 3, answers, cap, ffi.NULL, ffi.NULL, ffi.NULL, status, err)
        assert rc == lib.RUNC_E_ARG and "prompt 2" in ffi.string(err.message).decode()
        # each prompt's status as data: the NULL one's code and message, the others answered
        assert [s.code for s in status] == [0, 0, lib.RUNC_E_ARG]
        assert [ffi.string(s.message).decode() for s in status] == ["", "", "NULL prompt"]
        assert lib.runc_batch_solve(b, prompts, 2, answers, cap, *none, err) == 0
        lib.runc_batch_close(b)
        lib.runc_batch_close(ffi.NULL)
    finally:
        lib.runc_tokenizer_close(tok)
        lib.runc_model_close(model)
