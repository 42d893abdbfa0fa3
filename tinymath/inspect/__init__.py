"""tinymath.inspect: looking inside TinyMath models (`tinymath inspect`).

- tokens: top-k candidates, probabilities and entropy per generated token (C engine, no torch)
- confidence: answer confidence against correctness: AUROC, calibration, coverage; a calculator
  that says "not sure" (no torch)
- internals: attention maps and token attribution from the training checkpoint (torch, imported lazily)
- transfer: cross-task loss/accuracy matrix (no torch) and few-shot fine-tuning curves (torch)
- training: accuracy, loss and answer entropy against steps for a run folder (torch)

Importing this package imports neither torch nor matplotlib; each view imports what it needs.
"""
