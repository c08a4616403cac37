"""The examples run as documented (with a smaller budget) and produce their figures."""

import json
import runpy
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("torch_one_thread")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_toy_example_trains_both_objectives_and_draws_the_figure(tmp_path):
    pytest.importorskip("matplotlib")
    toy = runpy.run_path(str(EXAMPLES / "toy.py"))
    out = toy["main"](["--out", str(tmp_path / "toy.png"), "--epochs", "1"])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (900, 855)  # 2 columns x 2 rows of panels at dpi 90


def test_extend_example_registers_all_four_and_trains_and_evaluates_with_them(tmp_path, registries_restored):
    """examples/extend.py: a data set, a model, a term (with a preset) and an attack of the
    user's own, used from Python by name and by object and from the command line; the
    registered attack's accuracy is what the user's own function gives on the same model."""
    import torch
    import adrnet
    from adrnet.attacks import Linf
    from adrnet.data import load_splits
    extend = runpy.run_path(str(EXAMPLES / "extend.py"))
    out = extend["main"](["--out", str(tmp_path), "--epochs", "1"])
    for where in ("python", "objects", "cli"):
        assert {"corners", "pgd-10"} <= set(out[where]["attack_accuracy"]) and out[where]["n"] == 500
    assert "corners" in out["cli"]["attack_settings"]
    model, _ = adrnet.load_model(tmp_path / "python")
    x, y = load_splits("rings").test
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        broken = model(extend["corners"](model, x, y, threat=Linf(extend["EPS"]))).argmax(1) != y
    assert out["python"]["clean_accuracy"] == clean.float().mean().item()
    assert out["python"]["attack_accuracy"]["corners"] == (clean & ~broken).float().mean().item()
    lines = (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()
    steps = [r for r in map(json.loads, lines) if r["kind"] == "step"]
    assert steps and all(r["logit_pairing"] >= 0 for r in steps)
    assert json.loads((tmp_path / "objects" / "objects.json").read_text()).keys() == {"model"}
    assert "extend" in (tmp_path / "cli" / "config.toml").read_text()


def test_own_data_example_trains_on_an_npz_and_a_folder_and_evaluates_any_model(tmp_path):
    """examples/own_data.py: an .npz file and an image folder as data sets, a model named by
    import path (examples/own_data_models.py), trained with adr_pgd, and `adrnet eval
    --model ... --weights ...` on adrnet's weights and on a model trained with plain PyTorch."""
    import sys
    own = runpy.run_path(str(EXAMPLES / "own_data.py"))
    path = list(sys.path)
    try:
        out = own["main"](["--out", str(tmp_path), "--epochs", "1"])
    finally:
        sys.modules.pop("own_data_models", None)
        sys.path[:] = path
    for where, n in (("npz", 100), ("folder", 40), ("plain", 100)):
        assert out[where]["n"] == n and {"fgsm", "pgd-5"} <= set(out[where]["attack_accuracy"])
        assert out[where]["model"] == "own_data_models:build"
    assert out["plain"]["which"] == "model.pt" and out["plain"]["objective"] == "(weights file)"
    assert out["plain"]["clean_accuracy"] > 0.9  # the plain model learnt; identity normalisation
    folder = json.loads((tmp_path / "runs" / "folder" / "checkpoints" / "last.json").read_text())
    assert folder["data"]["classes"] == ["dark", "light"] and folder["data"]["shape"] == [1, 8, 8]
    assert len(folder["data"]["sha256"]) == 64
