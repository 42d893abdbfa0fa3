"""Shared test set-up: never test a stale build of the C engine.

In a source checkout (editable install) the engine is compiled into runc/ by
`pip install -e .`; a developer running pytest after editing runc.c would
otherwise test yesterday's C. runc/build_engine.py's refresh (the one guard,
which `make venv` runs too) rebuilds it when a source is newer than it, or
when runc/ holds more than one build.
"""

from __future__ import annotations

from tinymath.runc import build_engine

build_engine.refresh()
