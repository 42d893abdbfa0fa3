"""The `tinymath` command: one subcommand per stage.

Each subcommand lives in its stage's own module, which defines
`add_arguments(parser)` and `run(args) -> int`. Only the module of the command
being run is imported, so `tinymath gen` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gen": ("tinymath.tasks.cli", "generate a task's train/val/test/holdout files"),
    "tokenizer": ("tinymath.tokenizer.cli", "train a SentencePiece tokenizer and export tokenizer.bin"),
    "score": ("tinymath.tasks.score_cli", "score a file of predictions against expected answers"),
    "train": ("tinymath.train.cli", "train a tiny Llama model on a task"),
    "export": ("tinymath.export.cli", "export a checkpoint to llama2.c .bin files or Hugging Face format"),
    "eval": ("tinymath.study.evaluate", "score a model file on its task's test and holdout splits"),
    "sweep": ("tinymath.study.sweep", "run a study: sizes x tasks x seeds, each trained, exported, evaluated"),
    "report": ("tinymath.study.report", "turn a study's results.jsonl into report.md and plots"),
    "inspect": ("tinymath.inspect.cli", "look inside a model: top-k, entropy, attention, attribution, confidence, transfer"),
    "serve": ("tinymath.serve.cli", "a local web page and JSON API that ask every loaded model side by side"),
}


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: tinymath COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "tinymath COMMAND --help shows a command's options; tinymath --version the version."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from tinymath import __version__

        print(f"tinymath {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"tinymath: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        print(f"tinymath {name}: needs a package that is not installed ({e.name}): {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"tinymath {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as e:
        print(f"tinymath {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinymath {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`tinymath eval ... | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so Python's exit-time flush does not fail again
        return 141


if __name__ == "__main__":
    sys.exit(main())
