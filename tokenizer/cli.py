"""`tinymath tokenizer`: train a tokenizer on a data folder or text file; or encode text with one."""

from __future__ import annotations

import argparse
from pathlib import Path

from .tokenizer import Tokenizer
from .train_sp import PRESETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="a folder written by `tinymath gen` (its train.txt is used) or a text file")
    p.add_argument("--out", help="output folder for tokenizer.model and tokenizer.bin")
    p.add_argument("--preset", choices=PRESETS, default="digits")
    p.add_argument("--vocab-size", type=int, default=512, help="bpe preset: vocabulary size")
    p.add_argument("--byte-fallback", action="store_true", help="add the 256 byte pieces (digits preset)")
    p.add_argument("--encode", metavar="TEXT", help="print the ids of TEXT under --tokenizer")
    p.add_argument("--tokenizer", help="a tokenizer.bin, for --encode")


def run(args: argparse.Namespace) -> int:
    if args.encode is not None:
        if not args.tokenizer:
            raise ValueError("--encode needs --tokenizer PATH")
        tok = Tokenizer.load(args.tokenizer)
        ids = tok.encode(args.encode, bos=True)
        print(" ".join(map(str, ids)))
        print("|".join(tok.decode([i]) for i in ids[1:]))
        return 0
    if not args.data or not args.out:
        raise ValueError("training a tokenizer needs DATA and --out")
    from .train_sp import train_tokenizer

    src = Path(args.data)
    path = src / "train.txt" if src.is_dir() else src
    if not path.is_file():
        raise FileNotFoundError(f"no training text at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    out = train_tokenizer(lines, args.out, args.preset, args.vocab_size, args.byte_fallback or None)
    tok = Tokenizer.load(out)
    print(f"wrote {out} and {Path(args.out) / 'tokenizer.model'}: {tok.vocab_size} pieces ({args.preset})")
    return 0
