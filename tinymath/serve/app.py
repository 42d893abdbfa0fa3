"""The playground's web app (Starlette): one page and a small JSON API over the C engine.

Routes (nothing else is served; there is no static-file directory):
    GET  /            the page (page.html, inline CSS and JS, no assets from anywhere)
    GET  /models      the loaded models, smallest first, with their cards
    POST /solve       {"prompts": [...], "detail": false, "top_k": 5} (or a bare JSON list of prompts)
                      -> each model's answers, confidences and right/wrong by its task's scorer
    GET  /random      ?region=in|holdout[&model=NAME]: a problem from the task's test or holdout split
    GET  /study.png   the study's accuracy_vs_params.png (only when a study folder was given)

Limits, each answered with a 4xx and a JSON {"error": message}: a body over
MAX_BODY_BYTES (413), a body that is not JSON (400), a wrong shape (422), more
than MAX_PROMPTS prompts (413), an empty prompt or one longer than
MAX_PROMPT_CHARS characters (422), a character outside a model's vocabulary
(422), `detail` for more than MAX_DETAIL_PROMPTS prompts (422). A prompt too
long for one model's context is that model's per-answer error, not the request's.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import threading
import traceback
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tinymath.tasks import typed_prompt

MAX_PROMPTS = 10_000          # prompts in one POST /solve
MAX_PROMPT_CHARS = 64         # characters in one prompt
MAX_BODY_BYTES = 1 << 20      # request body
MAX_DETAIL_PROMPTS = 16       # prompts for which per-token top-k is returned
MAX_TOP_K = 10
PAGE = Path(__file__).with_name("page.html")


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# ---- models ----------------------------------------------------------------------------------------------

@dataclass
class Loaded:
    name: str
    path: Path
    card: dict
    model: Any                 # tinymath.runc.Model
    tok: Any                   # tinymath.tokenizer.Tokenizer (the same tokenizer.bin, for checks)
    spec: Any                  # TaskSpec or None
    params: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def task_key(self) -> str | None:
        if self.spec is None:
            return None
        if not hasattr(self, "_key"):
            self._key = json.dumps(self.spec.to_dict(), sort_keys=True)
        return self._key

    def info(self) -> dict:
        from tinymath.inspect.transfer import task_label

        return {"name": self.name, "file": str(self.path), "params": self.params, "context": self.model.context,
                "vocab_size": self.model.vocab_size, "quantized": self.model.quantized,
                "task": self.spec.to_dict() if self.spec else None,
                "task_label": task_label(self.spec) if self.spec else None, "card": self.card}


def _params(card: dict, model) -> int:
    if isinstance(card.get("n_params"), int):
        return card["n_params"]
    c = model.config
    d, h, kv = c["dim"], c["hidden_dim"], c["n_kv_heads"] * c["head_size"]
    per = 2 * d + 2 * d * d + 2 * d * kv + 3 * d * h
    return c["vocab_size"] * d * (1 if c["shared_classifier"] else 2) + c["n_layers"] * per + d


def find_models(targets: Sequence[str | Path]) -> tuple[list[Path], Path | None]:
    """(model files, study plot or None) from files, folders of .bin files, or study folders."""
    files: list[Path] = []
    plot = None
    if not targets:
        targets = ["models"]
    for t in targets:
        p = Path(t)
        if p.is_file():
            files.append(p)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"no model file or folder at {p}")
        if (p / "runs").is_dir():  # a study: every run's fp32 model
            found = sorted((p / "runs").glob("*/model.bin"))
            if (p / "accuracy_vs_params.png").is_file():
                plot = p / "accuracy_vs_params.png"
        else:
            found = sorted(x for x in p.glob("*.bin") if x.name != "tokenizer.bin")
            if not found:
                found = sorted(p.glob("*/model.bin"))
        if not found:
            raise FileNotFoundError(f"{p}: no model files (.bin) in it")
        files += found
    return files, plot


def load_models(files: Sequence[Path], threads: int | None = None) -> list[Loaded]:
    from tinymath.inspect.common import model_name, open_model, task_of
    from tinymath.tokenizer import Tokenizer

    out: list[Loaded] = []
    names: set[str] = set()
    for f in files:
        model, card, tok_path = open_model(f, **({"threads": threads} if threads else {}))
        try:
            spec = task_of(card)
        except ValueError:
            spec = None
        name = model_name(f)
        if name in names:
            name = f"{f.parent.name}/{f.stem}"
        names.add(name)
        out.append(Loaded(name, Path(f), card, model, Tokenizer.load(tok_path), spec, _params(card, model)))
    out.sort(key=lambda m: (m.params, m.name))
    return out


# ---- problems: expected answers and random ones --------------------------------------------------------------

_ARITH = re.compile(r"(\d+) ([-+*/]) (\d+) =")
_MOD = re.compile(r"(\d+) ([-+*]) (\d+) mod (\d+) =")


class Tasks:
    """Expected answers for typed prompts, and random problems, per task spec (splits built once, lazily)."""

    def __init__(self) -> None:
        self._splits: dict[str, dict] = {}
        self._index: dict[str, dict] = {}
        self._lock = threading.Lock()

    def splits(self, spec, key: str | None = None) -> dict:
        from tinymath.tasks import build_splits

        key = key or json.dumps(spec.to_dict(), sort_keys=True)
        with self._lock:
            if key not in self._splits:
                s = build_splits(spec)
                self._splits[key] = s
                self._index[key] = {p.prompt: p for name in ("train", "val", "test", "holdout") for p in s[name]}
            return self._splits[key]

    def problem(self, spec, prompt: str, key: str | None = None):
        """The task's Problem for a prompt (with its answer and region), or None when it has none."""
        from tinymath.tasks import Problem

        key = key or json.dumps(spec.to_dict(), sort_keys=True)
        if key not in self._index:
            self.splits(spec, key)
        p = self._index[key].get(prompt)
        if p is not None:
            return p
        if spec.task in ("arith", "count"):  # outside the generated space: compute it
            m = _ARITH.fullmatch(prompt)
            if not m:
                return None
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            if op == "/" and b == 0:
                return None
            fmt = spec.answer_format()
            held = spec.holdout is not None and any(spec.holdout[0] <= x <= spec.holdout[1] for x in (a, b))
            return Problem(prompt, fmt.answer(a, op, b), op, "holdout" if held else "outside")
        if spec.task == "mod":
            m = _MOD.fullmatch(prompt)
            if not m or int(m.group(4)) != spec.modulus:
                return None
            a, op, b, mod = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
            r = {"+": a + b, "-": a - b, "*": a * b}[op] % mod
            return Problem(prompt, spec.answer_format().numbers([r], op), op, "outside")
        return None


# ---- the service: checks, solving -----------------------------------------------------------------------------

class Service:
    def __init__(self, models: list[Loaded], study_plot: Path | None = None):
        if not models:
            raise ValueError("no models to serve")
        self.models = models
        self.study_plot = study_plot
        self.tasks = Tasks()

    def close(self) -> None:
        for m in self.models:
            m.model.close()

    # -- input checks --
    def parse_prompts(self, body: Any) -> tuple[list[str], bool, int]:
        if isinstance(body, list):
            body = {"prompts": body}
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON list of prompts or an object {\"prompts\": [...]}")
        unknown = set(body) - {"prompts", "detail", "top_k"}
        if unknown:
            raise BadRequest(f"unknown fields {sorted(unknown)} (known: prompts, detail, top_k)")
        prompts = body.get("prompts")
        if not isinstance(prompts, list):
            raise BadRequest("\"prompts\" must be a list of strings")
        if not prompts:
            raise BadRequest("\"prompts\" is empty: send at least one problem")
        if len(prompts) > MAX_PROMPTS:
            raise BadRequest(f"too many prompts: {len(prompts)} (at most {MAX_PROMPTS} per request)", 413)
        detail = body.get("detail", False)
        if not isinstance(detail, bool):
            raise BadRequest("\"detail\" must be true or false")
        top_k = body.get("top_k", 5)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise BadRequest(f"\"top_k\" must be an integer from 1 to {MAX_TOP_K}")
        if detail and len(prompts) > MAX_DETAIL_PROMPTS:
            raise BadRequest(f"\"detail\" (per-token top-k) is for at most {MAX_DETAIL_PROMPTS} prompts, "
                             f"got {len(prompts)}")
        out = []
        for i, p in enumerate(prompts):
            where = f"prompt {i}" if len(prompts) > 1 else "the prompt"
            if not isinstance(p, str):
                raise BadRequest(f"{where} is a {type(p).__name__}, not a string")
            if not p.strip():
                raise BadRequest(f"{where} is empty: type a problem such as 36 / 3")
            if len(p) > MAX_PROMPT_CHARS:
                raise BadRequest(f"{where} is {len(p)} characters long (at most {MAX_PROMPT_CHARS})")
            bad = [c for c in p if not c.isprintable() or c in "\r\n\t\x00"]
            if bad:
                raise BadRequest(f"{where} contains the control character {bad[0]!r}")
            q = typed_prompt(p)
            for m in self.models:
                try:
                    m.tok.encode(q)
                except ValueError:
                    missing = sorted({c for c in q if not _writes(m.tok, c)})
                    chars = ", ".join(repr(c) for c in missing) or "a character"
                    raise BadRequest(f"{where}: {chars} {'is' if len(missing) == 1 else 'are'} not in the "
                                     f"vocabulary of model {m.name} (it knows {_alphabet(m.tok)})") from None
            out.append(q)
        return out, detail, top_k

    # -- answers --
    def solve(self, prompts: list[str], detail: bool = False, top_k: int = 5) -> dict:
        from tinymath.inspect.confidence import solve_with_confidence
        from tinymath.inspect.tokens import trace
        from tinymath.tasks import score

        t0 = time.perf_counter()
        results = []
        for m in self.models:
            fits = [len(m.tok.encode(p)) + 1 < m.model.context for p in prompts]
            idx = [i for i, ok in enumerate(fits) if ok]
            answers: list[str | None] = [None] * len(prompts)
            confs: list[float | None] = [None] * len(prompts)
            with m.lock:
                if idx:
                    a, c = solve_with_confidence(m.model, [prompts[i] for i in idx])
                    for i, ans, conf in zip(idx, a, c):
                        answers[i], confs[i] = ans, conf
                steps = None
                if detail:
                    steps = [trace(m.model, p, k=top_k).to_dict()["steps"] if ok else None
                             for p, ok in zip(prompts, fits)]
            probs = [self.tasks.problem(m.spec, p, m.task_key) if m.spec else None for p in prompts]
            # right: the task scorer's exact match (a format that shows its work: the final answer)
            fmt = m.spec.answer_format() if m.spec else None
            right = [None if pr is None or a is None else fmt.is_right(pr.answer, a) for pr, a in zip(probs, answers)]
            judged = [i for i, r in enumerate(right) if r is not None]
            summary = None
            if judged:
                rep = score([probs[i] for i in judged], [answers[i] for i in judged], m.spec.answer_format())
                summary = {k: v for k, v in rep.to_dict()["groups"]["all"].items()
                           if k in ("n", "exact", "numeric", "digits")}
            row = {"name": m.name, "params": m.params, "answers": answers, "score": summary,
                   "confidences": [None if c is None or not math.isfinite(c) else c for c in confs],
                   "right": right, "expected": [pr.answer if pr else None for pr in probs],
                   "regions": [pr.region if pr else None for pr in probs],
                   "errors": [None if ok else f"the prompt does not fit this model's context "
                              f"({m.model.context} tokens with the answer)" for ok in fits]}
            if steps is not None:
                row["tokens"] = steps
            results.append(row)
        return {"prompts": prompts, "models": results, "seconds": round(time.perf_counter() - t0, 4),
                "confidence": "exp(mean log-probability of the answer's tokens and its closing EOS)"}

    def random_problem(self, region: str, name: str | None) -> dict:
        import random

        if region not in ("in", "holdout"):
            raise BadRequest("region must be in or holdout")
        models = [m for m in self.models if m.spec is not None and (name is None or m.name == name)]
        if name is not None and not models:
            raise BadRequest(f"no model named {name!r} with a task", 404)
        if not models:
            raise BadRequest("no loaded model names its task", 404)
        # the largest model's task: the page's problems are its problems
        m = models[-1]
        split = "test" if region == "in" else "holdout"
        pool = self.tasks.splits(m.spec, m.task_key)[split]
        if not pool:
            raise BadRequest(f"the task of {m.name} has no {split} problems"
                             + (" (it holds no operands out)" if split == "holdout" else ""), 404)
        p = random.choice(pool)
        shown = p.prompt[:-2] if p.prompt.endswith(" =") else p.prompt
        return {"prompt": shown, "full_prompt": p.prompt, "answer": p.answer, "region": p.region, "split": split,
                "model": m.name}


def _writes(tok, ch: str) -> bool:
    try:
        tok.encode(ch, dummy_prefix=False)
        return True
    except ValueError:
        return False


def _alphabet(tok) -> str:
    chars = sorted({p.decode("utf-8", "replace") for p in tok.pieces[3:] if len(p.decode("utf-8", "replace")) == 1})
    return "".join(chars).replace(" ", "space ") if len(chars) < 60 else f"{len(chars)} characters"


# ---- the Starlette app --------------------------------------------------------------------------------------------

def parse_json(raw: bytes) -> Any:
    """A request body as JSON; BadRequest (400) for anything that is not, nested too deep or with
    numbers too long included (Python refuses both with errors of its own, not JSONDecodeError)."""
    if not raw.strip():
        raise BadRequest("empty request body: send JSON such as {\"prompts\": [\"36 / 3\"]}", 400)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"the request body is not JSON ({e})", 400) from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply", 400) from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise BadRequest(f"the request body has a number too long to read ({str(e)[:80]})", 400) from None


def cross_origin(request) -> None:
    """Refuse a request another site's page sends: a browser names that page in Origin (and says
    cross-site in Sec-Fetch-Site); a simple POST (text/plain) needs no preflight, so the server
    must check it. Clients that send no Origin (curl, scripts) are not browsers' pages."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if (origin is not None and origin != own) or request.headers.get("sec-fetch-site") == "cross-site":
        raise BadRequest(f"cross-origin request from {origin or 'another site'} refused", 403)


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def allowed_hosts(bind: str, extra: Sequence[str] = ()) -> list[str]:
    """Host header values to accept for a server bound to `bind`: the loopback names, the bound
    address itself, and for a wildcard bind this machine's names; plus any the user adds. Every
    other Host is refused, whatever the binding (a DNS-rebinding page sends its own name)."""
    import socket

    names = set(LOOPBACK_NAMES) | set(extra)
    if bind in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
        names |= {host, socket.getfqdn()}
        with contextlib.suppress(OSError):
            names |= {info[4][0] for info in socket.getaddrinfo(host, None)}
    else:
        names.add(bind)
    return sorted({f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names} | names)


def create_app(service: Service, allowed_hosts: Sequence[str] = LOOPBACK_NAMES):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    page = PAGE.read_text(encoding="utf-8")
    headers = {
        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                   "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                   "frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers=headers)

    async def models(request: Request) -> Response:
        return JSONResponse({"models": [m.info() for m in service.models],
                             "study_plot": "/study.png" if service.study_plot else None,
                             "limits": {"max_prompts": MAX_PROMPTS, "max_prompt_chars": MAX_PROMPT_CHARS,
                                        "max_body_bytes": MAX_BODY_BYTES, "max_detail_prompts": MAX_DETAIL_PROMPTS,
                                        "max_top_k": MAX_TOP_K}}, headers=headers)

    async def read_json(request: Request) -> bytes:
        """The request body, refused early when it is over the size limit."""
        length = request.headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise BadRequest("bad Content-Length", 400) from None
            if n > MAX_BODY_BYTES:
                raise BadRequest(f"request body of {n} bytes is over the limit of {MAX_BODY_BYTES}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BadRequest(f"request body is over the limit of {MAX_BODY_BYTES} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    def answer(raw: bytes) -> dict:
        """Parse, check and solve one request body (off the event loop: a large body takes time)."""
        return service.solve(*service.parse_prompts(parse_json(raw)))

    async def solve(request: Request) -> Response:
        try:
            cross_origin(request)
            raw = await read_json(request)
            result = await run_in_threadpool(answer, raw)
        except BadRequest as e:
            return error(str(e), e.status)
        return JSONResponse(result, headers=headers)

    async def random_problem(request: Request) -> Response:
        try:
            result = await run_in_threadpool(service.random_problem, request.query_params.get("region", "in"),
                                             request.query_params.get("model"))
        except BadRequest as e:
            return error(str(e), e.status)
        return JSONResponse(result, headers=headers)

    async def study_png(request: Request) -> Response:
        if service.study_plot is None or not service.study_plot.is_file():
            return error("no study plot: the server was not given a study folder", 404)
        return FileResponse(service.study_plot, media_type="image/png", headers=headers)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        text = {404: "not found", 405: "method not allowed"}.get(status, getattr(exc, "detail", "error"))
        return error(f"{text}: {request.method} {request.url.path}", status)

    async def server_error(request: Request, exc: Exception) -> Response:
        # the details go to the server's terminal, never into a response
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        return error("internal error (the server's log has the details)", 500)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/solve", solve, methods=["POST"]),
        Route("/random", random_problem, methods=["GET"]),
        Route("/study.png", study_png, methods=["GET"]),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: not_found, Exception: server_error}, lifespan=lifespan)
