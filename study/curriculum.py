"""A curriculum: a study variant's stages trained one after another before its task.

Stage k trains in RUN_DIR/stageK from stage k-1's weights, all stages on one
tokenizer trained on every stage's and the final task's train lines. Each stage's
problems come from its own task spec, with `exclude` set to the final task, so a
stage never trains on a problem the final task evaluates on and every stage's
problems are rebuilt from specs alone (a stage's model can be evaluated like any
other). A stage that finished earlier is skipped; one that was interrupted resumes.
"""

from __future__ import annotations

from pathlib import Path


def train_stages(run_dir: Path, cfg: dict) -> tuple[dict, int]:
    """Train cfg["stages"] in order; return the final task's config (starting from the last
    stage's weights, on the shared tokenizer) and the tokens the stages trained on."""
    from tinymath.tasks import TaskSpec, build_splits
    from tinymath.tokenizer import train_tokenizer
    from tinymath.train.checkpoint import load_checkpoint
    from tinymath.train.config import load_config
    from tinymath.train.train import train

    stages = cfg.pop("stages")
    stage_tasks = [{**st["task"], "exclude": cfg["task"]} for st in stages]
    tok = run_dir / "tokenizer-all" / "tokenizer.bin"
    if not tok.is_file():
        tasks = stage_tasks + [cfg["task"]]
        lines = [p.line for t in tasks for p in build_splits(TaskSpec.from_dict(t))["train"]]
        train_tokenizer(lines, tok.parent, preset=cfg.get("tokenizer_preset", "digits"))
    prev, tokens = None, 0
    for k, (st, task) in enumerate(zip(stages, stage_tasks)):
        sdir = run_dir / f"stage{k}"
        scfg = {**cfg, **st.get("train", {}), "task": task, "out_dir": str(sdir), "tokenizer": str(tok),
                "init_from": prev}
        ckpt = sdir / "ckpt.pt"
        saved = load_checkpoint(ckpt, arrays="numpy") if ckpt.is_file() else None
        if saved is not None and saved["metrics"].get("stop_reason") is not None:
            summary = saved  # this stage finished earlier
        else:
            summary = train(load_config(base=scfg), resume=saved is not None or None)
        if summary.get("interrupted"):
            raise KeyboardInterrupt
        tokens += int(summary.get("tokens_seen") or 0)
        prev = str(ckpt)
    return {**cfg, "tokenizer": str(tok), "init_from": prev}, tokens
