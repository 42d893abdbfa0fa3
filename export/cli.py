"""`tinymath export`: checkpoint -> .bin (v0, v1, v2) or HF folder; `--report` on int8 error.

    tinymath export CKPT.pt --format v2 --out model.bin [--group-size 32]
    tinymath export CKPT.pt --format hf --out model_hf/ [--tokenizer tok.model]
    tinymath export llama2c_v0.bin --format v1 --out model.bin     (re-export a float32 .bin, no torch)
    tinymath export model_hf/ --format v1 --out model.bin          (a Hugging Face Llama folder -> .bin)
    tinymath export model.bin --report [--against CKPT.pt|fp32.bin] [--json]

torch is imported only when a checkpoint is read.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .layout import ExportError
from .writers import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a training checkpoint (.pt), a llama2.c .bin (to re-export or report on), "
                                      "or a Hugging Face Llama folder (config.json + safetensors)")
    parser.add_argument("--format", choices=FORMATS,
                        help="v0: llama2.c legacy fp32 (run.c); v1: fp32 ak42; v2: int8 Q8_0 (runq.c); "
                             "hf: Hugging Face LlamaForCausalLM folder")
    parser.add_argument("--out", help="output .bin (its model card goes beside it as .json), or folder for hf")
    parser.add_argument("--group-size", type=int, default=None,
                        help="v2 group size (default: the largest <= 64 dividing dim, hidden_dim, n_heads*head_size)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer for the card (tokenizer.bin or SentencePiece .model; hf copies the .model); "
                             "default: the checkpoint's")
    parser.add_argument("--report", action="store_true",
                        help="print the int8 quantization error per tensor instead of exporting")
    parser.add_argument("--against", default=None,
                        help="with --report: the float32 weights (v0/v1 .bin or checkpoint) an int8 file came from")
    parser.add_argument("--json", action="store_true", help="with --report: print JSON")


def _is_bin(path: Path) -> bool:
    from .int8_report import _is_bin as is_bin

    return is_bin(path)


def _card_meta(src: Path) -> dict:
    """What a .bin's card knows of where the model came from (task, seed, steps, accuracy, tokenizer),
    carried into the card of a re-export; nothing when there is no card, or it belongs to another file."""
    from .card import ModelFiles

    try:
        files = ModelFiles.open(src)
        tokenizer = files.tokenizer()
    except (ValueError, FileNotFoundError):
        return {}
    card = files.card
    meta = {"train_config": {"task": card.get("task"), "seed": card.get("seed")}, "tokenizer": str(tokenizer)}
    for key in ("step", "tokens_seen", "metrics", "accuracy"):
        if card.get(key) is not None:
            meta[key] = card[key]
    if files.tokenizer_model() is not None:
        meta["tokenizer_model"] = str(files.tokenizer_model())
    return meta


def run(args: argparse.Namespace) -> int:
    from .hf_import import is_hf_folder

    src = Path(args.input)
    hf_in = src.is_dir()
    if hf_in and not is_hf_folder(src):
        raise ExportError(f"{src} is a folder without a config.json: not a Hugging Face model folder")
    if not hf_in and not src.is_file():
        raise ExportError(f"no such file: {src}")
    if args.report:
        if hf_in:
            raise ExportError("--report reads a .bin; export the Hugging Face folder to one first")
        if args.format or args.out:
            raise ExportError("--report prints a report; it takes no --format or --out")
        from .int8_report import quant_report

        rep = quant_report(src, args.against, args.group_size)
        print(json.dumps(rep.to_dict(), indent=2) if args.json else rep.format())
        return 0 if rep.ok else 1
    if args.against or args.json:
        raise ExportError("--against and --json go with --report")
    if not args.format or not args.out:
        raise ExportError("say what to write: --format {v0,v1,v2,hf} and --out PATH (or --report)")

    from .writers import ExportWarning, export_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExportWarning)
        if hf_in:
            from .hf_import import read_hf_folder

            model = read_hf_folder(src)
        elif _is_bin(src):
            from .reader import read_bin
            from .source import from_bin_model

            model = from_bin_model(read_bin(src), str(src))
            model.meta.update(_card_meta(src))
        else:
            from .layout import check_parent
            from .checkpoint import read_checkpoint

            check_parent(args.out)  # before the slow load
            model = read_checkpoint(src)
        res = export_model(model, args.format, args.out, group_size=args.group_size, tokenizer=args.tokenizer)
    for w in caught:
        print(f"tinymath export: warning: {w.message}", file=sys.stderr)
    if res.format == "hf":
        print(f"wrote {res.path}/ (Hugging Face LlamaForCausalLM, {model.n_params:,} parameters)")
    else:
        extra = f", group size {res.group_size}" if res.group_size else ""
        print(f"wrote {res.path} ({res.format}, {res.bytes:,} bytes{extra}, sha256 {res.sha256[:16]}...)")
        if res.format == "v2":
            q = res.card["quantization"]
            print(f"  int8 error: max {q['max_abs_error']:.3e}, mean {q['mean_abs_error']:.3e} "
                  f"(worst: {q['worst_tensor']})")
    print(f"wrote {res.card_path} (model card)")
    return 0
