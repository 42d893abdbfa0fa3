"""Export: a training checkpoint -> llama2.c .bin files (v0, v1, v2) or a Hugging Face folder;
a numpy reader for the .bin files; an int8 error report.

Formats
-------
- v0, legacy (llama2.c's run.c reads only this): a 28-byte header of 7 int32
  (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len; a
  negative vocab_size flags an untied classifier), then fp32 tensors in run.c's
  order, including the RoPE tables freq_cis_real/imag that run.c skips.
- v1: uint32 magic 0x616b3432 ("ak42"), int32 version 1, the 7 int32, a uint8
  shared-classifier flag, zero padding to 256 bytes; fp32 tensors, norms first.
- v2 (llama2.c's runq.c reads only this): as v1 with version 2 and an int32
  group size GS at byte 37; norms fp32, every matrix Q8_0 (symmetric int8 in
  groups of GS values, one fp32 scale max|w|/127 per group, int8 values then
  scales per tensor). GS is the largest value <= 64 dividing dim, hidden_dim and
  n_heads*head_size: runq.c walks every weight row and quantizes every
  activation in groups of GS, and those are the row lengths (layout.quantized_dims).
- hf: config.json + model.safetensors (+ tokenizer.model, tokenizer.json, tokenizer_config.json),
  loadable by transformers.LlamaForCausalLM.from_pretrained; wq/wk rows are
  permuted from llama2.c's interleaved rotary pairs to HF's rotate-half (hf.py).
  Such a folder (ours, or any LlamaForCausalLM llama2.c's export.py reads) is also an
  input: hf_import.py permutes q/k back and the writers make a .bin of it.
Byte-level details: layout.py. Every .bin gets a model card beside it (card.py).

The TMx1 header extension (TinyMath's choice, agreed with runc/)
----------------------------------------------------------------
llama2.c's runners hard-code rope_theta = 10000 and norm_eps = 1e-5, and their
headers have no field for either. A TinyMath model may use other values, so in
v1 and v2 headers, inside the zero padding llama2.c never reads, TinyMath writes
at byte 240 the 4 bytes b"TMx1", at 244 float32 rope_theta, at 248 float32
norm_eps (bytes 252-255 stay zero). It is written only when a value differs from
llama2.c's (compared in float32), so files of default models are byte-identical
in layout to llama2.c's; then the export warns (ExportWarning) that llama2.c's
runners ignore the block and would run the model with the wrong values, while
TinyMath's runc reads it. A header without the tag means 10000 and 1e-5.
v0's 28-byte header has no padding to hide it in, so a v0 export of such a
model is refused with an error instead of silently writing a wrong model.

Output safety: every file is written to a temp file in its own directory,
fsynced, then renamed over the destination (os.replace), so no partial file ever
appears under the final name; a destination whose directory is missing is an
error. Inputs are checked before anything is written: every tensor present,
none unexpected, every shape as the config implies, all values finite.

Modules: layout (byte layout, GS rule, output checks), quant (Q8_0), reader (numpy, no torch),
source (checked model), checkpoint (torch loading), writers, hf, hf_import, card, int8_report,
cli. Importing this package, the reader or the report does not import torch;
the names below load their modules on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "read_bin": "reader", "read_header": "reader", "parse_bin": "reader", "BinModel": "reader",
    "BinConfig": "layout", "ExportError": "layout", "default_group_size": "layout",
    "QTensor": "quant", "quantize": "quant",
    "ExportModel": "source", "from_state_dict": "source",
    "read_checkpoint": "checkpoint", "from_module": "checkpoint", "from_checkpoint_dict": "checkpoint",
    "export_model": "writers", "export_checkpoint": "writers", "encode_bin": "writers", "FORMATS": "writers",
    "ExportResult": "writers", "ExportWarning": "writers",
    "write_hf": "hf", "read_hf_folder": "hf_import",
    "quant_report": "int8_report", "QuantReport": "int8_report",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
