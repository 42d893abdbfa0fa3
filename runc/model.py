"""Python face of the C engine: `Model(path, tokenizer=...)` over `tinymath.runc._engine`.

The engine is runc.c and batch.c compiled by cffi in API mode
(runc/build_engine.py); cffi releases the GIL around every C call, so long
calls (solve, generate, logits) let other Python threads run. `solve` runs the
batch engine (many problems in flight, worker threads, matrix-matrix work):
its greedy answers are identical to runc_solve's, one problem at a time. A Model owns C memory (weights, tokenizer, one
run state) and frees it on close(), at the end of a `with` block, or when
garbage-collected. One Model is safe to share between threads: calls are
serialised by a lock (use one Model per thread for parallelism; the weights of
a file opened twice are shared by the OS page cache through mmap).

Errors from C arrive as RuncError (a ValueError) carrying the C message and
status name; misuse from Python (closed model, wrong types, empty lists) raises
RuncError, TypeError or ValueError with a message naming the problem.
"""

from __future__ import annotations

import os
import secrets
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

__all__ = ["Model", "RuncError", "Generation", "Answer", "RangeWarning"]


class RangeWarning(UserWarning):
    """Model.solve(typed=True): a problem with an operand the model never trained on (outside its
    card's trained range, or held out). The answer is returned, but not vouched for."""


class RuncError(ValueError):
    """A failure reported by the C engine (or a misuse of a Model).

    `status` is the C status name (e.g. "RUNC_E_MAGIC"), `code` its number.
    """

    def __init__(self, message: str, code: int | None = None, status: str | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class Generation:
    """A sampled continuation: its text, token ids and their log-probabilities.

    logprobs[i] is log p(tokens[i]) under the model (log-softmax of the logits at
    temperature 1, whatever temperature sampled it).
    """

    text: str
    tokens: list[int]
    logprobs: np.ndarray


class Answer(NamedTuple):
    """One answer of `Model.solve(prompts, confidence=True)`.

    text: the answer (as solve returns it: the final answer, or with steps=True the whole answer of a
    model that shows its work); mean_logprob and min_logprob: the
    mean and the minimum log-probability of the generated tokens, the closing
    EOS included (absent when the answer ran to the end of the context) -- the
    model's confidence: exp(mean_logprob) is the geometric mean of the tokens'
    probabilities, exp(min_logprob) the least likely token's; n_tokens: tokens
    generated for the whole answer (steps included), EOS not counted.
    """

    text: str
    mean_logprob: float
    min_logprob: float
    n_tokens: int


_SOLVE_CHUNK = 16384  # prompts per call into the batch engine (bounds the answer buffers) ...
_SOLVE_CHUNK_BYTES = 64 << 20  # ... as does this size of the answer buffers of one call
_QUOTE = 40  # an error message quotes at most this many characters of a prompt


def _quote(prompt: str) -> str:
    """A prompt as an error message shows it: repr of its first _QUOTE characters."""
    if len(prompt) <= _QUOTE:
        return repr(prompt)
    return f"{prompt[:_QUOTE]!r}... ({len(prompt):,} characters)"


def _load_engine():
    try:
        from . import _engine  # type: ignore[attr-defined]
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "tinymath.runc._engine (the compiled C engine) is not built: run `pip install -e .` "
            "in the repository, or `python runc/build_engine.py` to build it in place"
        ) from e
    return _engine.ffi, _engine.lib


_CONFIG_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len",
                  "head_size", "kv_dim", "version", "shared_classifier", "group_size", "has_extension",
                  "rope_theta", "norm_eps", "file_bytes")


class Model:
    """A llama2.c model file (v0, v1 fp32 or v2 int8) and its tokenizer, run by the C engine.

    Model(path, tokenizer=None, context=None, mmap=True, threads=0)
      tokenizer: path of tokenizer.bin; None uses tokenizer.bin beside the model
        when there is one (else text methods raise); False opens no tokenizer.
      context: positions of the run state (default: the model's max_seq_len).
      mmap: False reads the file into memory instead of mapping it.
      threads: worker threads of the batch engine (solve): 0 = one per CPU core.
    """

    def __init__(self, path: str | os.PathLike, tokenizer: str | os.PathLike | None | bool = None, *,
                 context: int | None = None, mmap: bool = True, threads: int = 0):
        self._ffi, self._lib = _load_engine()
        self._model = self._tok = self._state = self._batch = None
        self._threads = self._check_threads(threads)
        self._lock = threading.Lock()
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            self.path = os.fsdecode(self.path)
        ffi, lib = self._ffi, self._lib
        out = ffi.new("runc_model **")
        err = ffi.new("runc_error *")
        flags = 0 if mmap else lib.RUNC_OPEN_NO_MMAP
        self._check(lib.runc_model_open(out, os.fsencode(self.path), flags, err), err)
        self._model = out[0]
        self._init_rest(tokenizer, context, os.path.dirname(self.path))

    @classmethod
    def from_bytes(cls, model: bytes, tokenizer: bytes | None = None, *, context: int | None = None,
                   threads: int = 0) -> "Model":
        """A Model from the bytes of a model file (and of a tokenizer.bin); the bytes are copied."""
        self = cls.__new__(cls)
        self._ffi, self._lib = _load_engine()
        self._model = self._tok = self._state = self._batch = None
        self._threads = self._check_threads(threads)
        self._lock = threading.Lock()
        self.path = None
        ffi, lib = self._ffi, self._lib
        if not isinstance(model, (bytes, bytearray, memoryview)):
            raise TypeError(f"model must be bytes, got {type(model).__name__}")
        out = ffi.new("runc_model **")
        err = ffi.new("runc_error *")
        data = bytes(model)
        self._check(lib.runc_model_open_buffer(out, data, len(data), lib.RUNC_OPEN_COPY, err), err)
        self._model = out[0]
        self._init_rest(tokenizer if tokenizer is not None else False, context, None)
        return self

    def _init_rest(self, tokenizer: Any, context: int | None, model_dir: str | None) -> None:
        ffi, lib = self._ffi, self._lib
        err = ffi.new("runc_error *")
        try:
            c = lib.runc_model_config(self._model)
            self._config = {name: getattr(c, name) for name in _CONFIG_FIELDS}
            self._config["shared_classifier"] = bool(self._config["shared_classifier"])
            self._config["has_extension"] = bool(self._config["has_extension"])
            vocab = self._config["vocab_size"]
            self.tokenizer_path = None
            if tokenizer is None and model_dir is not None:
                sibling = os.path.join(model_dir, "tokenizer.bin")
                tokenizer = sibling if os.path.exists(sibling) else False
            if isinstance(tokenizer, (bytes, bytearray, memoryview)):
                out = ffi.new("runc_tokenizer **")
                data = bytes(tokenizer)
                self._check(lib.runc_tokenizer_open_buffer(out, data, len(data), vocab, err), err)
                self._tok = out[0]
            elif tokenizer is not None and tokenizer is not False:
                self.tokenizer_path = os.fsdecode(os.fspath(tokenizer))
                out = ffi.new("runc_tokenizer **")
                self._check(lib.runc_tokenizer_open(out, os.fsencode(self.tokenizer_path), vocab, err), err)
                self._tok = out[0]
            if context is None:
                context = 0
            elif isinstance(context, bool) or not isinstance(context, int) or context <= 0:
                raise ValueError(f"context must be a positive int, got {context!r}")
            out_s = ffi.new("runc_state **")
            self._check(lib.runc_state_open(out_s, self._model, context, err), err)
            self._state = out_s[0]
            self._context = lib.runc_state_context(self._state)
            self._answer = ffi.new("char[]", lib.runc_answer_cap(self._state, self._tok)) if self._tok else None
        except BaseException:
            self.close()
            raise

    # ---- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Free the C memory. Idempotent; the Model is unusable afterwards."""
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.acquire()
        try:
            if getattr(self, "_batch", None) is not None:
                lib.runc_batch_close(self._batch)
                self._batch = None
            if getattr(self, "_state", None) is not None:
                lib.runc_state_close(self._state)
                self._state = None
            if getattr(self, "_tok", None) is not None:
                lib.runc_tokenizer_close(self._tok)
                self._tok = None
            if getattr(self, "_model", None) is not None:
                lib.runc_model_close(self._model)
                self._model = None
        finally:
            if lock is not None:
                lock.release()

    @property
    def closed(self) -> bool:
        return self._model is None

    def __enter__(self) -> "Model":
        self._live()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        if self.closed:
            return "<tinymath.runc.Model (closed)>"
        c = self._config
        return (f"<tinymath.runc.Model v{c['version']} dim={c['dim']} n_layers={c['n_layers']} "
                f"vocab_size={c['vocab_size']} max_seq_len={c['max_seq_len']} path={self.path!r}>")

    # ---- config -----------------------------------------------------------------

    @property
    def config(self) -> dict:
        """The header's fields (a copy): dim, hidden_dim, ..., rope_theta, norm_eps, version, group_size."""
        self._live()
        return dict(self._config)

    def _cfg(name: str, doc: str) -> property:  # noqa: N805 - a property factory used in the class body
        def get(self: "Model"):
            self._live()
            return self._config[name]
        return property(get, doc=doc)

    dim = _cfg("dim", "model width")
    hidden_dim = _cfg("hidden_dim", "feed-forward width")
    n_layers = _cfg("n_layers", "transformer blocks")
    n_heads = _cfg("n_heads", "query heads")
    n_kv_heads = _cfg("n_kv_heads", "key/value heads")
    head_size = _cfg("head_size", "dim / n_heads")
    vocab_size = _cfg("vocab_size", "vocabulary size")
    max_seq_len = _cfg("max_seq_len", "the model's context length")
    version = _cfg("version", "file format version: 0, 1 (fp32) or 2 (int8)")
    group_size = _cfg("group_size", "Q8_0 group size (version 2), else 0")
    shared_classifier = _cfg("shared_classifier", "True when the classifier is the token embedding")
    rope_theta = _cfg("rope_theta", "RoPE base")
    norm_eps = _cfg("norm_eps", "RMSNorm epsilon")
    del _cfg

    @property
    def quantized(self) -> bool:
        return self.version == 2

    @property
    def context(self) -> int:
        """Positions one sequence may use (prompt and answer together)."""
        self._live()
        return self._context

    @property
    def has_tokenizer(self) -> bool:
        return self._tok is not None

    @property
    def threads(self) -> int:
        """Worker threads of the batch engine (the count asked for; 0 = one per CPU core)."""
        return self._threads

    def batch_info(self) -> dict:
        """The batch engine's setup (opening it if need be): kernels (e.g. "avx2"), threads, slots
        (sequences in flight per thread), context, bytes (packed weights and arena), and tokens run by
        the last solve call (prompt and answer tokens)."""
        with self._lock:
            b = self._open_batch()
            lib, ffi = self._lib, self._ffi
            return {"kernels": ffi.string(lib.runc_batch_kernels(b)).decode(), "threads": lib.runc_batch_threads(b),
                    "slots": lib.runc_batch_slots(b), "context": lib.runc_batch_context(b),
                    "bytes": int(lib.runc_batch_bytes(b)), "last_tokens": getattr(self, "_last_tokens", 0)}

    # ---- helpers ----------------------------------------------------------------

    @staticmethod
    def _check_threads(threads: Any) -> int:
        _, lib = _load_engine()
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise TypeError(f"threads must be an int, got {type(threads).__name__}")
        if not 0 <= threads <= lib.RUNC_BATCH_MAX_THREADS:
            raise ValueError(f"threads must be 0 (one per CPU core) or 1..{lib.RUNC_BATCH_MAX_THREADS}, "
                             f"got {threads}")
        return threads

    def _open_batch(self):
        """The batch engine, opened on first use (under self._lock)."""
        self._need_tokenizer()
        if self._batch is None:
            ffi, lib = self._ffi, self._lib
            opt = ffi.new("runc_batch_options *")
            opt.threads = self._threads
            opt.context = self._context
            out = ffi.new("runc_batch **")
            err = ffi.new("runc_error *")
            self._check(lib.runc_batch_open(out, self._model, self._tok, opt, err), err)
            self._batch = out[0]
        return self._batch

    def _check(self, rc: int, err: Any) -> None:
        if rc != 0:
            ffi, lib = self._ffi, self._lib
            message = ffi.string(err.message).decode("utf-8", errors="replace") or "error"
            status = ffi.string(lib.runc_status_name(rc)).decode()
            raise RuncError(message, code=rc, status=status)

    def _live(self) -> None:
        if self._model is None:
            raise RuncError("the model is closed")

    def _need_tokenizer(self) -> None:
        self._live()
        if self._tok is None:
            raise RuncError("this Model has no tokenizer: pass tokenizer=path/to/tokenizer.bin")

    @staticmethod
    def _text(prompt: Any, what: str = "prompt") -> bytes:
        if not isinstance(prompt, str):
            raise TypeError(f"{what} must be a str, got {type(prompt).__name__}")
        if "\x00" in prompt:
            raise ValueError(f"{what} contains a NUL character")
        return prompt.encode("utf-8")

    def _encode(self, text: bytes, bos: bool, eos: bool) -> list[int]:
        ffi, lib = self._ffi, self._lib
        cap = len(text) + 3
        ids = ffi.new("int[]", cap)
        n = ffi.new("int *")
        err = ffi.new("runc_error *")
        self._check(lib.runc_encode(self._tok, text, int(bos), int(eos), ids, cap, n, err), err)
        return list(ffi.unpack(ids, n[0]))

    def _token_ids(self, ids: Any) -> list[int]:
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise TypeError("token ids must be a 1-D integer array")
            ids = ids.tolist()
        try:
            raw = list(ids)
        except TypeError:
            raise TypeError("token ids must be a sequence of ints") from None
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in raw):
            raise TypeError("token ids must be ints")
        return [int(i) for i in raw]

    def _prompt_ids(self, prompt: Any) -> list[int]:
        """[BOS] + encode(prompt) for a str; the ids themselves for a sequence of ints."""
        if isinstance(prompt, str):
            self._need_tokenizer()
            return self._encode(self._text(prompt), True, False)
        if isinstance(prompt, (bytes, bytearray)):
            raise TypeError("prompt must be a str or a sequence of token ids, not bytes")
        return self._token_ids(prompt)

    # ---- tokenizer ----------------------------------------------------------------

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """llama2.c's encoding of text: [BOS] + dummy-prefix space + merged pieces (+ EOS)."""
        self._need_tokenizer()
        with self._lock:
            self._live()
            return self._encode(self._text(text, "text"), bos, eos)

    def decode(self, ids: Iterable[int], prev: int | None = None) -> str:
        """Text of token ids (BOS/EOS decode to nothing; byte pieces to their bytes). `prev` is the
        token before ids[0] (a leading space is dropped after BOS, as SentencePiece does)."""
        self._need_tokenizer()
        ids = self._token_ids(ids)
        ffi, lib = self._ffi, self._lib
        with self._lock:
            self._live()
            arr = ffi.new("int[]", ids) if ids else ffi.NULL
            cap = len(ids) * max(lib.runc_tokenizer_max_token_length(self._tok), 1) + 1
            buf = ffi.new("char[]", cap)
            n = ffi.new("size_t *")
            err = ffi.new("runc_error *")
            self._check(lib.runc_decode(self._tok, -1 if prev is None else int(prev), arr, len(ids), buf, cap, n,
                                        err), err)
            return ffi.unpack(buf, n[0]).decode("utf-8", errors="replace")

    # ---- forward ----------------------------------------------------------------

    def logits(self, prompt: str | Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits (positions x vocab_size, float32) at every position of the prompt:
        of [BOS] + encode(prompt) for a str, of the ids themselves otherwise."""
        ids = self._prompt_ids(prompt)
        if not ids:
            raise ValueError("logits: empty prompt")
        ffi, lib = self._ffi, self._lib
        with self._lock:
            self._live()
            if len(ids) > self._context:
                raise RuncError(f"prompt of {len(ids)} tokens exceeds the context of {self._context}",
                                code=lib.RUNC_E_CONTEXT, status="RUNC_E_CONTEXT")
            out = np.empty((len(ids), self._config["vocab_size"]), dtype=np.float32)
            err = ffi.new("runc_error *")
            self._check(lib.runc_forward_tokens(self._state, ffi.new("int[]", ids), len(ids), 0,
                                                ffi.from_buffer("float[]", out), err), err)
            return out

    # ---- generation ---------------------------------------------------------------

    def generate_tokens(self, prompt: str | Sequence[int], max_new: int | None = None, temperature: float = 1.0,
                        topp: float = 0.9, seed: int | None = None, stop: int | None = 2) -> Generation:
        """Sample a continuation of prompt ([BOS] + encode(prompt) for a str) until `stop` (EOS;
        None: never), max_new tokens, or the end of the context. temperature 0 is greedy."""
        ids = self._prompt_ids(prompt)
        if not ids:
            raise ValueError("generate: empty prompt")
        for name, value in (("temperature", temperature), ("topp", topp)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if max_new is not None and (isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 0):
            raise ValueError(f"max_new must be a non-negative int, got {max_new!r}")
        if seed is None:
            seed = secrets.randbits(64)
        elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        ffi, lib = self._ffi, self._lib
        with self._lock:
            self._live()
            room = max(self._context - len(ids), 0)
            max_new = room if max_new is None else min(max_new, room)
            err = ffi.new("runc_error *")
            smp = ffi.new("runc_sampler **")
            self._check(lib.runc_sampler_open(smp, self._config["vocab_size"], float(temperature), float(topp), seed,
                                              err), err)
            try:
                out = ffi.new("int[]", max(max_new, 1))
                lps = np.zeros(max(max_new, 1), dtype=np.float32)
                n = ffi.new("int *")
                self._check(lib.runc_generate(self._state, smp[0], ffi.new("int[]", ids), len(ids), max_new,
                                              -1 if stop is None else int(stop), out, ffi.from_buffer("float[]", lps),
                                              n, err), err)
            finally:
                lib.runc_sampler_close(smp[0])
            tokens = list(ffi.unpack(out, n[0]))
        text = self.decode(tokens, prev=ids[-1]) if self._tok is not None else ""
        return Generation(text=text, tokens=tokens, logprobs=lps[: len(tokens)].copy())

    def generate(self, prompt: str | Sequence[int], max_new: int | None = None, temperature: float = 1.0,
                 topp: float = 0.9, seed: int | None = None) -> str:
        """The text of a sampled continuation of prompt (see generate_tokens)."""
        self._need_tokenizer()
        return self.generate_tokens(prompt, max_new, temperature, topp, seed).text

    def logprobs(self, prompt: str | Sequence[int], max_new: int | None = None, temperature: float = 0.0,
                 topp: float = 0.9, seed: int | None = None) -> np.ndarray:
        """Log-probabilities of the generated tokens (greedy by default)."""
        return self.generate_tokens(prompt, max_new, temperature, topp, seed).logprobs

    @property
    def task(self) -> dict | None:
        """The task spec the model card beside the file records (what it was trained on), or None: a
        model from bytes, without a card, or whose card describes another file."""
        if not hasattr(self, "_task"):
            self._task = None
            if self.path is not None:
                from tinymath.export.card import ModelFiles

                try:
                    self._task = ModelFiles.open(self.path).task()
                except (ValueError, OSError):
                    pass
        return self._task

    def range_notes(self, prompts: Sequence[str]) -> list[str | None]:
        """For each typed problem (any spacing, with or without "="), a notice when an operand is one
        the model never trained on ("100 is outside the trained range 0-89", "91 is a held-out
        operand (never trained on)"), else None; all None when the card names no arithmetic task."""
        from tinymath.tasks import typed_prompt
        from tinymath.tasks.spec import TaskSpec, range_note

        spec = None
        if self.task is not None:
            try:
                spec = TaskSpec.from_dict(self.task)
            except (TypeError, ValueError):
                spec = None
        return [range_note(spec, typed_prompt(p)) if spec is not None else None for p in prompts]

    def solve(self, prompts: Sequence[str], confidence: bool = False, *, batch: bool = True,
              steps: bool = False, max_answer: int | None = None, typed: bool = False) -> list[str] | list[Answer]:
        """Answers to problems, greedily: [BOS] + encode("24 + 82 =") -> " 106.00" EOS -> "106.00".

        A model that shows its work writes steps, then '#', then the final answer ("76 * 56 =" ->
        "6*6=36 ... 3+1=4#4256.00"): solve returns the final answer ("4256.00"; the C library's
        runc_final_answer: the text after the last '#', or the whole of a direct answer), and with
        steps=True the whole answer. A direct model's answers are the same either way.

        max_answer: the most tokens an answer may generate (None: the C library's default,
        RUNC_DEFAULT_MAX_ANSWER = 512, far above any real task's answer; steps included); an
        answer that reaches it ends there, as one that reaches the end of the context.

        Runs the batch engine (`threads` worker threads, many problems in flight); its answers
        are identical to those of runc_solve one problem at a time, which batch=False runs (the
        reference path, much slower). With confidence=True, returns a list of Answer records
        (text, mean_logprob, min_logprob, n_tokens) instead of strings.

        typed=True: the prompts are what a person types, read by the rule of the calculators (`make
        calc`, `tinymath inspect calc`, the playground): spacing and a trailing "=" are normalised to
        the trained prompt form ("24+82" and "  24 +82=" are solved as "24 + 82 ="), and a problem
        with an operand the model never trained on (by its model card's task) is answered with a
        RangeWarning naming it (range_notes gives the notices as a list).

        Raises TypeError for a non-list or a non-str prompt, ValueError for an empty list or
        a NUL in a prompt, RuncError naming the first prompt that cannot be encoded or does
        not fit in the context (and for a closed model).
        """
        if isinstance(prompts, (str, bytes)):
            raise TypeError("solve takes a list of prompt strings; for one prompt use solve([prompt])")
        try:
            prompts = list(prompts)
        except TypeError:
            raise TypeError(f"solve takes a list of prompt strings, got {type(prompts).__name__}") from None
        if not prompts:
            raise ValueError("solve: empty list of prompts")
        if not isinstance(steps, bool):
            raise TypeError(f"solve: steps must be a bool, got {type(steps).__name__}")
        if max_answer is not None and (isinstance(max_answer, bool) or not isinstance(max_answer, int)):
            raise TypeError(f"solve: max_answer must be an int or None, got {type(max_answer).__name__}")
        if max_answer is not None and not 1 <= max_answer <= self._lib.RUNC_MAX_SEQ_LEN:
            raise ValueError(f"solve: max_answer must be in 1..{self._lib.RUNC_MAX_SEQ_LEN}, got {max_answer}")
        if not isinstance(typed, bool):
            raise TypeError(f"solve: typed must be a bool, got {type(typed).__name__}")
        if typed:
            from tinymath.tasks import typed_prompt
        encoded = []
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"solve: prompt {i} is a {type(p).__name__}, not a str")
            if typed:
                prompts[i] = p = typed_prompt(p)
            encoded.append(self._text(p, f"prompt {i}"))
        self._need_tokenizer()
        if typed:
            self._warn_range(prompts)
        if not batch:
            if confidence:
                raise ValueError("solve: confidence needs the batch engine (batch=True)")
            return self._solve_single(prompts, encoded, steps, max_answer or 0)
        out: list = []
        with self._lock:
            self._live()
            b = self._open_batch()
            err = self._ffi.new("runc_error *")
            self._check(self._lib.runc_batch_set_max_answer(b, max_answer or 0, err), err)
            self._last_tokens = 0
            cap = int(self._lib.runc_batch_answer_cap(b))
            chunk = max(1, min(_SOLVE_CHUNK, _SOLVE_CHUNK_BYTES // cap))
            for start in range(0, len(encoded), chunk):
                out += self._solve_chunk(b, prompts, encoded, start, chunk, confidence, steps)
                self._last_tokens += int(self._lib.runc_batch_tokens(b))
        return out

    def _warn_range(self, prompts: list[str]) -> None:
        notes = [(i, n) for i, n in enumerate(self.range_notes(prompts)) if n]
        if notes:
            shown = "; ".join(f"prompt {i} ({_quote(prompts[i])}): {n}" for i, n in notes[:3])
            more = f"; and {len(notes) - 3} more" if len(notes) > 3 else ""
            warnings.warn(f"{len(notes)} of {len(prompts)} problems have an operand the model never trained "
                          f"on, so their answers are not vouched for: {shown}{more}", RangeWarning, stacklevel=3)

    def _solve_chunk(self, b, prompts: list[str], encoded: list[bytes], start: int, size: int, confidence: bool,
                     steps: bool) -> list:
        ffi, lib = self._ffi, self._lib
        chunk = encoded[start:start + size]
        n = len(chunk)
        keep = [ffi.new("char[]", p) for p in chunk]
        ptrs = ffi.new("char *[]", keep)
        cap = int(lib.runc_batch_answer_cap(b))
        answers = ffi.new("char[]", n * cap)
        status = ffi.new("runc_error[]", n)  # each prompt's code and message
        err = ffi.new("runc_error *")
        if confidence:
            n_gen = np.zeros(n, dtype=np.int32)
            mean = np.zeros(n, dtype=np.float32)
            low = np.zeros(n, dtype=np.float32)
            rc = lib.runc_batch_solve(b, ptrs, n, answers, cap, ffi.from_buffer("int[]", n_gen),
                                      ffi.from_buffer("float[]", mean), ffi.from_buffer("float[]", low), status, err)
        else:
            rc = lib.runc_batch_solve(b, ptrs, n, answers, cap, ffi.NULL, ffi.NULL, ffi.NULL, status, err)
        if rc != 0:
            k = next((k for k in range(n) if status[k].code != 0), None)  # the first failing prompt
            if k is None:  # the call was refused as a whole (never for arguments made here)
                self._check(rc, err)
            i = start + k
            message = ffi.string(status[k].message).decode("utf-8", errors="replace")
            raise RuncError(f"prompt {i} ({_quote(prompts[i])}): {message}", code=status[k].code,
                            status=ffi.string(lib.runc_status_name(status[k].code)).decode())
        raw = ffi.buffer(answers)[:]
        texts = []
        for i in range(n):
            off = i * cap
            first = off if steps else off + int(lib.runc_final_answer(answers + off))
            texts.append(raw[first:raw.index(b"\0", off)].decode("utf-8", errors="replace"))
        if not confidence:
            return texts
        return [Answer(t, float(mean[i]), float(low[i]), int(n_gen[i])) for i, t in enumerate(texts)]

    def _solve_single(self, prompts: list[str], encoded: list[bytes], steps: bool, max_answer: int) -> list[str]:
        ffi, lib = self._ffi, self._lib
        answers = []
        with self._lock:
            self._live()
            err = ffi.new("runc_error *")
            self._check(lib.runc_state_set_max_answer(self._state, max_answer, err), err)
            cap = int(lib.runc_answer_cap(self._state, self._tok))
            if self._answer is None or len(self._answer) < cap:
                self._answer = ffi.new("char[]", cap)
            buf, cap = self._answer, len(self._answer)
            for i, p in enumerate(encoded):
                rc = lib.runc_solve(self._state, self._tok, p, buf, cap, ffi.NULL, err)
                if rc != 0:
                    try:
                        self._check(rc, err)
                    except RuncError as e:
                        raise RuncError(f"prompt {i} ({_quote(prompts[i])}): {e}", code=e.code,
                                        status=e.status) from None
                first = 0 if steps else int(lib.runc_final_answer(buf))
                answers.append(ffi.string(buf + first).decode("utf-8", errors="replace"))
        return answers
