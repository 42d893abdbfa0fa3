"""The byte layout of llama2.c's .bin files, as data: headers, tensor order, shapes.

Shared by the writers and the numpy reader, so both describe one format. No torch.

All integers and floats are little-endian (llama2.c writes native order; every
machine it targets is little-endian, and TinyMath pins it).

Header of version 0 (28 bytes)::

    int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len
    (vocab_size < 0 means: the classifier is not shared; |vocab_size| is the size)

Header of versions 1 and 2 (256 bytes, zero padded)::

    off  0  uint32  magic 0x616b3432 ("ak42" read as a little-endian uint32)
    off  4  int32   version (1 or 2)
    off  8  int32 x 7  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len
    off 36  uint8   shared_classifier (1: classifier = token embedding)
    off 37  int32   group_size (version 2 only; unaligned, as llama2.c writes it)
    off 240 4 bytes b"TMx1"        TinyMath extension (only when present)
    off 244 float32 rope_theta     ... (runners that know it use these values;
    off 248 float32 norm_eps       ...  llama2.c's runners ignore the padding)

Tensor names are llama2.c's model.py parameter names (which TinyMath's
train/model.py shares). run.c's struct names map onto them as:
token_embedding_table = tok_embeddings.weight, rms_att_weight = layers.*.attention_norm.weight,
wq/wk/wv/wo = layers.*.attention.wq/wk/wv/wo.weight, rms_ffn_weight = layers.*.ffn_norm.weight,
w1/w2/w3 = layers.*.feed_forward.w1/w2/w3.weight, rms_final_weight = norm.weight,
wcls = output.weight; version 0 also carries freq_cis_real / freq_cis_imag (each
(max_seq_len, head_size/2), RoPE cos/sin tables that run.c skips).
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path

MAGIC = 0x616B3432
HEADER_SIZE = 256  # versions 1 and 2
V0_HEADER = struct.Struct("<7i")
V1_HEADER = struct.Struct("<Ii7iB")  # 37 bytes, then zero padding to 256
V2_HEADER = struct.Struct("<Ii7iBi")  # 41 bytes, then zero padding to 256
EXT_OFFSET = 240
EXT_TAG = b"TMx1"
EXT = struct.Struct("<4sff")  # tag, rope_theta, norm_eps at offsets 240, 244, 248

LLAMA2C_ROPE_THETA = 10000.0  # what llama2.c's runners hard-code
LLAMA2C_NORM_EPS = 1e-5
MAX_GROUP_SIZE = 64  # llama2.c's default group size, the largest TinyMath picks
INT32_MAX = 2**31 - 1


class ExportError(ValueError):
    """A problem with an export's input or output: the message says what and where."""


def check_parent(path) -> Path:
    """The destination as a Path; ExportError if its directory is missing (checked before any slow work)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"output directory does not exist: {path.parent}/ (for {path}); create it first")
    return path


@dataclass(frozen=True)
class BinConfig:
    """What a .bin header says (plus the defaults a header without the extension implies)."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    max_seq_len: int
    shared_classifier: bool
    version: int = 1
    group_size: int | None = None  # version 2 only
    rope_theta: float = LLAMA2C_ROPE_THETA
    norm_eps: float = LLAMA2C_NORM_EPS
    extension: bool = False  # True when the header carries the TMx1 block

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_size

    def to_dict(self) -> dict:
        return asdict(self)

    def model_config(self) -> dict:
        """A dict for tinymath.train.model.ModelConfig.from_dict."""
        return dict(dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
                    hidden_dim=self.hidden_dim, vocab_size=self.vocab_size, max_seq_len=self.max_seq_len,
                    norm_eps=float(self.norm_eps), rope_theta=float(self.rope_theta), tied=self.shared_classifier)

    def with_(self, **kw) -> "BinConfig":
        return replace(self, **kw)

    def check(self) -> None:
        """Raise ExportError for shapes that no llama2.c runner could use."""
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= INT32_MAX:
                raise ExportError(f"{name} must be a positive int32, got {v!r}")
        if self.dim % self.n_heads:
            raise ExportError(f"n_heads ({self.n_heads}) does not divide dim ({self.dim})")
        if self.n_heads % self.n_kv_heads:
            raise ExportError(f"n_kv_heads ({self.n_kv_heads}) does not divide n_heads ({self.n_heads})")
        if self.head_size % 2:
            raise ExportError(f"head size dim/n_heads = {self.head_size} is odd; RoPE rotates channel pairs")
        for name in ("rope_theta", "norm_eps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ExportError(f"{name} must be a finite positive number, got {v!r}")


def f32_short(x: float) -> float:
    """x rounded to float32, returned as the shortest decimal that rounds back to it (1e-05, not 9.99e-06...)."""
    v = struct.unpack("<f", struct.pack("<f", x))[0]
    for digits in range(1, 10):
        s = float(f"{v:.{digits}g}")
        if struct.pack("<f", s) == struct.pack("<f", v):
            return s
    return v


def uses_extension(rope_theta: float, norm_eps: float) -> bool:
    """True when a model needs the TMx1 header block: llama2.c's hard-coded values differ.

    Compared after rounding to float32, the precision the header and the runners use.
    """
    f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]  # noqa: E731
    return f32(rope_theta) != f32(LLAMA2C_ROPE_THETA) or f32(norm_eps) != f32(LLAMA2C_NORM_EPS)


def tensor_shapes(cfg: BinConfig) -> dict[str, tuple[int, ...]]:
    """Every weight tensor of the model by name, with its torch shape (out, in)."""
    d, h, q, kv = cfg.dim, cfg.hidden_dim, cfg.n_heads * cfg.head_size, cfg.kv_dim
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (cfg.vocab_size, d)}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        shapes[p + "attention_norm.weight"] = (d,)
        shapes[p + "attention.wq.weight"] = (q, d)
        shapes[p + "attention.wk.weight"] = (kv, d)
        shapes[p + "attention.wv.weight"] = (kv, d)
        shapes[p + "attention.wo.weight"] = (d, q)
        shapes[p + "ffn_norm.weight"] = (d,)
        shapes[p + "feed_forward.w1.weight"] = (h, d)
        shapes[p + "feed_forward.w2.weight"] = (d, h)
        shapes[p + "feed_forward.w3.weight"] = (h, d)
    shapes["norm.weight"] = (d,)
    if not cfg.shared_classifier:
        shapes["output.weight"] = (cfg.vocab_size, d)
    return shapes


def _per_layer(n_layers: int, suffix: str) -> list[str]:
    return [f"layers.{i}.{suffix}" for i in range(n_layers)]


def norm_names(n_layers: int) -> list[str]:
    """The fp32 tensors of version 1 and 2, in file order: the RMSNorm weights."""
    return [*_per_layer(n_layers, "attention_norm.weight"), *_per_layer(n_layers, "ffn_norm.weight"), "norm.weight"]


def matrix_names(n_layers: int, shared_classifier: bool) -> list[str]:
    """The matrices of version 1 and 2 (quantized in 2), in file order."""
    names = ["tok_embeddings.weight"]
    for s in ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
              "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"):
        names += _per_layer(n_layers, s + ".weight")
    if not shared_classifier:
        names.append("output.weight")
    return names


def v0_names(n_layers: int, shared_classifier: bool) -> list[str]:
    """Version 0 file order (run.c's memory_map_weights), freq tables included."""
    names = ["tok_embeddings.weight", *_per_layer(n_layers, "attention_norm.weight")]
    for s in ("attention.wq", "attention.wk", "attention.wv", "attention.wo"):
        names += _per_layer(n_layers, s + ".weight")
    names += _per_layer(n_layers, "ffn_norm.weight")
    for s in ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3"):
        names += _per_layer(n_layers, s + ".weight")
    names += ["norm.weight", "freq_cis_real", "freq_cis_imag"]
    if not shared_classifier:
        names.append("output.weight")
    return names


def freq_shape(cfg: BinConfig) -> tuple[int, int]:
    return (cfg.max_seq_len, cfg.head_size // 2)


def quantized_dims(cfg: BinConfig) -> dict[str, int]:
    """The lengths runq.c cuts into groups of GS.

    runq.c's matmul walks each weight row (the input dimension n) in groups of GS
    and quantizes the activation it multiplies the same way; it silently drops a
    tail if GS does not divide n, and indexes scales by (row*n + j)/GS. The rows
    are dim long (wq, wk, wv, w1, w3, wcls, and the embedding it dequantizes by
    i/GS), n_heads*head_size long (wo, and the attention output it quantizes), and
    hidden_dim long (w2, and the FFN activation). So GS must divide all three.
    (n_heads*head_size equals dim in llama2.c's models; it is listed because it is
    the length runq.c actually uses.)
    """
    return {"dim": cfg.dim, "hidden_dim": cfg.hidden_dim, "n_heads*head_size": cfg.n_heads * cfg.head_size}


def default_group_size(cfg: BinConfig, max_group_size: int = MAX_GROUP_SIZE) -> int:
    """The rule: the largest GS <= 64 that divides dim, hidden_dim and n_heads*head_size.

    GS = 1 always divides, so a rule-chosen size always exists; it can only be
    small (dim=64, hidden_dim=176 gives 16). llama2.c's export.py halves 64 until
    it divides dim only, and so can write files runq.c misreads when hidden_dim
    is not a multiple of GS.
    """
    if max_group_size < 1:
        raise ExportError(f"maximum group size must be >= 1, got {max_group_size}")
    g = 0
    for n in quantized_dims(cfg).values():
        g = math.gcd(g, n)
    return max(d for d in range(1, min(g, max_group_size) + 1) if g % d == 0)


def check_group_size(cfg: BinConfig, group_size: int) -> int:
    """Validate a requested group size against the rule; return it or raise ExportError."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ExportError(f"group size must be a positive integer, got {group_size!r}")
    bad = {k: v for k, v in quantized_dims(cfg).items() if v % group_size}
    if bad:
        g = 0
        for n in quantized_dims(cfg).values():
            g = math.gcd(g, n)
        ok = [d for d in range(1, g + 1) if g % d == 0]
        raise ExportError(
            f"group size {group_size} does not divide {', '.join(f'{k}={v}' for k, v in bad.items())}; "
            f"runq.c needs GS to divide dim, hidden_dim and n_heads*head_size: valid sizes are {ok}")
    return group_size


def tensor_bytes(version: int, cfg: BinConfig) -> int:
    """Total payload size after the header, for the exact file-size check."""
    shapes = tensor_shapes(cfg)
    numel = {k: math.prod(v) for k, v in shapes.items()}
    if version == 0:
        return 4 * (sum(numel.values()) + 2 * math.prod(freq_shape(cfg)))
    if version == 1:
        return 4 * sum(numel.values())
    if version == 2:
        gs = cfg.group_size
        assert gs
        norms = sum(numel[n] for n in norm_names(cfg.n_layers))
        mats = matrix_names(cfg.n_layers, cfg.shared_classifier)
        return 4 * norms + sum(numel[n] + 4 * (numel[n] // gs) for n in mats)
    raise ExportError(f"unknown version {version}")


def pack_header(cfg: BinConfig, version: int) -> bytes:
    """The header bytes for `version` (0, 1, 2), TMx1 block included when the model needs it."""
    fields = (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads)
    if version == 0:
        if uses_extension(cfg.rope_theta, cfg.norm_eps):
            raise ExportError("version 0 has no room for rope_theta/norm_eps")
        vocab = cfg.vocab_size if cfg.shared_classifier else -cfg.vocab_size
        return V0_HEADER.pack(*fields, vocab, cfg.max_seq_len)
    if version == 1:
        head = V1_HEADER.pack(MAGIC, 1, *fields, cfg.vocab_size, cfg.max_seq_len, int(cfg.shared_classifier))
    elif version == 2:
        if not cfg.group_size:
            raise ExportError("version 2 needs a group size")
        head = V2_HEADER.pack(MAGIC, 2, *fields, cfg.vocab_size, cfg.max_seq_len, int(cfg.shared_classifier),
                              cfg.group_size)
    else:
        raise ExportError(f"unknown version {version}")
    buf = bytearray(HEADER_SIZE)
    buf[: len(head)] = head
    if uses_extension(cfg.rope_theta, cfg.norm_eps):
        buf[EXT_OFFSET: EXT_OFFSET + EXT.size] = EXT.pack(EXT_TAG, cfg.rope_theta, cfg.norm_eps)
    return bytes(buf)


def unpack_header(data: bytes) -> tuple[BinConfig, int]:
    """Parse the start of a .bin: (config, header size in bytes). Raises ExportError."""
    if len(data) >= 8 and struct.unpack_from("<I", data)[0] == MAGIC:
        version = struct.unpack_from("<i", data, 4)[0]
        if version not in (1, 2):
            raise ExportError(f"ak42 header with unknown version {version} (known: 1, 2)")
        if len(data) < HEADER_SIZE:
            raise ExportError(f"file too short for a {HEADER_SIZE}-byte header ({len(data)} bytes)")
        if version == 1:
            _, _, *f, shared = V1_HEADER.unpack_from(data)
            gs = None
        else:
            _, _, *f, shared, gs = V2_HEADER.unpack_from(data)
        if shared not in (0, 1):
            raise ExportError(f"shared_classifier byte is {shared}, expected 0 or 1")
        tag, theta, eps = EXT.unpack_from(data, EXT_OFFSET)
        ext = tag == EXT_TAG
        if not ext and any(data[EXT_OFFSET:EXT_OFFSET + 4]):
            raise ExportError(f"unknown header extension at byte {EXT_OFFSET}: {data[EXT_OFFSET:EXT_OFFSET + 4]!r} "
                              f"(expected {EXT_TAG!r} or zeros)")
        cfg = BinConfig(*f, shared_classifier=bool(shared), version=version, group_size=gs,
                        rope_theta=f32_short(theta) if ext else LLAMA2C_ROPE_THETA,
                        norm_eps=f32_short(eps) if ext else LLAMA2C_NORM_EPS, extension=ext)
        if version == 2 and (gs is None or gs < 1):
            raise ExportError(f"version 2 header has group size {gs}")
        return cfg, HEADER_SIZE
    if len(data) < V0_HEADER.size:
        raise ExportError(f"file too short for any llama2.c header ({len(data)} bytes)")
    *f, vocab, seq = V0_HEADER.unpack_from(data)
    cfg = BinConfig(*f, vocab_size=abs(vocab), max_seq_len=seq, shared_classifier=vocab > 0, version=0)
    return cfg, V0_HEADER.size
