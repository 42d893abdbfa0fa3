"""The digit tokenizer: SentencePiece and the llama2.c-algorithm encoder agree id for id."""

from __future__ import annotations

import random
import struct

import pytest
import sentencepiece as spm

from tinymath.tasks import TaskSpec, build_splits
from tinymath.tokenizer import Tokenizer, train_tokenizer


def all_lines(spec: TaskSpec) -> list:
    return [p for v in build_splits(spec).values() for p in v]


@pytest.fixture(scope="module")
def classic_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer([p.line for p in build_splits(TaskSpec())["train"]], out)
    return Tokenizer.load(out / "tokenizer.bin"), spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))


def test_every_classic_problem_encodes_like_sentencepiece(classic_tok):
    tok, sp = classic_tok
    problems = all_lines(TaskSpec())
    assert len(problems) == 39_900
    for p in problems:
        assert tok.encode(p.line) == sp.encode(p.line), p.line
        assert tok.encode(p.prompt) == sp.encode(p.prompt), p.prompt


def test_digits_preset_is_one_piece_per_character_and_small(classic_tok):
    tok, sp = classic_tok
    assert tok.vocab_size < 40
    for ch in "0123456789+-*/=. ":
        assert len(tok.encode(ch, dummy_prefix=False)) == 1
    assert sp.bos_id() == tok.bos_id == 1 and sp.eos_id() == tok.eos_id == 2


@pytest.mark.parametrize("spec", [
    TaskSpec(format="int"), TaskSpec(format="reversed"), TaskSpec(format="padded"),
    TaskSpec(task="mod", ops="+-*", modulus=97), TaskSpec(task="count"),
], ids=["int", "reversed", "padded", "mod", "count"])
def test_other_tasks_encode_like_sentencepiece(tmp_path, spec):
    problems = all_lines(spec)
    train_tokenizer([p.line for p in build_splits(spec)["train"]], tmp_path)
    tok, sp = Tokenizer.load(tmp_path / "tokenizer.bin"), spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    for p in random.Random(0).sample(problems, min(3000, len(problems))):
        assert tok.encode(p.line) == sp.encode(p.line), p.line


def test_bpe_preset_on_text_problems(tmp_path):
    pytest.importorskip("mathematics_dataset", reason="dmmath extra not installed")
    spec = TaskSpec(task="dmmath", modules=("arithmetic__add_or_sub", "algebra__linear_1d"), n=300)
    problems = all_lines(spec)
    train_tokenizer([p.line for p in problems[:400]], tmp_path, preset="bpe", vocab_size=400)
    tok, sp = Tokenizer.load(tmp_path / "tokenizer.bin"), spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert tok.byte_fallback and any(len(p) > 1 and not p.startswith(b"<") for p in tok.pieces)
    for p in problems:
        assert tok.encode(p.line) == sp.encode(p.line), p.line
    # a character never seen in training falls back to bytes, as SentencePiece does
    assert tok.encode("What is 2 ü 3?") == sp.encode("What is 2 ü 3?")
    assert tok.decode(tok.encode("What is 2 ü 3?")) == " What is 2 ü 3?"


def test_out_of_vocabulary_character_is_a_clear_error(classic_tok):
    tok, _ = classic_tok
    with pytest.raises(ValueError, match=r"character 'x' \(U\+0078\)"):
        tok.encode("36 x 3 =")
    with pytest.raises(ValueError, match="U\\+00E9"):
        tok.encode_prompt("é")


def test_problem_convention_round_trip(classic_tok):
    tok, _ = classic_tok
    ids, n_prompt = tok.encode_problem("24 + 82 =", "106.00")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids[:n_prompt] == tok.encode_prompt("24 + 82 =")
    assert tok.decode(ids[1:n_prompt]) == " 24 + 82 ="
    assert tok.decode_answer(ids[n_prompt:]) == "106.00"


def test_tokenizer_bin_layout_read_independently(classic_tok, tmp_path):
    tok, sp = classic_tok
    tok.save(tmp_path / "t.bin")
    data = (tmp_path / "t.bin").read_bytes()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, pieces = 4, []
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        pieces.append((score, data[off + 8:off + 8 + n]))
        off += 8 + n
    assert len(pieces) == sp.get_piece_size() and max_len == max(len(p) for _, p in pieces)
    for i, (score, piece) in enumerate(pieces):
        assert score == pytest.approx(sp.get_score(i))
        if i > 2:
            assert piece == sp.id_to_piece(i).replace("\u2581", " ").encode()
    assert pieces[1][1] == b"\n<s>\n" and pieces[2][1] == b"\n</s>\n"


@pytest.mark.parametrize("cut", [0, 2, 4, 9, 13])
def test_truncated_tokenizer_bin_is_refused(classic_tok, tmp_path, cut):
    tok, _ = classic_tok
    data = tok.to_bytes()
    (tmp_path / "t.bin").write_bytes(data[:cut] if cut else b"")
    with pytest.raises(ValueError):
        Tokenizer.load(tmp_path / "t.bin")


def test_bad_piece_length_is_refused(classic_tok, tmp_path):
    tok, _ = classic_tok
    data = bytearray(tok.to_bytes())
    struct.pack_into("<i", data, 8, -4)  # first piece's length
    (tmp_path / "t.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad length -4"):
        Tokenizer.load(tmp_path / "t.bin")


def test_unknown_preset_and_empty_text(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        train_tokenizer(["1 + 1 = 2"], tmp_path, preset="words")
    with pytest.raises(ValueError, match="no text"):
        train_tokenizer([], tmp_path)
