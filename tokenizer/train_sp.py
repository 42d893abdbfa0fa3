"""Train SentencePiece tokenizers for tasks and export them to llama2.c's tokenizer.bin.

Presets:
- digits: a character model. Every digit, operator, "=", ".", "-" and the space
  is its own piece, plus any other character of the task's training lines (a
  few dozen pieces in all). No byte fallback by default: its 256 byte pieces
  would outweigh the rest of a tiny model's embedding; a character outside the
  vocabulary is then an encoding error, never a silent <unk>.
- bpe: a BPE model for text-like tasks (dmmath), digits split, byte fallback on,
  vocabulary size set by the caller.
The normaliser is "identity" and whitespace is kept as it is, so the ids are a
plain function of the characters (what the C runner's encoder assumes).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from tinymath import fileio

from .tokenizer import Tokenizer

PRESETS = ("digits", "bpe")
# always in the digits preset, whether or not the training lines use them
ALPHABET = "0123456789+-*/=. "


def train_sentencepiece(lines: Iterable[str], preset: str = "digits", vocab_size: int = 512,
                        byte_fallback: bool | None = None) -> bytes:
    """The serialised SentencePiece model trained on `lines`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown tokenizer preset {preset!r} (known: {', '.join(PRESETS)})")
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError("no text to train a tokenizer on")
    fallback = (preset == "bpe") if byte_fallback is None else byte_fallback
    opts: dict = dict(
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        character_coverage=1.0, byte_fallback=fallback, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2, max_sentence_length=1 << 16,
    )
    if preset == "digits":
        chars = sorted(set("".join(lines)) | set(ALPHABET))
        # the alphabet line guarantees every required character is seen at least once
        sentences = lines + ["".join(chars)]
        opts.update(model_type="char", vocab_size=len(chars) + 3 + (256 if fallback else 0), hard_vocab_limit=False)
    else:
        if vocab_size < 300 and fallback:
            raise ValueError(f"bpe with byte fallback needs vocab_size >= 300 (259 special pieces), got {vocab_size}")
        sentences = lines
        opts.update(model_type="bpe", vocab_size=vocab_size, split_digits=True, hard_vocab_limit=False,
                    allow_whitespace_only_pieces=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, **opts)
    return buf.getvalue()


def to_llama2c(sp: spm.SentencePieceProcessor) -> Tokenizer:
    """llama2.c's tokenizer.bin view of a SentencePiece model."""
    pieces, scores = [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if i == sp.bos_id():
            piece = "\n<s>\n"
        elif i == sp.eos_id():
            piece = "\n</s>\n"
        pieces.append(piece.replace("\u2581", " ").encode("utf-8"))
        scores.append(sp.get_score(i))
    return Tokenizer(pieces, scores)


def train_tokenizer(lines: Iterable[str], out_dir: str | Path, preset: str = "digits", vocab_size: int = 512,
                    byte_fallback: bool | None = None) -> Path:
    """Write out_dir/tokenizer.model and out_dir/tokenizer.bin; return the .bin path."""
    out_dir = Path(out_dir)
    model = train_sentencepiece(lines, preset, vocab_size, byte_fallback)
    out_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(out_dir / "tokenizer.model", model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    to_llama2c(sp).save(out_dir / "tokenizer.bin")
    return out_dir / "tokenizer.bin"
