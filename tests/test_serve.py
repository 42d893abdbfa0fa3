"""tinymath serve: the JSON API and the page, driven by a real headless Chromium.

Two tiny models of different sizes are trained here and laid out as a study
folder (runs/*/model.bin and accuracy_vs_params.png); the server runs in a
subprocess on a loopback port. The API must answer what the engine answers,
score with the task's scorer, refuse bad input with a clear 4xx and keep
serving, and serve no file it does not mean to. The browser test types a
problem, clicks, reads every model's answer from the page and checks it
against the engine; under CI=true a missing browser is a failure, not a skip.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from tinymath.serve.app import MAX_BODY_BYTES, MAX_PROMPT_CHARS, MAX_PROMPTS  # noqa: E402

DIGITS = {"task": "arith", "ops": "+", "lo": 0, "hi": 9, "holdout": None}
CI = os.environ.get("CI", "").lower() == "true"


def _train(out: Path, params: int, steps: int, task: dict) -> Path:
    from tinymath.export import export_checkpoint
    from tinymath.train.config import TrainConfig
    from tinymath.train.train import train

    cfg = TrainConfig.from_dict({"out_dir": str(out), "task": task, "model": {"params": params},
                                 "max_steps": steps, "eval_every": steps, "progress": False})
    train(cfg, overwrite=True)
    export_checkpoint(out / "best.pt", "v1", out / "model.bin")
    return out / "model.bin"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A study folder as `tinymath sweep` leaves it: runs/NAME/model.bin (+ card) and the accuracy plot."""
    root = tmp_path_factory.mktemp("study")
    # the larger one has a held-out range, so both random buttons have problems
    _train(root / "runs" / "big", 8000, 150, {**DIGITS, "lo": 0, "hi": 7, "holdout": [8, 9]})
    _train(root / "runs" / "small", 2000, 150, DIGITS)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([2000, 8000], [10, 60], marker="o")
    fig.savefig(root / "accuracy_vs_params.png")
    plt.close(fig)
    return root


class Server:
    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "tinymath.cli", "serve", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                self.url = f"http://127.0.0.1:{self.port}"
                return
        self.proc.kill()
        raise RuntimeError("the server did not start:\n" + "".join(lines) + (self.proc.stdout.read() or ""))

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            if isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, r.getheader("content-type") or "", data
        finally:
            conn.close()

    def json(self, method: str, path: str, payload=None, raw: bytes | str | None = None, headers=None):
        body = raw if raw is not None else (None if payload is None else json.dumps(payload))
        status, ctype, data = self.request(method, path, body, headers)
        return status, (json.loads(data) if "json" in ctype else data)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def server(study):
    s = Server([str(study)])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def engines(study):
    from tinymath.inspect.common import open_model

    models = {p.parent.name: open_model(p)[0] for p in sorted((study / "runs").glob("*/model.bin"))}
    yield models
    for m in models.values():
        m.close()


# ---- the API ------------------------------------------------------------------------------------------

def test_models_listed_by_size(server, study):
    status, d = server.json("GET", "/models")
    assert status == 200
    names = [m["name"] for m in d["models"]]
    assert names == ["small", "big"]  # smallest first
    params = [m["params"] for m in d["models"]]
    assert params == sorted(params) and params[0] < params[1]
    for m in d["models"]:
        card = json.loads((study / "runs" / m["name"] / "model.json").read_text())
        assert m["card"]["sha256"] == card["sha256"] and m["params"] == card["n_params"]
    assert d["study_plot"] == "/study.png" and d["limits"]["max_prompts"] == MAX_PROMPTS


def test_solve_matches_engine_and_scorer(server, engines):
    from tinymath.inspect.confidence import solve_with_confidence
    from tinymath.tasks import AnswerFormat, Problem, score

    prompts = [f"{a} + {b}" for a in range(10) for b in range(10)] * 10  # 1000 prompts, " =" added
    status, d = server.json("POST", "/solve", {"prompts": prompts})
    assert status == 200, d
    full = [p + " =" for p in prompts]
    assert d["prompts"] == full
    fmt = AnswerFormat("classic", 9)
    for row in d["models"]:
        answers, confs = solve_with_confidence(engines[row["name"]], full[:100])
        assert row["answers"][:100] == answers == engines[row["name"]].solve(full[:100])
        assert all(abs(a - b) < 1e-5 for a, b in zip(row["confidences"][:100], confs))
        assert row["answers"][100:] == row["answers"][:100] * 9
        assert row["score"]["n"] == 1000 and abs(row["score"]["exact"] - sum(row["right"]) / 1000) < 1e-12
        for p, a, e, ok in zip(full[:100], row["answers"], row["expected"], row["right"]):
            a_, b_ = int(p.split()[0]), int(p.split()[2])
            assert e == f"{a_ + b_:.2f}"
            assert ok == (score([Problem(p, e)], [a], fmt).groups["all"].exact == 1)
    # what people type is put in the prompt form (the same rule as the calculators')
    status, d = server.json("POST", "/solve", ["3+4", "  3   +   4", "3+4="])
    assert status == 200 and d["prompts"] == ["3 + 4 ="] * 3
    # a bare list works too, and detail gives per-token top-k that sums below 1
    status, d = server.json("POST", "/solve", ["3 + 4 ="])
    assert status == 200 and "tokens" not in d["models"][0]
    status, d = server.json("POST", "/solve", {"prompts": ["3 + 4 ="], "detail": True, "top_k": 3})
    steps = d["models"][0]["tokens"][0]
    assert steps and all(len(s["top"]) == 3 and sum(c["prob"] for c in s["top"]) <= 1 + 1e-9 for s in steps)


def test_random_problem(server):
    for region, split in (("in", "test"), ("holdout", "holdout")):
        status, d = server.json("GET", f"/random?region={region}")
        assert status == 200 and d["split"] == split and d["model"] == "big"
        assert d["full_prompt"] == d["prompt"] + " ="
        if region == "holdout":
            assert any(int(x) >= 8 for x in d["prompt"].split()[::2])
    status, d = server.json("GET", "/random?region=elsewhere")
    assert status == 422 and "region" in d["error"]


@pytest.mark.parametrize("payload, raw, status, words", [
    (None, "this is not json", 400, "not JSON"),
    (None, "", 400, "empty request body"),
    (None, b"\xff\xfe", 400, "not JSON"),
    ({"prompts": [""]}, None, 422, "empty"),
    ({"prompts": ["   "]}, None, 422, "empty"),
    ({"prompts": ["1" * (MAX_PROMPT_CHARS + 1)]}, None, 422, f"at most {MAX_PROMPT_CHARS}"),
    ({"prompts": ["3 x 4"]}, None, 422, "'x' is not in the vocabulary"),
    ({"prompts": ["3 + 4\n5"]}, None, 422, "control character"),
    ({"prompts": ["1 + 1"] * (MAX_PROMPTS + 1)}, None, 413, f"at most {MAX_PROMPTS}"),
    ({"prompts": []}, None, 422, "empty"),
    ({"prompts": "3 + 4"}, None, 422, "must be a list"),
    ({"prompts": [3]}, None, 422, "not a string"),
    ({"prompts": ["1 + 1"], "colour": "red"}, None, 422, "unknown fields"),
    ({"prompts": ["1 + 1"], "top_k": 99}, None, 422, "top_k"),
    ({"prompts": ["1 + 1"] * 20, "detail": True}, None, 422, "at most 16"),
    ("3 + 4", None, 422, "JSON list of prompts"),
    (None, "[" * 5000 + "]" * 5000, 400, "nested too deeply"),
    (None, '{"prompts": ["1 + 1"], "top_k": ' + "7" * 100_000 + "}", 400, "number too long"),
])
def test_bad_input_is_a_clear_4xx(server, payload, raw, status, words):
    got, d = server.json("POST", "/solve", payload, raw=raw)
    assert got == status, d
    assert words in d["error"]
    assert server.json("GET", "/models")[0] == 200  # still serving


def test_oversized_body(server):
    big = b'{"prompts": ["' + b"1" * (MAX_BODY_BYTES + 10) + b'"]}'
    got, d = server.json("POST", "/solve", raw=big)
    assert got == 413 and "over the limit" in d["error"]
    assert server.json("GET", "/models")[0] == 200


def test_serves_only_what_it_means_to(server, study):
    for path in ("/../pyproject.toml", "/page.html", "/tinymath/serve/page.html", "/static/page.html",
                 "/runs/big/model.bin", "/accuracy_vs_params.png", "/etc/passwd", "/%2e%2e/pyproject.toml",
                 "/models/../../pyproject.toml"):
        status, _, data = server.request("GET", path)
        assert status == 404, path
        assert b"tool.setuptools" not in data and not data.startswith(b"ak42")
    assert server.request("GET", "/solve")[0] == 405
    assert server.request("DELETE", "/models")[0] == 405
    status, ctype, data = server.request("GET", "/study.png")
    assert status == 200 and ctype == "image/png" and data == (study / "accuracy_vs_params.png").read_bytes()
    status, ctype, page = server.request("GET", "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b"http://" not in page and b"https://" not in page  # nothing fetched from elsewhere
    # a page asked for under another host name (DNS rebinding) is refused
    assert server.request("GET", "/models", headers={"Host": "evil.example"})[0] == 400


def test_no_tracebacks_and_no_cross_origin_posts(server):
    """Another site's page cannot make the playground compute (a text/plain POST needs no preflight);
    the page itself, and clients that send no Origin, can."""
    body = json.dumps({"prompts": ["1 + 1"]})
    own = f"http://127.0.0.1:{server.port}"
    got, d = server.json("POST", "/solve", raw=body, headers={"Origin": "http://evil.example",
                                                               "Content-Type": "text/plain"})
    assert got == 403 and "cross-origin" in d["error"]
    got, _ = server.json("POST", "/solve", raw=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert got == 403
    got, d = server.json("POST", "/solve", raw=body, headers={"Origin": own})
    assert got == 200 and d["models"]


def test_host_check_follows_the_binding():
    """Every binding checks Host: a loopback address other than 127.0.0.1 included."""
    from tinymath.serve.app import allowed_hosts

    hosts = allowed_hosts("127.0.0.2")
    assert "127.0.0.2" in hosts and "localhost" in hosts and "evil.example" not in hosts
    assert "::1" in allowed_hosts("::1") and "[::1]" in allowed_hosts("::1")
    assert "my.box" in allowed_hosts("0.0.0.0", ["my.box"]) and "evil.example" not in allowed_hosts("0.0.0.0")


def test_bad_model_path_fails_cleanly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tinymath.cli", "serve", str(tmp_path / "nothing"), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no model file or folder" in r.stderr


# ---- the page in a real browser ---------------------------------------------------------------------------

def _browser_or_fail():
    """A Selenium Chrome driver on Debian's Chromium; skip without it, fail under CI=true."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    missing = [n for n, ok in (("chromium", chromium), ("chromedriver", driver), ("selenium", webdriver)) if not ok]
    if missing:
        msg = f"the browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if CI:
            pytest.fail(msg)
        pytest.skip(msg)
    profile = tempfile.mkdtemp(prefix="tinymath-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver)), profile


def test_page_in_headless_chromium(server, engines, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, profile = _browser_or_fail()
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(server.url + "/")
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        cards = browser.find_elements(By.CSS_SELECTOR, ".model")
        assert [c.get_attribute("data-model") for c in cards] == ["small", "big"]
        assert [c.find_element(By.CSS_SELECTOR, ".params").text for c in cards] == [
            f"{int(c.get_attribute('data-params')):,} params" for c in cards]
        assert browser.find_element(By.ID, "study").is_displayed()
        for problem in ("3 + 4", "9 + 8 ="):
            box = browser.find_element(By.ID, "prompt")
            box.clear()
            box.send_keys(problem)
            browser.find_element(By.ID, "solve").click()
            full = problem if problem.endswith("=") else problem + " ="
            wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-solved") == full)
            for card in browser.find_elements(By.CSS_SELECTOR, ".model"):
                engine = engines[card.get_attribute("data-model")]
                expected = engine.solve([full])[0]
                assert card.find_element(By.CSS_SELECTOR, ".answer").text == expected
                a, b = int(full.split()[0]), int(full.split()[2])
                verdict = card.find_element(By.CSS_SELECTOR, ".verdict").text
                assert verdict.startswith("\u2713 right" if expected == f"{a + b:.2f}" else "\u2717 wrong")
                assert re.fullmatch(r"\d+\.\d%", card.find_element(By.CSS_SELECTOR, ".conf-value").text)
                steps = card.find_elements(By.CSS_SELECTOR, ".tokens .step")
                assert len(steps) == len(engine.generate_tokens(full, temperature=0.0).tokens) + 1
        # bad input: the page shows the server's message and keeps working
        box = browser.find_element(By.ID, "prompt")
        box.clear()
        box.send_keys("3 x 4")
        browser.find_element(By.ID, "solve").click()
        wait.until(lambda b: "vocabulary" in b.find_element(By.ID, "status").text)
        assert "error" in browser.find_element(By.ID, "status").get_attribute("class")
        # the random buttons fill the box with a problem and ask it. The marker is cleared first: the
        # held-out pool (an operand of 8 or 9) holds "9 + 8", asked above, so 1 click in 36 repeats it
        browser.execute_script("document.body.dataset.solved = '';")
        browser.find_element(By.ID, "random-holdout").click()
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-solved"))
        solved = browser.find_element(By.TAG_NAME, "body").get_attribute("data-solved")
        assert solved == browser.find_element(By.ID, "prompt").get_attribute("value") + " ="
        assert {int(solved.split()[0]), int(solved.split()[2])} & {8, 9}  # a held-out operand
        assert browser.get_screenshot_as_png()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_request_checks_run_off_the_event_loop(study):
    """Parsing and checking a request (up to 10,000 prompts) runs in a worker thread, not on the
    event loop, so other requests are not held up by it (issue 25, item 10)."""
    import asyncio
    import threading

    from tinymath.serve.app import Service, create_app, find_models, load_models

    files, plot = find_models([str(study)])
    service = Service(load_models(files), plot)
    seen: dict[str, int] = {}
    real = service.parse_prompts

    def spy(body):
        seen["parse"] = threading.get_ident()
        return real(body)

    service.parse_prompts = spy
    app = create_app(service)
    body = json.dumps({"prompts": ["1 + 1"]}).encode()

    async def call() -> list[dict]:
        seen["loop"] = threading.get_ident()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/solve", "raw_path": b"/solve", "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())],
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict] = []

        async def receive() -> dict:
            return pending.pop(0) if pending else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent

    try:
        sent = asyncio.run(call())
    finally:
        service.close()
    assert sent[0]["status"] == 200, sent
    assert seen["parse"] != seen["loop"]
