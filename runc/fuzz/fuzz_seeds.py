"""Seed corpora for the libFuzzer harnesses, made from real exported files (runc/fuzz/fuzz.mk runs this).

    python runc/fuzz/fuzz_seeds.py OUT_DIR

writes
    OUT_DIR/seeds/model/       llama2.c files written by tinymath.export from small random-weight
                               models: v0, v1 (tied, untied, TMx1 extension, grouped-query), v2 int8
    OUT_DIR/seeds/tokenizer/   tokenizer.bin files exported by tinymath.tokenizer from SentencePiece
                               models trained here (digits, digits with byte fallback, bpe)
    OUT_DIR/seeds/encode/      fuzz_encode inputs: problem lines, other scripts, broken UTF-8, and a
                               few with a tokenizer embedded (see runc/fuzz/fuzz_encode.c)
    OUT_DIR/tokenizers.txt     the tokenizer paths, colon-separated (fuzz_encode's RUNC_FUZZ_TOKENIZERS)
    OUT_DIR/batch/             fuzz_batch's fixed models: fp32 (v1) and int8 (v2) twins for each tokenizer
                               (digits without byte fallback, digits with it, bpe), some with EOS made likely
    OUT_DIR/batch_models.txt   model and tokenizer paths alternating, colon-separated (RUNC_FUZZ_BATCH)
    OUT_DIR/seeds/batch/       fuzz_batch inputs: settings bytes, then prompt lists (see runc/fuzz/fuzz_batch.c)

Small on purpose (a few KB each): libFuzzer mutates faster, and every header field stays within
reach of a byte flip. Needs numpy and sentencepiece, not torch. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import struct
import sys
import warnings
from pathlib import Path

import numpy as np

from tinymath.export.layout import tensor_shapes
from tinymath.export.source import bin_config_from_model_config, from_state_dict
from tinymath.export.writers import encode_bin
from tinymath.tasks import TaskSpec, build_splits
from tinymath.tokenizer import Tokenizer
from tinymath.tokenizer.train_sp import to_llama2c, train_sentencepiece

TEXTS = [
    "Let x = 3. What is x + 4?", "Solve 2*a + 6 = 0 for a.", "Calculate 0.5 - 12.25.",
    "Divide 91 by 7.", "What is the remainder when 100 is divided by 9?", "Évaluez 3 × 4 ≈ 12 €",
    "日本語のテキスト 123", "emoji 😀 ∑ ∞", "tab\tand\nnewline", "  leading and trailing spaces  ",
]


def problem_lines(n: int = 400) -> list[str]:
    splits = build_splits(TaskSpec(task="arith", max_train=n))
    lines = [p.line for p in splits["train"][:n]]
    return lines + [p.line for p in splits["holdout"][:20]]


def tokenizers(lines: list[str]) -> dict[str, Tokenizer]:
    import sentencepiece as spm

    out = {}
    for name, preset, fallback, text in [("digits", "digits", False, lines),
                                         ("digits_bytes", "digits", True, lines),
                                         ("bpe", "bpe", True, lines + TEXTS * 20)]:
        model = train_sentencepiece(text, preset=preset, vocab_size=400, byte_fallback=fallback)
        sp = spm.SentencePieceProcessor(model_proto=model)
        out[name] = to_llama2c(sp)
    return out


def random_model(rng: np.random.Generator, vocab: int, dim: int = 8, n_layers: int = 1, n_heads: int = 2,
                 n_kv_heads: int = 1, hidden_dim: int = 16, max_seq_len: int = 16, tied: bool = True,
                 rope_theta: float = 10000.0, norm_eps: float = 1e-5, eos_boost: float = 1.0):
    mc = dict(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, hidden_dim=hidden_dim,
              vocab_size=vocab, max_seq_len=max_seq_len, norm_eps=norm_eps, rope_theta=rope_theta, tied=tied)
    cfg = bin_config_from_model_config(mc)
    sd = {}
    for name, shape in tensor_shapes(cfg).items():
        if name.endswith("norm.weight"):
            sd[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            sd[name] = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    # the classifier's EOS row (id 2) scaled: greedy answers then end at EOS after varied lengths
    sd["tok_embeddings.weight" if tied else "output.weight"][2] *= eos_boost
    return from_state_dict(mc, sd, what="fuzz seed")


def model_seeds(vocab: int, rng: np.random.Generator) -> dict[str, bytes]:
    seeds = {}
    variants = {
        "tied": dict(),
        "untied": dict(tied=False),
        "gqa2": dict(dim=16, n_heads=4, n_kv_heads=2, hidden_dim=24, n_layers=2),
        "mha": dict(dim=8, n_heads=2, n_kv_heads=2),
        "ext": dict(rope_theta=500.0, norm_eps=1e-6),
        "long": dict(max_seq_len=64),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TMx1 ExportWarning
        for name, kw in variants.items():
            m = random_model(rng, vocab, **kw)
            for fmt in ("v0", "v1", "v2"):
                if fmt == "v0" and name == "ext":
                    continue  # v0 cannot carry the extension (the exporter refuses)
                seeds[f"{name}_{fmt}.bin"] = encode_bin(m, fmt)
        # a tiny vocabulary: the smallest useful file
        seeds["vocab4_v1.bin"] = encode_bin(random_model(rng, 4, dim=4, hidden_dim=4, n_heads=2, n_kv_heads=1), "v1")
        seeds["vocab4_v2.bin"] = encode_bin(random_model(rng, 4, dim=4, hidden_dim=4, n_heads=2, n_kv_heads=1), "v2")
    return seeds


def embedded(ctl: int, tok: bytes, text: bytes) -> bytes:
    return bytes([ctl | 1]) + struct.pack("<H", len(tok)) + tok + text


def tiny_tokenizer() -> bytes:
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n", b" ", *[bytes([c]) for c in b"0123456789+-*/=."], b" =", b"00",
              b".00"]
    return Tokenizer(pieces, [0.0, 0.0, 0.0] + [-1.0] * 17 + [-2.0, -3.0, -4.0]).to_bytes()


def encode_seeds(lines: list[str], n_fixed: int) -> dict[str, bytes]:
    texts = [ln.encode() for ln in lines[:40]]
    texts += [t.encode() for t in TEXTS]
    texts += [b"", b" ", b"\xff\xfe", b"\x80abc", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80",
              b"\xc0\xaf", b"a" * 300, b"0" * 64 + b".00", b"<0x41>", b"\n<s>\n 1 + 1 =", b"1\x002"]
    seeds = {}
    for i, t in enumerate(texts):
        tok_index = i % n_fixed
        ctl = (tok_index << 3) | (0b110 if i % 3 else 0b010)
        seeds[f"text_{i:03d}"] = bytes([ctl]) + t
    small = tiny_tokenizer()
    for i, t in enumerate([b"24 + 82 = 106.00", b"1.00", b"000 ==", b"x"]):
        seeds[f"embedded_{i}"] = embedded(0b110, small, t)
    return seeds


BATCH_VARIANTS = {
    # name: (tokenizers, model shape, v2 group size)
    "eos": (("digits", "digits_bytes", "bpe"), dict(dim=16, hidden_dim=24, max_seq_len=32, eos_boost=2.5), 4),
    "gqa": (("digits", "bpe"), dict(dim=16, n_heads=4, n_kv_heads=2, hidden_dim=40, n_layers=2, max_seq_len=24,
                                    tied=False, rope_theta=500.0, eos_boost=1.5), 8),
    "plain": (("digits",), dict(dim=8, max_seq_len=48), None),
}


def batch_models(toks: dict[str, Tokenizer], rng: np.random.Generator) -> list[tuple[str, bytes, str]]:
    """fuzz_batch's models: (file name, bytes, tokenizer name), each fp32 one followed by its int8 twin."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TMx1 ExportWarning
        for name, (tok_names, kw, gs) in BATCH_VARIANTS.items():
            for tok in tok_names:
                m = random_model(rng, len(toks[tok].pieces), **kw)
                out.append((f"{tok}_{name}_v1.bin", encode_bin(m, "v1"), tok))
                out.append((f"{tok}_{name}_v2.bin", encode_bin(m, "v2", gs), tok))
    return out


def batch_seeds(lines: list[str], n_models: int) -> dict[str, bytes]:
    """fuzz_batch inputs: 5 settings bytes (model, two engine settings, max_answer, context), then prompts."""
    lists = [
        [ln.encode() for ln in lines[0:8]],
        [ln.encode() for ln in lines[8:40]],
        [b"24 + 82 =", b"24 + 8 =", b"24 + 82 =", b"", b"   ", b"24 + 93 ="],
        [b"1 + 1 =", b"12 x 3 =", b"3 * 3 =", b"1234567890 + 1234567890 =", b"9 - 1 ="],
        [b"\xc3\xa9 =", b"\xff\xfe", b"\xf0\x9f\x98\x80 + 1 =", b"1\x002 =", b"<0x41> =", b"\t7 =\r"],
        [b"9" * 300, b"1 + 2 =", b"1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 =", b"7 / 7 ="],
        [t.encode() for t in TEXTS if "\n" not in t],
        [b"5 ="] * 20,
    ]
    seeds = {}
    for m in range(n_models):
        for i, prompts in enumerate(lists):
            if (m + i) % 3:  # a third of the pairs: enough to reach every model and list
                continue
            a = (m * 7 + i) % 256
            settings = bytes([m, a, (a * 37 + 11) % 256, (0, 3, 40, 255, 210)[(m + i) % 5], (0, 9)[i % 2]])
            seeds[f"m{m:02d}_list{i}"] = settings + b"\n".join(prompts)
    return seeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    lines = problem_lines()
    toks = tokenizers(lines)
    out = args.out
    for sub in ("model", "tokenizer", "encode", "batch"):
        (out / "seeds" / sub).mkdir(parents=True, exist_ok=True)
    tok_paths = []
    for name, tok in toks.items():
        p = out / "seeds" / "tokenizer" / f"{name}.bin"
        p.write_bytes(tok.to_bytes())
        tok_paths.append(str(p.resolve()))
    (out / "seeds" / "tokenizer" / "tiny.bin").write_bytes(tiny_tokenizer())
    for vocab_name in ("digits", "bpe"):
        for name, data in model_seeds(len(toks[vocab_name].pieces), rng).items():
            (out / "seeds" / "model" / f"{vocab_name}_{name}").write_bytes(data)
    # fuzz_encode's fixed tokenizers: 2 built in, then these files
    for name, data in encode_seeds(lines, 2 + len(tok_paths)).items():
        (out / "seeds" / "encode" / name).write_bytes(data)
    (out / "tokenizers.txt").write_text(":".join(tok_paths) + "\n")
    (out / "batch").mkdir(parents=True, exist_ok=True)
    pairs = []
    for name, data, tok in batch_models(toks, rng):
        (out / "batch" / name).write_bytes(data)
        pairs += [str((out / "batch" / name).resolve()), str((out / "seeds" / "tokenizer" / f"{tok}.bin").resolve())]
    (out / "batch_models.txt").write_text(":".join(pairs) + "\n")
    for name, data in batch_seeds(lines, len(pairs) // 2).items():
        (out / "seeds" / "batch" / name).write_bytes(data)
    n = {sub: len(list((out / "seeds" / sub).iterdir())) for sub in ("model", "tokenizer", "encode", "batch")}
    print(f"fuzz seeds in {out}/seeds: " + ", ".join(f"{v} {k}" for k, v in n.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
