"""Problems: generators, the line format, answer formats, deterministic splits, scoring (numpy only)."""

from .formats import FORMATS, STEP_FORMATS, AnswerFormat
from .problem import Problem, parse_line, typed_prompt
from .score import ScoreReport, score
from .spec import SPLITS, TASKS, TaskSpec, build_splits

PRESETS: dict[str, dict] = {
    # the classic TinyMath task: + - * / on 0-89, operands 90-99 held out
    "classic": {"task": "arith"},
    # the curriculum's small steps
    "digits": {"task": "arith", "lo": 0, "hi": 9, "holdout": None},
    "count": {"task": "count", "lo": 0, "hi": 89, "holdout": (90, 99)},
    # grokking-style modular arithmetic
    "mod97": {"task": "mod", "ops": "+", "modulus": 97, "val_frac": 0.1, "test_frac": 0.5},
    # DeepMind mathematics_dataset modules (optional extra)
    "dmmath": {"task": "dmmath", "modules": ("arithmetic__add_or_sub", "arithmetic__mul",
                                             "arithmetic__div", "algebra__linear_1d"), "n": 10_000},
}

__all__ = ["FORMATS", "PRESETS", "SPLITS", "STEP_FORMATS", "TASKS", "AnswerFormat", "Problem", "ScoreReport", "TaskSpec",
           "build_splits", "parse_line", "score", "typed_prompt"]
