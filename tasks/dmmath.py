"""Problems from DeepMind's `mathematics_dataset` generator, produced locally.

The PyPI release (1.0.1, the latest) fails to import with current sympy and
numpy: it imports `base_solution_linear` from `sympy.solvers.diophantine`, which
moved into that package's `diophantine` submodule, and uses `np.object`, which
numpy removed. Both were fixed in its repository but never released.
`_apply_compat_shim` puts the two names back where the release looks for them
before its first import; nothing of the package is copied.

Each module's questions become `QUESTION = ANSWER` lines (op = the module name).
Generation is seeded (Python's `random` and numpy's global state, which the
package uses), so the same spec gives the same problems.
"""

from __future__ import annotations

import importlib
import random
import sys

import numpy as np

from .problem import Problem
from .spec import TaskSpec

# The minimum set; any module name the package knows works.
DEFAULT_MODULES = ("arithmetic__add_or_sub", "arithmetic__mul", "arithmetic__div", "algebra__linear_1d")
MAX_TRIES_PER_PROBLEM = 50


def _apply_compat_shim() -> None:
    dioph = importlib.import_module("sympy.solvers.diophantine.diophantine")
    package = sys.modules["sympy.solvers.diophantine"]
    if not hasattr(package, "base_solution_linear"):
        package.base_solution_linear = dioph.base_solution_linear  # type: ignore[attr-defined]
    if "object" not in np.__dict__:
        np.object = object  # type: ignore[attr-defined]


def _modules():
    try:
        import sympy  # noqa: F401
    except ImportError as e:
        raise ImportError("the dmmath task needs the optional extra: pip install 'tinymath[dmmath]'") from e
    _apply_compat_shim()
    try:
        from mathematics_dataset.modules import modules
    except ImportError as e:
        raise ImportError("the dmmath task needs the optional extra: pip install 'tinymath[dmmath]'") from e
    return modules


def available_modules() -> list[str]:
    flat: dict[str, object] = {}
    _flatten(_modules().train(lambda r: r), "", flat)
    return sorted(flat)


def _flatten(tree: dict, prefix: str, out: dict) -> None:
    for key, value in tree.items():
        name = f"{prefix}__{key}" if prefix else key
        if isinstance(value, dict):
            _flatten(value, name, out)
        else:
            out[name] = value


def _line_safe(text: str) -> str:
    return " ".join(str(text).split())


def generate(spec: TaskSpec) -> list[Problem]:
    """spec.n unique problems per module (fewer if the module cannot make that many)."""
    flat: dict[str, object] = {}
    _flatten(_modules().train(lambda r: r), "", flat)
    unknown = [m for m in spec.modules if m not in flat]
    if unknown:
        raise ValueError(f"unknown dmmath module {unknown[0]!r} (known: {', '.join(sorted(flat))})")
    out: list[Problem] = []
    for i, name in enumerate(spec.modules):
        random.seed(spec.seed * 1000 + i)
        np.random.seed((spec.seed * 1000 + i) % 2**32)
        made: dict[str, Problem] = {}
        misses = 0
        while len(made) < spec.n and misses < MAX_TRIES_PER_PROBLEM * max(1, len(made)):
            item = flat[name]()  # type: ignore[operator]
            question, answer = _line_safe(item.question), _line_safe(item.answer)
            prompt = f"{question} ="
            if prompt in made or " = " in f" {answer} ":
                misses += 1
                continue
            made[prompt] = Problem(prompt, answer, name)
        out += made.values()
    return out
