"""`make bench`: the C engine against PyTorch on three model sizes, in one run (about 3-5 minutes).

For random models of the classic task's shapes (ModelConfig.for_params: vocabulary 20, context 24;
about 10K, 100K and 1M parameters), every engine answers the same prompts "AA op BB =" (11 tokens
with BOS) with 8 greedy tokens each (the EOS row of the embedding is zeroed, so no answer stops
early: every engine runs exactly the same tokens), and the table gives problems/s and tokens/s of

  runc batch fp32      the batch engine (all cores), at its best slots per thread
  runc batch int8      the same on the Q8_0 export
  runc one at a time   runc_solve, one problem after another, one thread (a prompt reuses the
                       cached positions it shares with the one before)
  PyTorch KV cache     train/model.py's generate_greedy (eager, batched, KV cache), best batch
  PyTorch no cache     the whole sequence recomputed each step (llama2.c's generate), best batch

with each engine's ratio to PyTorch, its GFLOP/s counted as 2 x params x 18 tokens per problem (the
11 prompt tokens and 7 answer tokens fed back: the work of a problem, for every engine alike), the
share of the machine's fp32 matmul rate (numpy, measured in the same run: the ceiling; so the share
is problems/s against the problems/s the ceiling allows), the tokens each engine really runs per
problem (runc takes a prompt's cached prefix from an earlier problem instead of running it, and runs
a prompt token's last layer only up to its keys and values), and the peak resident memory of the
process that ran it (each engine runs in its own).
A second table, answers that show their work (issue 20): a random model of the classic 25K shape
(d32 L2 h4 f84) whose context holds the prompt and 70 generated tokens (a steps answer of `*` is
about that long: steps, '#', the final answer), every answer running to the end of the context (EOS
zeroed): problems/s and tokens/s of the batch engine (best slots) and of runc_solve one at a time,
with the tokens generated per answer. --no-steps leaves it out.
Rates are medians of --repeats timed runs of at least --seconds each. The machine is shared: every
figure is relative to the load of the moment, which is why they are all measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"10K": 10_000, "100K": 100_000, "1M": 1_000_000}
N_NEW = 8          # generated tokens per problem
PROMPT_TOKENS = 11  # "AA op BB =" with BOS
TOKENS_PER_PROBLEM = PROMPT_TOKENS + N_NEW - 1  # a problem's work: its prompt and its answer fed back
EOS = 2
VOCAB, SEQ = 20, 24
N_PROMPTS = 4096   # distinct prompts (each timed run solves them over and over)
STEPS_PARAMS = 25_000   # the steps row: the classic 25K shape ...
STEPS_NEW = 70          # ... generating this many tokens per answer (a `*` steps answer's length)


# ---- setup ----------------------------------------------------------------------------------------------

def shape(target: int):
    from tinymath.train.model import ModelConfig

    return ModelConfig.for_params(target, vocab_size=VOCAB, max_seq_len=SEQ)


def build_models(tmp: Path) -> dict:
    """Random models (train/model.py's init) with a zeroed EOS row: torch state dict, fp32 and int8 files."""
    import torch

    from tinymath.export import encode_bin, from_module
    from tinymath.train.model import Transformer

    out = {}
    for name, target in SIZES.items():
        cfg = shape(target)
        torch.manual_seed(target)
        model = Transformer(cfg).eval()
        with torch.no_grad():
            model.tok_embeddings.weight[EOS].zero_()  # tied: the EOS logit is 0, never the argmax
        paths = {"pt": tmp / f"{name}.pt", "v1": tmp / f"{name}.bin", "v2": tmp / f"{name}.q8.bin"}
        torch.save({"config": cfg.to_dict(), "state": model.state_dict()}, paths["pt"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paths["v1"].write_bytes(encode_bin(from_module(model), "v1"))
            paths["v2"].write_bytes(encode_bin(from_module(model), "v2"))
        out[name] = {"cfg": cfg, "params": cfg.n_params(), "paths": paths}
    return out


def build_steps_model(tmp: Path) -> dict:
    """The steps row's random model: the classic 25K shape, a context of prompt + STEPS_NEW, EOS zeroed."""
    import torch

    from tinymath.export import encode_bin, from_module
    from tinymath.train.model import ModelConfig, Transformer

    cfg = ModelConfig.for_params(STEPS_PARAMS, vocab_size=VOCAB, max_seq_len=PROMPT_TOKENS + STEPS_NEW)
    torch.manual_seed(STEPS_PARAMS)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.tok_embeddings.weight[EOS].zero_()
    path = tmp / "steps25K.bin"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(encode_bin(from_module(model), "v1"))
    return {"cfg": cfg, "params": cfg.n_params(), "path": path}


def write_prompts(path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    a, b, op = rng.integers(10, 100, N_PROMPTS), rng.integers(10, 100, N_PROMPTS), rng.integers(0, 4, N_PROMPTS)
    prompts = [f"{x} {'+-*/'[o]} {y} =" for x, y, o in zip(a, b, op)]
    path.write_text("\n".join(prompts) + "\n")
    return prompts


def peak_rss_kb() -> int:
    """Peak resident memory of this process (VmHWM: ru_maxrss would count the parent's before exec)."""
    try:
        for row in Path("/proc/self/status").read_text().splitlines():
            if row.startswith("VmHWM:"):
                return int(row.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def matmul_ceiling(seconds: float = 1.0, n: int = 2048) -> float:
    """numpy's fp32 matmul rate (all cores), GFLOP/s: the median of 5 timed runs."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    a @ b
    rates = []
    for _ in range(5):
        k, t0 = 0, time.perf_counter()
        while True:
            a @ b
            k += 1
            dt = time.perf_counter() - t0
            if dt >= seconds / 5:
                break
        rates.append(2.0 * n ** 3 * k / dt / 1e9)
    return statistics.median(rates)


# ---- the PyTorch worker (a process of its own: its peak memory is its own) -----------------------------

def torch_worker(args: argparse.Namespace) -> None:
    import torch

    from tinymath.runc import Model
    from tinymath.train.model import ModelConfig, Transformer

    torch.set_num_threads(os.cpu_count() or 1)
    ck = torch.load(args.model, weights_only=True)
    model = Transformer(ModelConfig.from_dict(ck["config"])).eval()
    model.load_state_dict(ck["state"])
    prompts = Path(args.prompts).read_text().split("\n")[:-1]
    with Model(args.tokenizer_model, tokenizer=args.tokenizer) as m:
        ids = [m.encode(p) for p in prompts]
    n_prompt = PROMPT_TOKENS
    assert all(len(x) == n_prompt for x in ids)
    tokens_per_problem = n_prompt + N_NEW - 1

    @torch.no_grad()
    def no_cache(batch: torch.Tensor) -> torch.Tensor:
        idx = batch
        for _ in range(N_NEW):
            nxt = model(idx)[:, -1].argmax(-1, keepdim=True)  # the whole sequence again, every step
            idx = torch.cat([idx, nxt], 1)
        return idx[:, n_prompt:]

    results = []
    for bs in args.batches:
        chunk = [ids[i % len(ids)] for i in range(bs)]
        tensor = torch.tensor(chunk)

        def solve():
            if args.engine == "kv":
                out = model.generate_greedy(chunk, max_new=N_NEW, stop=EOS)
                assert all(len(o) == N_NEW for o in out)
            else:
                no_cache(tensor)

        solve()
        rates = []
        for _ in range(args.repeats):
            k, t0 = 0, time.perf_counter()
            while True:
                solve()
                k += bs
                dt = time.perf_counter() - t0
                if dt >= args.seconds:
                    break
            rates.append(k / dt)
        results.append({"batch": bs, "problems_per_s": statistics.median(rates), "runs": rates})
    best = max(results, key=lambda r: r["problems_per_s"])
    print(json.dumps({"best": best, "all": results, "tokens_per_problem": tokens_per_problem,
                      "maxrss_kb": peak_rss_kb()}))


# ---- running the engines --------------------------------------------------------------------------------

def run_json(cmd: list[str], timeout: float = 600) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def runc(binary: Path, model: Path, tok: Path, prompts: Path, mode: str, slots: int, context: int,
         seconds: float, repeats: int) -> dict:
    return run_json([str(binary), str(model), str(tok), str(prompts), mode, "0", str(slots), str(context),
                     str(seconds), str(repeats)])


def best_runc(binary, model, tok, prompts, context, slots_list, seconds, repeats) -> dict:
    runs = [runc(binary, model, tok, prompts, "batch", s, context, seconds, repeats) for s in slots_list]
    best = max(runs, key=lambda r: r["problems_per_s"])
    best["tried"] = {r["slots"]: round(r["problems_per_s"]) for r in runs}
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runc", default=str(ROOT / "bench" / "bench_runc"), help="the bench_runc binary")
    p.add_argument("--tokenizer", default=str(ROOT / "models" / "tokenizer.bin"), help="the classic tokenizer.bin")
    p.add_argument("--seconds", type=float, default=0.6, help="minimum seconds of one timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the median is reported)")
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of " + ",".join(SIZES))
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--no-steps", dest="steps", action="store_false",
                   help="leave out the steps row (long answers: 70 generated tokens)")
    # internal: the PyTorch worker
    p.add_argument("--worker", choices=["kv", "nokv"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--tokenizer-model", help=argparse.SUPPRESS)
    p.add_argument("--prompts", help=argparse.SUPPRESS)
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.engine = args.worker
        torch_worker(args)
        return 0

    tok = Path(args.tokenizer)
    if not tok.is_file():
        print(f"bench: no tokenizer at {tok} (the classic task's tokenizer.bin; `make model` writes it)",
              file=sys.stderr)
        return 1
    sizes = [s for s in args.sizes.split(",") if s]
    cores = os.cpu_count() or 1
    load = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    t_start = time.perf_counter()
    ceiling = [matmul_ceiling()]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        models = build_models(tmp)
        prompts_path = tmp / "prompts.txt"
        write_prompts(prompts_path)
        rows = []
        for name in sizes:
            info = models[name]
            paths = info["paths"]
            context = PROMPT_TOKENS + N_NEW  # prompt + answer: every answer runs to the end of the context
            sweep = [16, 32, 64]
            res = {}
            res["runc batch fp32"] = best_runc(args.runc, paths["v1"], tok, prompts_path, context, sweep,
                                               args.seconds, args.repeats)
            res["runc batch int8"] = best_runc(args.runc, paths["v2"], tok, prompts_path, context, sweep,
                                               args.seconds, args.repeats)
            res["runc one at a time"] = runc(args.runc, paths["v1"], tok, prompts_path, "single", 0, context,
                                             args.seconds, args.repeats)
            for engine, batches in (("kv", "256,1024"), ("nokv", "64,256")):
                out = run_json([sys.executable, __file__, "--worker", engine, "--model", str(paths["pt"]),
                                "--tokenizer-model", str(paths["v1"]), "--tokenizer", str(tok),
                                "--prompts", str(prompts_path), "--batches", batches,
                                "--seconds", str(args.seconds), "--repeats", str(args.repeats)])
                label = "PyTorch KV cache" if engine == "kv" else "PyTorch no cache"
                res[label] = {"problems_per_s": out["best"]["problems_per_s"], "batch": out["best"]["batch"],
                              "tokens_per_problem": out["tokens_per_problem"], "maxrss_kb": out["maxrss_kb"],
                              "tried": {r["batch"]: round(r["problems_per_s"]) for r in out["all"]}}
            for label, r in res.items():
                r.setdefault("tokens_per_s", r["problems_per_s"] * r["tokens_per_problem"])
            rows.append((name, info, res))
        steps = None
        if args.steps:  # long answers: every answer generates STEPS_NEW tokens
            steps = build_steps_model(tmp)
            context = PROMPT_TOKENS + STEPS_NEW
            steps["engines"] = {
                "runc batch fp32": best_runc(args.runc, steps["path"], tok, prompts_path, context, [16, 32, 64],
                                             args.seconds, args.repeats),
                "runc one at a time": runc(args.runc, steps["path"], tok, prompts_path, "single", 0, context,
                                           args.seconds, args.repeats)}
        ceiling.append(matmul_ceiling())
    peak = max(ceiling)
    if load:
        load.append(os.getloadavg()[0])

    # ---- the table ----
    print(f"\nmake bench: {cores} cores; numpy fp32 matmul ceiling {peak:.0f} GFLOP/s "
          f"(start {ceiling[0]:.0f}, end {ceiling[1]:.0f}); prompt 11 tokens + {N_NEW} generated; "
          f"medians of {args.repeats} runs >= {args.seconds:g} s; {time.perf_counter() - t_start:.0f} s in all"
          + (f"; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (other processes slow "
             f"every engine: compare within one run)" if load else "") + "\n")
    head = (f"{'model':<26} {'engine':<20} {'batch':>9} {'problems/s':>11} {'tokens/s':>10} {'x PT-KV':>8} "
            f"{'x PT-noKV':>9} {'GFLOP/s':>8} {'% ceil':>7} {'run/prob':>8} {'peak MB':>8}")
    print(head)
    print("-" * len(head))
    for name, info, res in rows:
        cfg = info["cfg"]
        label = (f"{name} ({info['params']:,}: d{cfg.dim} L{cfg.n_layers} h{cfg.n_heads} "
                 f"f{cfg.hidden_dim})")
        kv, nokv = res["PyTorch KV cache"]["problems_per_s"], res["PyTorch no cache"]["problems_per_s"]
        for engine, r in res.items():
            gflops = 2.0 * info["params"] * TOKENS_PER_PROBLEM * r["problems_per_s"] / 1e9
            if engine.startswith("runc batch"):
                batch = f"{r['threads']}x{r['slots']}"
            else:
                batch = str(r.get("batch", 1))
            print(f"{label:<26} {engine:<20} {batch!s:>9} {r['problems_per_s']:>11,.0f} {r['tokens_per_s']:>10,.0f} "
                  f"{r['problems_per_s'] / kv:>8.2f} {r['problems_per_s'] / nokv:>9.2f} {gflops:>8.1f} "
                  f"{100 * gflops / peak:>6.1f}% {r['tokens_per_problem']:>8.1f} {r['maxrss_kb'] / 1024:>8.0f}")
            label = ""
        print()
    print("batch: runc batch = threads x slots per thread (best of the slots tried); PyTorch = problems per call.")
    print(f"GFLOP/s and % ceil count every engine's problems at {TOKENS_PER_PROBLEM} tokens of 2 x params FLOPs; "
          "run/prob: the tokens an engine really runs per problem.")
    for name, info, res in rows:
        tried = "; ".join(f"{e}: {r['tried']}" for e, r in res.items() if "tried" in r)
        print(f"  {name} tried (problems/s): {tried}")
    if steps is not None:
        cfg = steps["cfg"]
        print(f"\nAnswers that show their work: {STEPS_NEW} generated tokens per answer (a `*` steps answer's "
              f"length), prompt {PROMPT_TOKENS} tokens, context {cfg.max_seq_len}; same run, same prompts\n")
        head = (f"{'model':<34} {'engine':<20} {'batch':>9} {'problems/s':>11} {'tokens/s':>10} {'gen/answer':>10} "
                f"{'run/prob':>8} {'peak MB':>8}")
        print(head)
        print("-" * len(head))
        label = (f"steps 25K ({steps['params']:,}: d{cfg.dim} L{cfg.n_layers} h{cfg.n_heads} f{cfg.hidden_dim})")
        for engine, r in steps["engines"].items():
            batch = f"{r['threads']}x{r['slots']}" if engine.startswith("runc batch") else "1"
            print(f"{label:<34} {engine:<20} {batch:>9} {r['problems_per_s']:>11,.0f} {r['tokens_per_s']:>10,.0f} "
                  f"{STEPS_NEW:>10} {r['tokens_per_problem']:>8.1f} {r['maxrss_kb'] / 1024:>8.0f}")
            label = ""
        print(f"  steps 25K tried (problems/s): runc batch fp32: {steps['engines']['runc batch fp32']['tried']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ceiling_gflops": peak, "ceilings": ceiling, "cores": cores,
                       "sizes": {name: {"params": info["params"], "config": info["cfg"].to_dict(), "engines": res}
                                 for name, info, res in rows},
                       "steps": None if steps is None else {
                           "params": steps["params"], "config": steps["cfg"].to_dict(), "generated": STEPS_NEW,
                           "engines": steps["engines"]}}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
