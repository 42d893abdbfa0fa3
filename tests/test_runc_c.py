"""The C side of runc: the C test program (plain and under ASan+UBSan) and the CLI.

`make c-test` builds runc/tests/test_runc.c and runc/tests/test_batch.c twice each (plain, ASan+UBSan)
and runc/tests/test_quant.c once, and runs them; the CLI tests build
runc/run and drive it with small random-weight model files written here with
numpy, checking that every bad input ends in one line on stderr and a non-zero
exit status, never a crash.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "runc" / "run"

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")

PIECES = ["<unk>", "\n<s>\n", "\n</s>\n", " ", *"0123456789", *"+-*/=.", " =", "00", ".0", ".00", "10", "99"]
SCORES = [0.0, 0.0, 0.0] + [-1.0] * 17 + [-2.0, -3.0, -4.0, -5.0, -6.0, -7.0]


def _sanitizers_work(tmp: Path) -> bool:
    src = tmp / "san.c"
    src.write_text("int main(void) { return 0; }\n")
    r = subprocess.run(["cc", "-fsanitize=address,undefined", str(src), "-o", str(tmp / "san")],
                       capture_output=True)
    return r.returncode == 0 and subprocess.run([str(tmp / "san")]).returncode == 0


def test_c_test_program(tmp_path):
    if _sanitizers_work(tmp_path):
        r = subprocess.run(["make", "c-test"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        runs = 5  # test_runc and test_batch (the batch engine), each plain and under ASan+UBSan; test_quant
    else:  # pragma: no cover - a compiler without ASan: the plain build only
        r = subprocess.run(["make", "runc/tests/test_runc"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        if r.returncode == 0:
            r = subprocess.run([str(ROOT / "runc" / "tests" / "test_runc")], capture_output=True, text=True, timeout=900)
        runs = 1
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    closing = [ln for ln in r.stdout.splitlines() if ln.endswith(" failed") and " passed, " in ln]
    assert len(closing) == runs and all(ln.endswith(" 0 failed") for ln in closing), out[-4000:]
    assert "warning" not in out.lower(), out[-4000:]


# ---- the CLI -------------------------------------------------------------------------

def _header(version, params, shared, group=None, ext=None) -> bytes:
    h = struct.pack("<Ii7iB", 0x616B3432, version, *params, shared)
    if group is not None:
        h += struct.pack("<i", group)
    h = h.ljust(240, b"\0")
    if ext:
        h += b"TMx1" + struct.pack("<ff", *ext)
    return h.ljust(256, b"\0")


def model_bytes(dim=16, hidden=32, layers=2, heads=2, kv=1, vocab=len(PIECES), seq=16, seed=4) -> bytes:
    """A random untied v1 model (unit-scale weights, so greedy answers vary)."""
    rng = np.random.default_rng(seed)
    kvd = kv * dim // heads
    f = lambda *shape, fan=None: (rng.standard_normal(shape) / np.sqrt(fan or shape[-1])).astype("<f4").tobytes()  # noqa: E731
    body = [
        (1 + 0.1 * rng.standard_normal((2 * layers + 1) * dim)).astype("<f4").tobytes(),  # norms
        rng.standard_normal((vocab, dim)).astype("<f4").tobytes(),  # embedding
        f(layers, dim, dim), f(layers, kvd, dim), f(layers, kvd, dim), f(layers, dim, dim),
        f(layers, hidden, dim), f(layers, dim, hidden), f(layers, hidden, dim), f(vocab, dim),
    ]
    return _header(1, [dim, hidden, layers, heads, kv, vocab, seq], 0) + b"".join(body)


def tokenizer_bytes(pieces=PIECES, scores=SCORES) -> bytes:
    raw = [p.encode() for p in pieces]
    return struct.pack("<i", max(map(len, raw))) + b"".join(
        struct.pack("<fi", s, len(p)) + p for p, s in zip(raw, scores))


@pytest.fixture(scope="module")
def run_bin():
    r = subprocess.run(["make", "runc/run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in (r.stdout + r.stderr).lower(), r.stderr
    return RUN


@pytest.fixture()
def model_dir(tmp_path):
    (tmp_path / "model.bin").write_bytes(model_bytes())
    (tmp_path / "tokenizer.bin").write_bytes(tokenizer_bytes())
    return tmp_path


def run(binary, *args, stdin: str | None = None, timeout=60):
    return subprocess.run([str(binary), *map(str, args)], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(r, *needles):
    """Non-zero exit, not killed by a signal, exactly one line on stderr holding every needle."""
    assert r.returncode > 0, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_calc_and_batch(run_bin, model_dir):
    m = model_dir / "model.bin"
    one = run(run_bin, m, "-m", "calc", "-i", "36 / 3")
    assert one.returncode == 0 and one.stderr == "", one.stderr
    answer = one.stdout.strip()
    assert answer  # this random model answers something
    # the tokenizer beside the model is the default; " =" is appended in calc mode
    same = run(run_bin, m, "-m", "calc", "-i", "36 / 3 =", "-z", model_dir / "tokenizer.bin")
    assert same.stdout.strip() == answer
    calc = run(run_bin, m, "-m", "calc", stdin="36 / 3\n\n  7 * 8  \n")
    assert calc.returncode == 0 and calc.stdout.splitlines()[0] == answer and len(calc.stdout.splitlines()) == 2
    lines = "36 / 3 =\n\n7 * 8 =\n24 + 82 =\n"
    batch = run(run_bin, m, "-m", "batch", stdin=lines)
    out = batch.stdout.split("\n")
    assert batch.returncode == 0 and out[0] == answer and out[1] == "" and len(out) == 5
    (model_dir / "problems.txt").write_text(lines)
    from_file = run(run_bin, m, "-m", "batch", "-f", model_dir / "problems.txt")
    assert from_file.stdout == batch.stdout
    # a bad line: an empty answer line, an error naming the line, exit status 1
    bad = run(run_bin, m, "-m", "batch", stdin="1 + 1 =\nx + 1 =\n2 + 2 =\n")
    assert bad.returncode == 1 and len(bad.stdout.split("\n")) == 4 and bad.stdout.split("\n")[1] == ""
    one_line_error(bad, "line 2", "'x'")
    # two bad lines of a chunk: each gets its own error, as the calculator gives it one at a time
    too_long = "1" * 30 + " ="
    two = run(run_bin, m, "-m", "batch", stdin=f"x + 1 =\n1 + 1 =\n{too_long}\n")
    lines = two.stdout.split("\n")
    assert two.returncode == 1 and len(lines) == 4 and lines[0] == lines[2] == "" and lines[1], two.stdout
    alone = [run(run_bin, m, "-m", "calc", "-i", p).stderr.strip().removeprefix("run: ") for p in ("x + 1 =", too_long)]
    assert two.stderr.strip().splitlines() == [f"run: line 1: {alone[0]}", f"run: line 3: {alone[1]}"], two.stderr


def test_generate_and_steps(run_bin, model_dir):
    m = model_dir / "model.bin"
    r = run(run_bin, m, "-t", "0", "-i", "24 + 82 =")
    assert r.returncode == 0 and r.stdout.startswith("24 + 82 =")
    r2 = run(run_bin, m, "-t", "1", "-p", "0.9", "-s", "7", "-i", "1")
    r3 = run(run_bin, m, "-t", "1", "-p", "0.9", "-s", "7", "-i", "1")
    assert r2.returncode == 0 and r2.stdout == r3.stdout
    clamp = run(run_bin, m, "-t", "0", "-n", "1000", "-i", "24 + 82 =")
    assert clamp.returncode == 0 and "exceeds the model's context of 16" in clamp.stderr
    assert clamp.stdout == r.stdout
    short = run(run_bin, m, "-t", "0", "-n", "12", "-i", "24 + 82 =")
    assert short.returncode == 0 and len(short.stdout) <= len(r.stdout)
    assert run(run_bin, "-h").returncode == 0 and "usage" in run(run_bin, "-h").stdout


def test_bad_model_files(run_bin, model_dir, tmp_path):
    good = model_bytes()
    tok = model_dir / "tokenizer.bin"
    cases = {
        "empty": (b"", "empty"),
        "truncated": (good[:-5], "truncated"),
        "truncated header": (good[:100], "header truncated"),
        "bad magic": (b"ak43" + good[4:], "bad magic"),
        "text": (b"hello, this is not a model\n" * 20, "bad magic"),
        "version": (good[:4] + struct.pack("<i", 9) + good[8:], "version 9"),
        "zero dim": (good[:8] + struct.pack("<i", 0) + good[12:], "dim = 0"),
        "negative layers": (good[:16] + struct.pack("<i", -2) + good[20:], "n_layers = -2"),
        "huge vocab": (good[:28] + struct.pack("<i", 2 ** 31 - 1) + good[32:], "vocab_size"),
        "heads": (good[:20] + struct.pack("<i", 3) + good[24:], "does not divide dim"),
        "shared flag": (good[:36] + b"\x07" + good[37:], "shared_classifier"),
        "trailing": (good + b"\0" * 3, "trailing"),
        "overflow": (_header(1, [65536, 1 << 20, 4096, 2, 2, 1 << 22, 16], 0), "overflow"),
    }
    for name, (content, needle) in cases.items():
        p = tmp_path / f"{name.replace(' ', '_')}.bin"
        p.write_bytes(content)
        r = run(run_bin, p, "-z", tok, "-m", "calc", "-i", "1 + 1")
        one_line_error(r, needle, str(p))
    one_line_error(run(run_bin, tmp_path / "nope.bin", "-z", tok), "nope.bin", "No such file")
    one_line_error(run(run_bin, tmp_path, "-z", tok), "directory")


def test_bad_tokenizers_and_prompts(run_bin, model_dir, tmp_path):
    m = model_dir / "model.bin"
    tdata = tokenizer_bytes()
    cases = {
        "cut": (tdata[:-2], "truncated"),
        "empty": (b"", "empty"),
        "more tokens": (tokenizer_bytes(PIECES + ["77"], SCORES + [-8.0]), "tokenizer of another model"),
        "fewer tokens": (tokenizer_bytes(PIECES[:-1], SCORES[:-1]), "truncated"),
        "negative length": (tdata[:8] + struct.pack("<i", -4) + tdata[12:], "negative length"),
    }
    for name, (content, needle) in cases.items():
        p = tmp_path / f"tok_{name.replace(' ', '_')}.bin"
        p.write_bytes(content)
        one_line_error(run(run_bin, m, "-z", p, "-m", "calc", "-i", "1 + 1"), needle)
    one_line_error(run(run_bin, m, "-z", tmp_path / "none.bin"), "none.bin")
    one_line_error(run(run_bin, m, "-m", "calc", "-i", "a + 1"), "'a'", "vocabulary")
    one_line_error(run(run_bin, m, "-m", "calc", "-i", "\u00e9 + 1"), "U+00E9")
    one_line_error(run(run_bin, m, "-m", "calc", "-i", "1" * 30), "context")
    one_line_error(run(run_bin, m, "-i", "1" * 30), "context")
    one_line_error(run(run_bin, m, "-m", "chat", "-i", "hi"), "'[' (U+005B)")


def test_bad_flags(run_bin, model_dir):
    m = model_dir / "model.bin"
    one_line_error(run(run_bin, m, "-q", "1"), "unknown flag '-q'")
    one_line_error(run(run_bin, m, "--temperature", "1"), "unknown flag")
    one_line_error(run(run_bin, m, "-t"), "needs a value")
    one_line_error(run(run_bin, m, "-t", "hot"), "-t", "'hot'")
    one_line_error(run(run_bin, m, "-t", "-1"), "temperature")
    one_line_error(run(run_bin, m, "-p", "1.5"), "top-p")
    one_line_error(run(run_bin, m, "-n", "-3"), "-n")
    one_line_error(run(run_bin, m, "-n", "ten"), "-n")
    one_line_error(run(run_bin, m, "-s", "-1"), "-s")
    one_line_error(run(run_bin, m, "-m", "poem"), "unknown mode 'poem'")
    one_line_error(run(run_bin, m, "-f", "x.txt"), "-f is for -m batch")
    one_line_error(run(run_bin, m, "-m", "batch", "-f", "/nonexistent/p.txt"), "/nonexistent/p.txt")
    one_line_error(run(run_bin, m, "stray"), "unexpected argument 'stray'")


def test_make_run_and_calc(run_bin, model_dir):
    env = dict(os.environ, RUNC_MODEL=str(model_dir / "model.bin"), RUNC_TOKENIZER=str(model_dir / "tokenizer.bin"))
    r = subprocess.run(["make", "-s", "run"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("24 + 82 = ")
    r = subprocess.run(["make", "-s", "run", "PROMPT=36 / 3 ="], cwd=ROOT, capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.count("\n") == 1 and r.stdout.startswith("36 / 3 = "), r.stderr
    r = subprocess.run(["make", "-s", "calc"], cwd=ROOT, input="36 / 3\n", capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and r.stdout == run(run_bin, model_dir / "model.bin", "-m", "calc", "-i", "36 / 3").stdout
    env["RUNC_MODEL"] = str(model_dir / "missing.bin")
    for target in ("run", "calc"):
        r = subprocess.run(["make", "-s", target], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode != 0 and "no model at" in r.stderr and "missing.bin" in r.stderr


def test_final_answer_and_v(run_bin, model_dir, tmp_path):
    """calc and batch print the final answer (after the last '#'); -v the whole answer. A direct
    model (no '#' in its vocabulary) prints the same either way."""
    m = model_dir / "model.bin"
    lines = "".join(f"{a} {op} {b} =\n" for a in range(0, 40, 3) for op in "+-*/" for b in (7, 58))
    direct, verbose = run(run_bin, m, "-m", "batch", stdin=lines), run(run_bin, m, "-m", "batch", "-v", stdin=lines)
    assert direct.returncode == verbose.returncode == 0 and direct.stdout == verbose.stdout
    assert run(run_bin, m, "-m", "calc", "-v", "-i", "36 / 3").stdout == run(run_bin, m, "-m", "calc", "-i", "36 / 3").stdout
    # a vocabulary with the mark: a random model that writes '#' now and then
    pieces, scores = PIECES + ["#"], SCORES + [-1.0]
    d = tmp_path / "mark"
    d.mkdir()
    (d / "model.bin").write_bytes(model_bytes(vocab=len(pieces), seq=24, seed=11))
    (d / "tokenizer.bin").write_bytes(tokenizer_bytes(pieces, scores))
    whole = run(run_bin, d / "model.bin", "-m", "batch", "-v", stdin=lines).stdout.split("\n")
    final = run(run_bin, d / "model.bin", "-m", "batch", stdin=lines).stdout.split("\n")
    assert len(whole) == len(final) == lines.count("\n") + 1
    assert sum("#" in w for w in whole) >= 3, whole  # the rule is exercised
    assert final == [w.rsplit("#", 1)[-1] for w in whole]
    for w, f, p in list(zip(whole, final, lines.splitlines()))[:12]:  # calc: one at a time, the same answers
        assert run(run_bin, d / "model.bin", "-m", "calc", "-v", "-i", p).stdout == w + "\n"
        assert run(run_bin, d / "model.bin", "-m", "calc", "-i", p).stdout == f + "\n"
    env = dict(os.environ, RUNC_MODEL=str(d / "model.bin"), RUNC_TOKENIZER=str(d / "tokenizer.bin"))
    p = next(p for w, p in zip(whole, lines.splitlines()) if "#" in w)
    w = whole[lines.splitlines().index(p)]
    for v, want in (("V=1", w), ("V=0", w.rsplit("#", 1)[-1])):
        r = subprocess.run(["make", "-s", "run", f"PROMPT={p}", v], cwd=ROOT, capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0 and r.stdout == f"{p} {want}\n", (v, r.stdout, r.stderr)
        r = subprocess.run(["make", "-s", "calc", v], cwd=ROOT, input=p, capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0 and r.stdout == f"{want}\n", (v, r.stdout, r.stderr)
    one_line_error(run(run_bin, m, "-v", "-i", "1 + 1"), "-v is for -m calc and -m batch")
    assert "-v" in run(run_bin, "-h").stdout


def test_calc_reads_what_people_type_as_the_python_rule_does(run_bin):
    """`run -m calc` puts typed problems in the prompt form by tinymath.tasks.typed_prompt's rule:
    each spelling answers as the prompt the rule gives (the shipped model, whose answers differ by prompt)."""
    from tinymath.tasks import typed_prompt

    model, tok = ROOT / "models" / "tinymath.bin", ROOT / "models" / "tokenizer.bin"
    typed = ["24+82", "  12   +   3", "5+5=", "007 * 8", "36 / 3 =", "91-45", "7 *  08 =  "]
    for text in typed:
        canonical = typed_prompt(text)
        got = run(run_bin, model, "-z", tok, "-m", "calc", "-i", text)
        want = run(run_bin, model, "-z", tok, "-m", "calc", "-i", canonical)
        assert got.returncode == want.returncode == 0, got.stderr
        assert got.stdout == want.stdout, (text, canonical, got.stdout, want.stdout)
    # the rule matters: the unnormalised spelling gives another answer on this model
    raw = subprocess.run([str(run_bin), str(model), "-z", str(tok), "-m", "batch"], input="24+82 =\n",
                         capture_output=True, text=True)
    assert raw.stdout.strip() != "106.00"
    assert run(run_bin, model, "-z", tok, "-m", "calc", "-i", "24+82").stdout.strip() == "106.00"
