"""tinymath.runc: TinyMath's C99 inference engine and its Python bindings.

    from tinymath.runc import Model
    with Model("models/tinymath.bin", tokenizer="models/tokenizer.bin") as m:
        m.solve(["24 + 82 =", "36 / 3 ="])     # -> ["106.00", "12.00"]
        m.solve(["24+82", "100 + 1"], typed=True)  # typed input, as the calculators read it;
                                               # a RangeWarning for 100 (never trained on)

The C library (runc.h / runc.c) reads llama2.c's model files (v0, v1, v2),
the CLI is runc/run.c (`make run`), and the bindings (model.py) call the
library through cffi in API mode (`tinymath.runc._engine`, built by
`pip install -e .` from build_engine.py). Importing this package does not need
the compiled engine; creating a Model does.
"""

from .model import Answer, Generation, Model, RangeWarning, RuncError

__all__ = ["Model", "RuncError", "Generation", "Answer", "RangeWarning"]
