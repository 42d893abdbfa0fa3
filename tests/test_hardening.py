"""Issue 25, the items that live in runc: bounded reads, bounded answers, no silent garbage.

Each test here failed on the code before the fix: /dev/zero as a tokenizer or as a file of prompts
grew memory without limit (1); an answer was bounded only by the model's context, and its buffers
sized by it (2); a NUL byte on stdin cut the prompt and was answered (3); an empty prompt was
answered "0.00" (4); finite weights that overflow in the forward pass gave `<unk><unk>...` with exit
0 (5); a tokenizer piece holding a NUL byte was accepted and cut answers (6); an error message
quoted the whole prompt, megabytes of it (12).

Models come from tinymath.export with numpy weights (no torch needed); the CLI tests build runc/run.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinymath.export.layout import tensor_shapes
from tinymath.export.source import bin_config_from_model_config, from_state_dict
from tinymath.export.writers import encode_bin
from tinymath.runc import Model, RuncError
from tinymath.runc.model import _load_engine
from tinymath.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
PIECES = [b"<unk>", b"\n<s>\n", b"\n</s>\n", b" ", *[bytes([c]) for c in b"0123456789+-*/=."], b" =", b"00", b".00"]
SCORES = [0.0, 0.0, 0.0] + [-1.0] * 17 + [-2.0, -3.0, -4.0]
needs_cc = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                              reason="needs make and a C compiler")


def tokenizer_bytes(pieces=PIECES, scores=SCORES) -> bytes:
    return Tokenizer(list(pieces), list(scores)).to_bytes()


def model_bytes(fmt: str = "v1", seq: int = 16, seed: int = 0, edit=None) -> bytes:
    """A random untied model; edit(state_dict) may change its weights first."""
    rng = np.random.default_rng(seed)
    mc = dict(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=32, vocab_size=len(PIECES), max_seq_len=seq,
              norm_eps=1e-5, rope_theta=10000.0, tied=False)
    cfg = bin_config_from_model_config(mc)
    sd = {n: (1.0 + 0.1 * rng.standard_normal(s) if n.endswith("norm.weight") else
              rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32) for n, s in tensor_shapes(cfg).items()}
    if edit:
        edit(sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return encode_bin(from_state_dict(mc, sd), fmt)


def never_ending(sd) -> None:
    """A zero classifier: every logit is 0, greedy picks id 0 (<unk>) for ever, never EOS."""
    sd["output.weight"][:] = 0


@pytest.fixture(scope="module")
def run_bin():
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and a C compiler")
    r = subprocess.run(["make", "runc/run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return ROOT / "runc" / "run"


@pytest.fixture()
def files(tmp_path):
    def write(model: bytes, tok: bytes = tokenizer_bytes(), name: str = "model") -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "model.bin").write_bytes(model)
        (d / "tokenizer.bin").write_bytes(tok)
        return d / "model.bin"
    return write


def run(binary, *args, stdin: bytes | str | None = None, timeout=60):
    if isinstance(stdin, str):
        stdin = stdin.encode()
    r = subprocess.run([str(binary), *map(str, args)], input=stdin, capture_output=True, timeout=timeout)
    r.stdout, r.stderr = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    return r


def one_line_error(r, *needles):
    assert r.returncode > 0, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ---- 1. unbounded reads ------------------------------------------------------------------------------

def test_tokenizer_reads_are_bounded(run_bin, files, tmp_path):
    m = files(model_bytes())
    one_line_error(run(run_bin, m, "-z", "/dev/zero", "-m", "calc", "-i", "1 + 1", timeout=10), "/dev/zero",
                   "max_token_length = 0")
    # a plausible header, then far more bytes than 23 pieces of at most 6 bytes can take
    big = tmp_path / "big.bin"
    big.write_bytes(tokenizer_bytes()[:4] + b"\0" * (4 << 20))
    one_line_error(run(run_bin, m, "-z", big, "-m", "calc", "-i", "1 + 1"), "longer than", "bytes")
    with pytest.raises(RuncError, match="max_token_length"):
        Model(m, tokenizer="/dev/zero")
    with pytest.raises(RuncError, match="longer than") as e:
        Model(m, tokenizer=big)
    assert e.value.status == "RUNC_E_VOCAB"
    if Path("/dev/urandom").exists():  # an endless stream that may pass the header: stops all the same
        with pytest.raises(RuncError):
            Model(m, tokenizer="/dev/urandom")


def test_input_lines_are_bounded(run_bin, files):
    m = files(model_bytes())
    one_line_error(run(run_bin, m, "-m", "batch", "-f", "/dev/zero", timeout=10), "/dev/zero: line 1",
                   "over 1048576 bytes")
    with open("/dev/zero", "rb") as zero:
        for mode in ("calc", "batch"):
            r = subprocess.run([str(run_bin), str(m), "-m", mode], stdin=zero, capture_output=True, timeout=10)
            assert r.returncode == 1 and b"over 1048576 bytes" in r.stderr and len(r.stderr.splitlines()) == 1
    # the lines before the long one are answered first
    good = run(run_bin, m, "-m", "batch", stdin="1 + 1 =\n").stdout
    r = run(run_bin, m, "-m", "batch", stdin=b"1 + 1 =\n" + b"7" * (2 << 20))
    assert r.returncode == 1 and r.stdout == good and "stdin: line 2 is over" in r.stderr


# ---- 2. bounded answers ------------------------------------------------------------------------------

def test_answers_have_a_maximum_length(run_bin, files):
    lib = _load_engine()[1]
    assert lib.RUNC_DEFAULT_MAX_ANSWER == 512
    m = files(model_bytes(seq=1024, edit=never_ending))
    with Model(m) as model:
        assert model.solve(["1 + 1 ="]) == ["<unk>" * 512] == model.solve(["1 + 1 ="], batch=False)
        a = model.solve(["1 + 1 ="], confidence=True)[0]
        assert a.n_tokens == 512
        assert model.solve(["1 + 1 =", "2 + 2 ="], max_answer=7) == ["<unk>" * 7] * 2
        assert model.solve(["1 + 1 ="], max_answer=7, batch=False) == ["<unk>" * 7]
        assert model.solve(["1 + 1 ="], max_answer=2000) == ["<unk>" * (1024 - len(model.encode("1 + 1 =")))]
        assert model.batch_info()["context"] == 1024
        for bad in (0, -1, 2 ** 40):
            with pytest.raises(ValueError, match="max_answer"):
                model.solve(["1 ="], max_answer=bad)
        with pytest.raises(TypeError, match="max_answer"):
            model.solve(["1 ="], max_answer=7.0)
    # the buffers follow the cap, not the context
    ffi, lib = _load_engine()
    with Model(m) as model:
        assert lib.runc_answer_cap(model._state, model._tok) == 512 * 6 + 1
        err = ffi.new("runc_error *")
        assert lib.runc_state_set_max_answer(model._state, 10, err) == 0
        assert lib.runc_answer_cap(model._state, model._tok) == 10 * 6 + 1
        assert lib.runc_state_set_max_answer(model._state, -1, err) == lib.RUNC_E_ARG
    # the CLI: -l, default 512
    assert run(run_bin, m, "-m", "calc", "-i", "1 + 1").stdout == "<unk>" * 512 + "\n"
    assert run(run_bin, m, "-m", "calc", "-l", "3", "-i", "1 + 1").stdout == "<unk>" * 3 + "\n"
    assert run(run_bin, m, "-m", "batch", "-l", "3", stdin="1 + 1 =\n2 =\n").stdout == ("<unk>" * 3 + "\n") * 2
    one_line_error(run(run_bin, m, "-m", "calc", "-l", "0", "-i", "1"), "-l 0")
    one_line_error(run(run_bin, m, "-l", "5", "-i", "1"), "-l is for -m calc and -m batch")


# ---- 3. NUL bytes on stdin, 4. empty prompts -----------------------------------------------------------

def test_nul_bytes_on_stdin_are_refused(run_bin, files):
    m = files(model_bytes())
    alone = run(run_bin, m, "-m", "calc", "-i", "1 + 1").stdout
    r = run(run_bin, m, "-m", "batch", stdin=b"24 + 8\x002 =\n1 + 1 =\n\x00\n")
    assert r.returncode == 1 and r.stdout.split("\n") == ["", alone.strip(), "", ""]
    assert r.stderr.splitlines() == [
        "run: line 1: holds a NUL byte (at byte 6): refused (a prompt would be cut there)",
        "run: line 3: holds a NUL byte (at byte 0): refused (a prompt would be cut there)"]
    r = run(run_bin, m, "-m", "calc", stdin=b"24 + 8\x002\n1 + 1\n")
    assert r.returncode == 1 and r.stdout == alone and "NUL byte" in r.stderr


def test_empty_prompts_are_refused(run_bin, files):
    m = files(model_bytes())
    for p in ("", "   "):
        one_line_error(run(run_bin, m, "-m", "calc", "-i", p), "empty problem")
    with Model(m) as model:
        for batch in (True, False):
            with pytest.raises(RuncError, match="empty prompt"):
                model.solve([""], batch=batch)
            with pytest.raises(RuncError, match=r"prompt 1 \(' \\t'\): empty prompt \(only whitespace\)"):
                model.solve(["1 + 1 =", " \t"], batch=batch)


# ---- 6. a tokenizer piece that is a NUL byte ------------------------------------------------------------

def test_nul_piece_is_refused(run_bin, files, tmp_path):
    pieces = list(PIECES)
    pieces[pieces.index(b".")] = b"\x00"
    tok = tmp_path / "nul.bin"
    tok.write_bytes(tokenizer_bytes(pieces))
    m = files(model_bytes())
    one_line_error(run(run_bin, m, "-z", tok, "-m", "calc", "-i", "1 + 1"), "holds a NUL byte")
    with pytest.raises(RuncError, match="token 19 holds a NUL byte") as e:
        Model(m, tokenizer=tok)
    assert e.value.status == "RUNC_E_TOKENIZER"


# ---- 12. error messages quote a short prefix of the prompt ----------------------------------------------

def test_errors_quote_a_short_prefix(files):
    m = files(model_bytes())
    with Model(m) as model:
        for batch in (True, False):
            with pytest.raises(RuncError) as e:
                model.solve(["1 =", "7" * 10_000_000], batch=batch)
            assert len(str(e.value)) < 300 and "10,000,000 characters" in str(e.value), str(e.value)[:300]
            with pytest.raises(RuncError) as e:
                model.solve(["x" * 100 + " =", "1 ="], batch=batch)
            assert len(str(e.value)) < 300 and str(e.value).startswith("prompt 0 ('xxxx"), str(e.value)[:300]


# ---- 5. finite weights that overflow ---------------------------------------------------------------------

def _big_norm(sd) -> None:
    sd["layers.1.ffn_norm.weight"][:] = 1e30


def _big_matrix(sd) -> None:
    sd["layers.0.attention.wo.weight"][:] = 3e38 * np.sign(sd["layers.0.attention.wo.weight"])


def _big_classifier(sd) -> None:
    sd["output.weight"][:] = 3e38


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize("edit, where", [(_big_norm, "layer 1 (of 2)"), (_big_matrix, "layer 0 (of 2)"),
                                         (_big_classifier, "classifier")])
def test_overflowing_weights_stop_with_an_error(run_bin, files, fmt, edit, where):
    m = files(model_bytes(fmt, edit=edit))
    prompts = ["1 + 1 =", "24 + 82 =", "7 * 8 ="]
    with Model(m) as model:
        for batch in (True, False):
            with pytest.raises(RuncError, match="the forward pass overflowed") as e:
                model.solve(prompts, batch=batch)
            assert e.value.status == "RUNC_E_NONFINITE" and where in str(e.value), str(e.value)
            assert str(e.value).startswith("prompt 0 ")
        ffi, lib = _load_engine()
        status = ffi.new("runc_error[]", 3)
        b = model._open_batch()
        answers = ffi.new("char[]", 3 * lib.runc_batch_answer_cap(b))
        keep = [ffi.new("char[]", p.encode()) for p in prompts]
        rc = lib.runc_batch_solve(b, ffi.new("char *[]", keep), 3, answers, lib.runc_batch_answer_cap(b), ffi.NULL,
                                  ffi.NULL, ffi.NULL, status, ffi.NULL)
        assert rc == lib.RUNC_E_NONFINITE and all(s.code == rc for s in status)
        single = []
        for p in prompts:  # the same message, prompt by prompt, from runc_solve
            with pytest.raises(RuncError) as e:
                model.solve([p], batch=False)
            single.append(str(e.value).split(": ", 1)[1])
        assert [ffi.string(s.message).decode() for s in status] == single
    r = run(run_bin, m, "-m", "calc", "-i", "1 + 1")
    one_line_error(r, "the forward pass overflowed", where)
    r = run(run_bin, m, "-m", "batch", stdin="1 + 1 =\n2 + 2 =\n")
    assert r.returncode == 1 and r.stdout == "\n\n" and r.stderr.count("overflowed") == 2


def test_finite_weights_still_answer(files):
    """The check costs nothing to a sane model: answers as before, every one."""
    m = files(model_bytes("v2"))
    with Model(m) as model:
        prompts = [f"{a} + {b} =" for a in range(0, 99, 7) for b in range(0, 99, 11)]
        assert model.solve(prompts) == model.solve(prompts, batch=False)


# ---- issue 23: the C calculator's notice for operands the model never trained on -----------------------

def test_calc_range_notice(run_bin, files):
    """run -m calc -r LO-HI[,BLO-BHI][:HLO-HHI]: the answer of a problem with an operand outside the
    trained range, or held out, carries the notice tinymath.tasks.spec.range_note words; the answer
    itself is the same as without -r; bad ranges and -r outside calc are one-line errors."""
    from tinymath.tasks import TaskSpec, typed_prompt
    from tinymath.tasks.spec import range_note

    m = files(model_bytes(seq=64))  # room for the 23-digit operand
    spec = TaskSpec.from_dict({"task": "arith", "lo": 0, "hi": 89, "b_lo": 1, "b_hi": 9, "holdout": [90, 99]})
    cases = ["24 + 8", "24+82", "  100   +   1 =", "91 - 45", "100 * 100", "3 / 0", "007 + 5", "1 +",
             "12345678901234567890123 + 1"]
    plain = run(run_bin, m, "-m", "calc", stdin="\n".join(cases) + "\n").stdout.splitlines()
    noted = run(run_bin, m, "-m", "calc", "-r", "0-89,1-9:90-99", stdin="\n".join(cases) + "\n").stdout.splitlines()
    assert len(plain) == len(noted) == len(cases)
    for typed, a, b in zip(cases, plain, noted):
        note = range_note(spec, typed_prompt(typed))
        assert b == (f"{a}  (note: {note})" if note else a), typed
    assert noted[4].endswith("(note: 100 is outside the trained range 0-89; 100 is outside the trained range 1-9)")
    one = run(run_bin, m, "-m", "calc", "-r", "0-89:90-99", "-i", "100+100")
    assert one.returncode == 0 and one.stdout.count("note") == 1  # one notice for two equal operands
    for bad in ("89", "0-89x", "9-1", "0-89:", "-1-5", "0-89,5", ""):
        one_line_error(run(run_bin, m, "-m", "calc", "-r", bad, "-i", "1 + 1"), "bad value for -r")
    two = run(run_bin, m, "-m", "calc", "-r", "2-9", "-i", "11+1")
    assert two.stdout.endswith("(note: 11 is outside the trained range 2-9; 1 is outside the trained range 2-9)\n")
    one_line_error(run(run_bin, m, "-r", "0-89", "-i", "1"), "-r is for -m calc")


def test_make_calc_reads_the_range_from_the_card(tmp_path):
    """runc/card_range.awk turns a card's task into run's -r, and `make run` passes it: `100 + 1` on
    the shipped model is answered with the notice Python's range_note gives for its card."""
    import json

    from tinymath.tasks import TaskSpec
    from tinymath.tasks.spec import range_note

    if shutil.which("awk") is None or shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs awk, make and a C compiler")

    def card_range(card: dict) -> str:
        (tmp_path / "c.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")  # write_json's layout
        r = subprocess.run(["awk", "-f", str(ROOT / "runc" / "card_range.awk"), str(tmp_path / "c.json")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    task = {"task": "arith", "lo": 0, "hi": 89, "b_lo": None, "b_hi": None, "holdout": [90, 99], "ops": "+-*/"}
    assert card_range({"sha256": "x", "task": task}) == "0-89:90-99"
    assert card_range({"task": {**task, "b_lo": 1, "holdout": None}}) == "0-89,1-89"
    nested = {**task, "task": "count", "exclude": {"task": "arith", "lo": 5, "hi": 7}}  # exclude's keys are not read
    assert card_range({"task": nested}) == "0-89:90-99"
    assert card_range({"task": {**task, "task": "mod"}}) == card_range({"task": None}) == card_range({}) == ""
    models = ROOT / "models"
    card = json.loads((models / "tinymath.json").read_text())
    want = range_note(TaskSpec.from_dict(card["task"]), "100 + 1 =")
    r = subprocess.run(["make", "-s", "run", "PROMPT=100 + 1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("100 + 1 ") and (line.endswith(f"  (note: {want})") if want else "note" not in line)
