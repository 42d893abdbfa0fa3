"""`tinymath inspect`: look inside a model, see where it is unsure, and what transfers.

    tinymath inspect MODEL.bin "24 + 82 ="           top-k + entropy per answer token (C engine),
                                                     attention maps and attribution (checkpoint, torch)
    tinymath inspect confidence MODEL.bin            confidence vs correctness on the test split
    tinymath inspect calc MODEL.bin [-i "36 / 3"]    a calculator that says "not sure"
    tinymath inspect transfer A.bin B.bin C.bin      cross-task accuracy and loss matrix
    tinymath inspect fewshot RUN/best.pt --task T    fine-tuned vs scratch on a little of task T
    tinymath inspect training RUN_DIR                accuracy, loss, answer entropy against steps
    tinymath inspect quant MODEL.bin MODEL.q8.bin    what int8 changes in the answers, and why

Every view prints a table and writes a PNG and a JSON file under --out (default ./inspect).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

KINDS = ("prompt", "confidence", "calc", "transfer", "fewshot", "training", "quant")
DEFAULT_OUT = "inspect"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n")[1] if __doc__ else None
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "With no view named, `prompt` is meant: tinymath inspect MODEL PROMPT."
    sub = p.add_subparsers(dest="kind", metavar="VIEW")

    s = sub.add_parser("prompt", help="top-k, entropy, attention and attribution for one problem")
    s.add_argument("model", help="a .bin model file")
    s.add_argument("prompt", help='a problem, e.g. "24 + 82 =" (a missing " =" is added)')
    s.add_argument("--top-k", "-k", type=int, default=5, help="candidates shown per token (default 5)")
    s.add_argument("--token", type=int, help="answer token to attribute (0 = first; default: the least sure one)")
    s.add_argument("--checkpoint", help="training checkpoint for attention/attribution (default: the card's source)")
    s.add_argument("--no-torch", action="store_true", help="only the C engine's view (no attention, attribution)")
    s.add_argument("--ig-steps", type=int, default=128, help="integrated-gradients path steps (default 128)")
    _common(s)

    s = sub.add_parser("confidence", help="answer confidence against correctness on a task's split")
    s.add_argument("model", help="a .bin model file")
    s.add_argument("--task", help="task spec JSON, spec.json or preset (default: the model card's task)")
    s.add_argument("--splits", default="test", help="comma-separated splits (default test)")
    s.add_argument("--limit", type=int, help="use only the first N problems")
    _common(s)

    s = sub.add_parser("calc", help='a calculator that answers "not sure" below a confidence threshold')
    s.add_argument("model", help="a .bin model file")
    s.add_argument("-i", "--input", help="answer this one problem and exit (default: read lines from stdin)")
    s.add_argument("--threshold", type=float, help="confidence below which to say not sure (default: the "
                   "threshold reaching 99%% accuracy in OUT/NAME_confidence.json, else 0.9)")
    s.add_argument("--tokenizer", "-z", help="tokenizer.bin (default: from the model card or beside the model)")
    s.add_argument("--out", default=DEFAULT_OUT, help="where `inspect confidence` wrote its study (default ./inspect)")

    s = sub.add_parser("transfer", help="cross-task matrix: every model on every model's task")
    s.add_argument("models", nargs="+", help=".bin model files (rows); their cards name the tasks (columns)")
    s.add_argument("--task", action="append", default=[], help="an extra task column (JSON, spec.json or preset)")
    s.add_argument("--split", default="test", help="split to evaluate (default test)")
    s.add_argument("--out", default=DEFAULT_OUT, help="output folder (default ./inspect)")

    s = sub.add_parser("fewshot", help="fine-tune on a little of another task vs training from scratch")
    s.add_argument("source", help="the trained checkpoint (RUN/best.pt) or its exported .bin")
    s.add_argument("--task", required=True, help="the new task (JSON, spec.json or preset)")
    s.add_argument("--shots", type=int, nargs="+", default=[16, 64, 256], help="training problems (default 16 64 256)")
    s.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    s.add_argument("--eval-every", type=int, help="steps between evaluations (default steps/10)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a training config override for every run (lr=3e-3); repeatable")
    s.add_argument("--out", required=True, help="folder for the runs, fewshot.json and fewshot.png")

    s = sub.add_parser("training", help="accuracy, loss and answer entropy against steps for a run folder")
    s.add_argument("run", help="a training run folder (metrics.jsonl, ckpt.pt, best.pt, snapshots/)")
    s.add_argument("--split", default="val", help="split for entropy and loss at the checkpoints (default val)")
    s.add_argument("--limit", type=int, default=2000, help="problems of the split to use (default 2000)")
    s.add_argument("--out", default=DEFAULT_OUT, help="output folder (default ./inspect)")

    s = sub.add_parser("quant", help="int8 against fp32: answer agreement, weight vs activation rounding, near-ties")
    s.add_argument("fp32", help="the float32 .bin (version 0 or 1)")
    s.add_argument("int8", help="the int8 .bin (version 2) of the same model")
    s.add_argument("--task", help="task spec JSON, spec.json or preset (default: the fp32 model card's task)")
    s.add_argument("--splits", default="test,holdout", help="comma-separated splits (default test,holdout)")
    s.add_argument("--limit", type=int, help="use only the first N problems of each split")
    _common(s)

    parse = p.parse_args

    def parse_args(args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        first = next((a for a in args if not a.startswith("-")), None)
        if args and first is not None and first not in KINDS and not {"-h", "--help"} & set(args[:1]):
            args = ["prompt"] + args
        return parse(args, namespace)

    p.parse_args = parse_args  # `tinymath inspect MODEL PROMPT` means the prompt view


def _common(s: argparse.ArgumentParser) -> None:
    s.add_argument("--tokenizer", "-z", help="tokenizer.bin (default: from the model card or beside the model)")
    s.add_argument("--out", default=DEFAULT_OUT, help="output folder (default ./inspect)")


def run(args: argparse.Namespace) -> int:
    if not args.kind:
        print("tinymath inspect: name a view or give MODEL PROMPT (tinymath inspect --help)", file=sys.stderr)
        return 2
    return {"prompt": _prompt, "confidence": _confidence, "calc": _calc, "transfer": _transfer,
            "fewshot": _fewshot, "training": _training, "quant": _quant}[args.kind](args)


def _wrote(*paths: Path) -> None:
    for p in paths:
        print(f"wrote {p}")


def _prompt(args: argparse.Namespace) -> int:
    from .common import InspectError, model_name, open_model, piece, write_json
    from tinymath.tasks import typed_prompt
    from .tokens import format_trace, plot_trace, trace

    out = Path(args.out)
    name = model_name(args.model)
    prompt = typed_prompt(args.prompt)
    model, card, _ = open_model(args.model, args.tokenizer)
    with model:
        t = trace(model, prompt, k=args.top_k)
        labels = [piece(model, i) for i in t.ids]
        labels_of = {i: piece(model, i) for i in range(model.vocab_size)}
        engine_config = model.config
    print(format_trace(t))
    result = {"model": args.model, **t.to_dict()}
    written = [plot_trace(t, out / f"{name}_tokens.png", title=f"{name}: {prompt} {t.answer}")]
    if not args.no_torch and t.tokens:
        from . import internals

        try:
            tm, tm_config, ckpt_path = internals.load_model_behind(args.model, args.checkpoint)
        except InspectError as e:
            print(f"(no attention or attribution: {e})")
        else:
            internals.check_same_model(tm, tm_config, engine_config)
            maps = internals.attention_maps(tm, t.ids)
            written.append(internals.plot_attention(
                maps, labels, out / f"{name}_attention.png",
                title=f"{name}: attention per layer and head (row: query, column: key), {prompt} {t.answer}"))
            steps = [s for s in t.steps if s.index < len(t.tokens)]
            j = args.token if args.token is not None else min(steps, key=lambda s: s.prob).index
            if not 0 <= j < len(t.tokens):
                raise InspectError(f"--token {j}: the answer has tokens 0..{len(t.tokens) - 1}")
            pos = len(t.prompt_ids) - 1 + j
            space = next((i for i in range(engine_config["vocab_size"]) if labels_of.get(i) == " "), None)
            if space is None:
                raise InspectError("the vocabulary has no space token for the attribution baseline")
            attr = internals.attribution(tm, t.ids, pos, t.tokens[j], space, steps=args.ig_steps)
            target = t.steps[j].text
            written.append(internals.plot_attribution(
                attr, labels, target, out / f"{name}_attribution.png",
                title=f"{name}: which tokens answer token {j} ({target!r}, log p = {attr['logprob']:.3f}) rests on"))
            print(f"\nattribution of answer token {j} ({target!r}, log p {attr['logprob']:.4f}) from {ckpt_path}:")
            from .common import show, table

            print(table(["token", "grad x input", "integrated gradients"],
                        [[show(lab), f"{g:+.4f}", f"{ig:+.4f}"] for lab, g, ig in
                         zip(labels, attr["grad_x_input"], attr["integrated_gradients"])]))
            print(f"(integrated gradients from a baseline of spaces add up to {sum(attr['integrated_gradients']):.4f}; "
                  f"log p - log p(baseline) = {attr['logprob'] - attr['ig_baseline_logprob']:.4f})")
            result.update({"checkpoint": str(ckpt_path), "attention": maps.tolist(), "labels": labels,
                           "attribution": {"token": j, "position": pos, **attr}})
    written.append(write_json(out / f"{name}_inspect.json", result))
    _wrote(*written)
    return 0


def _confidence(args: argparse.Namespace) -> int:
    from .common import model_name, write_json
    from .confidence import format_summary, plot, study

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    st = study(args.model, args.tokenizer, args.task, splits, args.limit)
    s = st.summary()
    print(format_summary(s))
    out, name = Path(args.out), model_name(args.model)
    png = plot(s, out / f"{name}_confidence.png", st.confidence, st.correct)
    from tinymath.export.card import sha256_file

    data = {**s, "model_sha256": sha256_file(args.model),
            "problems": [{"prompt": p, "expected": e, "answer": a, "confidence": c, "correct": ok}
                              for p, e, a, c, ok in zip(st.prompts, st.expected, st.answers, st.confidence,
                                                        st.correct)]}
    _wrote(png, write_json(out / f"{name}_confidence.json", data))
    return 0


def _calc(args: argparse.Namespace) -> int:
    from .common import model_name, open_model, task_of
    from .confidence import DEFAULT_THRESHOLD, load_threshold

    threshold = args.threshold
    source = "--threshold"
    if threshold is None:
        study = Path(args.out) / f"{model_name(args.model)}_confidence.json"
        threshold, source = load_threshold(study, args.model)
        if threshold is None:
            threshold = DEFAULT_THRESHOLD
    # always said, on stderr: a threshold taken from a file an earlier run left must not be silent
    print(f"TinyMath calculator: says 'not sure' below confidence {threshold:.4f} ({source})"
          + ("; end with Ctrl-D" if args.input is None and sys.stdin.isatty() else ""), file=sys.stderr)
    model, card, _ = open_model(args.model, args.tokenizer)
    try:
        spec = task_of(card)
    except ValueError:
        spec = None
    with model:
        if args.input is not None:
            text, ok = _calc_one(model, args.input, threshold, spec)
            print(text)
            return 0 if ok else 2
        for line in sys.stdin:
            if line.strip():
                print(_calc_one(model, line, threshold, spec)[0], flush=True)
    return 0


def _calc_one(model, line: str, threshold: float, spec=None) -> tuple[str, bool]:
    """One calculator line: its answer (with a notice for operands the model never trained on), or
    what is wrong with it (the session goes on)."""
    from tinymath.runc import RuncError
    from tinymath.tasks import typed_prompt
    from tinymath.tasks.spec import range_note

    from .confidence import calc_line

    try:
        text = calc_line(model, line, threshold)[0]
    except (RuncError, ValueError) as e:
        return f"error: {e}", False
    note = range_note(spec, typed_prompt(line)) if spec is not None else None
    return (f"{text}  (note: {note})" if note else text), True


def _transfer(args: argparse.Namespace) -> int:
    from tinymath import fileio

    from .common import write_json
    from .transfer import format_matrix, markdown, matrix, plot_matrix

    r = matrix(args.models, args.task, args.split)
    print(format_matrix(r))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fileio.write_text(out / "transfer.md", markdown(r))
    _wrote(plot_matrix(r, out / "transfer.png"), write_json(out / "transfer.json", r), out / "transfer.md")
    return 0


def _fewshot(args: argparse.Namespace) -> int:
    from tinymath.train.config import apply_override  # the trainer's own --set parser

    from .transfer import fewshot, format_fewshot, plot_fewshot

    overrides: dict = {}
    for item in args.overrides:
        apply_override(overrides, item)
    r = fewshot(args.source, args.task, args.shots, args.out, steps=args.steps, eval_every=args.eval_every,
                train_overrides=overrides)
    print(format_fewshot(r))
    out = Path(args.out)
    _wrote(plot_fewshot(r, out / "fewshot.png"), out / "fewshot.json")
    return 0


def _training(args: argparse.Namespace) -> int:
    from .common import write_json
    from .training import format_result, over_training, plot

    r = over_training(args.run, args.split, args.limit)
    print(format_result(r))
    out, name = Path(args.out), Path(args.run).resolve().name
    _wrote(plot(r, out / f"{name}_training.png"), write_json(out / f"{name}_training.json", r))
    return 0


def _quant(args: argparse.Namespace) -> int:
    from .common import model_name, write_json
    from .quant import format_summary, plot, study

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    st = study(args.fp32, args.int8, args.tokenizer, args.task, splits, args.limit)
    s = st.summary()
    print(format_summary(s))
    out, name = Path(args.out), model_name(args.fp32)
    data = {**s, "problems": st.splits}
    _wrote(plot(s, out / f"{name}_quant.png"), write_json(out / f"{name}_quant.json", data))
    return 0


if __name__ == "__main__":  # python -m tinymath.inspect.cli ...
    from tinymath.cli import main

    sys.exit(main(["inspect", *sys.argv[1:]]))
