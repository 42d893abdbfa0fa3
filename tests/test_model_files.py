"""A model's files found by one rule: the card's paths are relative to the card, so a model folder
can move or be copied elsewhere; no committed card holds a path of the machine that wrote it."""

import json
import shutil
from pathlib import Path

import pytest

from tinymath.export.card import ModelFiles, locate

REPO = Path(__file__).resolve().parents[1]


def _paths(d, key=""):
    """Every (key, string) of a card whose key says it holds a path."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, k)
    elif isinstance(d, list):
        for v in d:
            yield from _paths(v, key)
    elif isinstance(d, str) and key in ("path", "checkpoint", "bin", "out_dir", "tokenizer", "data"):
        yield key, d


@pytest.mark.parametrize("card", sorted((REPO / "models").glob("*.json")), ids=lambda p: p.name)
def test_committed_cards_hold_no_machine_paths(card):
    data = json.loads(card.read_text())
    for key, value in _paths(data):
        assert not Path(value).is_absolute() and not value.startswith("~"), f"{card.name}: {key} = {value}"


def test_shipped_model_finds_its_files_from_a_copy(tmp_path):
    """models/ copied elsewhere still names its tokenizer and its SentencePiece model."""
    dst = tmp_path / "somewhere" / "models"
    shutil.copytree(REPO / "models", dst)
    files = ModelFiles.open(dst / "tinymath.bin")
    assert files.tokenizer() == dst / "tokenizer.bin"
    assert files.tokenizer_model() == dst / "tokenizer.model"
    assert files.task()["task"] == "arith"
    assert files.checkpoint() is None  # the training checkpoint is not shipped


def test_locate_order(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tok.bin").write_bytes(b"x")
    (tmp_path / "tok.bin").write_bytes(b"y")
    assert locate("a/tok.bin", tmp_path) == tmp_path / "a" / "tok.bin"   # relative to the record's folder
    assert locate("/gone/elsewhere/tok.bin", tmp_path) == tmp_path / "tok.bin"  # moved: same name beside
    assert locate("nothing.bin", tmp_path) is None
    assert locate(None, tmp_path) is None


def test_card_that_is_not_json_is_named(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"\0" * 8)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ValueError, match="m.json is not valid JSON"):
        ModelFiles.open(tmp_path / "m.bin")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        ModelFiles.open(tmp_path / "absent.bin")


def test_export_writes_paths_relative_to_the_card(tmp_path):
    """A run exported into another folder: the card's paths lead back from the card, and survive a move."""
    torch = pytest.importorskip("torch")  # noqa: F841
    from tinymath.export import export_checkpoint
    from tinymath.train.config import TrainConfig
    from tinymath.train.train import train

    run = tmp_path / "run"
    train(TrainConfig.from_dict({"out_dir": str(run), "task": {"task": "arith", "ops": "+", "lo": 0, "hi": 9,
                                                               "holdout": None},
                                 "model": {"dim": 16, "n_layers": 1, "n_heads": 2}, "max_steps": 5,
                                 "eval_every": 5, "progress": False}))
    (tmp_path / "out").mkdir()
    export_checkpoint(run / "ckpt.pt", "v1", tmp_path / "out" / "m.bin")
    card = json.loads((tmp_path / "out" / "m.json").read_text())
    assert card["tokenizer"]["bin"]["path"] == "../run/tokenizer.bin"
    assert card["source"]["checkpoint"] == "../run/ckpt.pt"
    shutil.move(str(tmp_path), str(tmp_path.with_name(tmp_path.name + "-moved")))
    moved = tmp_path.with_name(tmp_path.name + "-moved")
    files = ModelFiles.open(moved / "out" / "m.bin")
    assert files.tokenizer() == moved / "out" / "../run/tokenizer.bin"
    assert files.checkpoint() == moved / "out" / "../run/ckpt.pt"


def test_card_out_of_step_with_its_file_is_named(tmp_path):
    """A kill between writing a .bin and its card leaves a new file beside the old card: readers say so."""
    for name in ("tinymath.bin", "tinymath.json", "tokenizer.bin"):
        shutil.copy(REPO / "models" / name, tmp_path / name)
    assert ModelFiles.open(tmp_path / "tinymath.bin").card["n_params"] > 0
    shutil.copy(REPO / "models" / "tinymath.q8.bin", tmp_path / "tinymath.bin")  # another file, the old card
    with pytest.raises(ValueError, match="out of step with tinymath.bin"):
        ModelFiles.open(tmp_path / "tinymath.bin")
