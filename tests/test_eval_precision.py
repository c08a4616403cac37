"""Evaluation in bf16 with every break verified in fp32, per-attack time, and no
evaluation done twice."""

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from adrnet.attacks import make_threat
from adrnet.attacks.autoattack import autoattack_eval
from adrnet.cli import main
from adrnet.eval import EvalOptions, evaluate_run
from adrnet.eval.evaluate import run_attacks
from adrnet.eval.precision import LowPrecision
from adrnet.report import format_eval

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class Edge(nn.Module):
    """Class 0 while 3·x₁ − 1.8089 > 0. FGSM at ε = 0.1 moves x₁ = 0.703 to 0.603, where
    fp32 gives +1e-4 (still class 0) but bf16 rounds x₁ to 0.6015625 and the bias to
    −1.8125, giving −0.0078: the point fools the bf16 copy only. x₁ = 0.9 is robust in
    both, x₁ = 0.62 is broken in both."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[3.0, 0.0]]))
            self.lin.bias.fill_(-1.8089)

    def forward(self, x):
        z = self.lin(x)
        return torch.cat([z, torch.zeros_like(z)], 1)


X = torch.tensor([[0.703, 0.5], [0.9, 0.5], [0.62, 0.5]])
Y = torch.zeros(3, dtype=torch.long)


def _options(precision, attacks=("fgsm",)):
    return replace(EvalOptions(attacks=attacks, eps=0.1, norm="linf", steps=5, restarts=1,
                               batch_size=8, device="cpu", precision=precision, progress=False,
                               diagnostics=False), threat=make_threat("linf", 0.1))


def test_a_point_that_fools_only_the_bf16_copy_is_not_counted_as_broken():
    model = Edge().eval()
    x_adv = X[:1] - torch.tensor([[0.1, 0.0]])  # FGSM's point for the first example
    assert model(x_adv).argmax(1).item() == 0 and LowPrecision(model)(x_adv).argmax(1).item() == 1
    fp32, _ = run_attacks(model, X, Y, _options("fp32"))
    bf16, summaries = run_attacks(model, X, Y, _options("bf16"))
    assert fp32.correct["fgsm"].tolist() == bf16.correct["fgsm"].tolist() == [True, True, False]
    assert summaries["bf16_only"] == {"fgsm": 1}
    assert bf16.clean_accuracy == 1.0 and bf16.attack_seconds.keys() == {"fgsm"}


def test_autoattack_in_bf16_counts_only_what_the_fp32_judge_confirms():
    """The judge decides: a judge that is right everywhere leaves every example robust,
    however many the attacked (bf16) copy loses, and the copy's losses are tallied."""
    class AlwaysZero(nn.Module):
        def forward(self, x):
            return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], 1)

    model = Edge().eval()
    kwargs = dict(eps=0.1, version="custom", attacks=["apgd-ce"], batch_size=8)
    alone = autoattack_eval(LowPrecision(model), X, Y, **kwargs)
    judged = autoattack_eval(LowPrecision(model), X, Y, judge=AlwaysZero(), **kwargs)
    lost = int((~alone.robust).sum())
    assert lost >= 1 and judged.robust.all() and judged.bf16_only == lost
    assert judged.settings["precision"] == "bf16" and "precision" not in alone.settings


def test_a_finished_evaluation_is_not_run_again_unless_forced(tiny_toy_run, tmp_path, monkeypatch):
    out = tmp_path / "eval.json"
    options = EvalOptions(attacks=("fgsm", "pgd"), n=50, steps=3, diagnostics=False,
                          progress=False, out=str(out))
    first = evaluate_run(tiny_toy_run, options)
    assert first["precision"] == "fp32" and set(first["attack_seconds"]) == {"fgsm", "pgd-3"}
    assert all(rate > 0 for rate in first["attack_images_per_s"].values())
    import adrnet.eval.evaluate as evaluate_module

    def no_attacks(*args, **kwargs):
        raise AssertionError("a finished evaluation ran its attacks again")
    monkeypatch.setattr(evaluate_module, "run_attacks", no_attacks)
    again = evaluate_run(tiny_toy_run, options)
    assert again["skipped"] and "already holds this evaluation" in again["notes"][0]
    assert json.loads(out.read_text()) == {k: v for k, v in first.items() if k not in ("path", "notes")}
    monkeypatch.undo()
    for changed in (dict(force=True), dict(eps=0.04), dict(steps=4), dict(precision="bf16")):
        redone = evaluate_run(tiny_toy_run, replace(options, **changed))
        assert "skipped" not in redone, changed
    assert redone["precision"] == "bf16" and "attacks in bf16, every break verified in fp32" in format_eval(redone)


def test_the_command_line_evaluates_in_bf16_and_skips_a_rerun(tiny_toy_run, tmp_path, capsys):
    args = ["eval", str(tiny_toy_run), "--attacks", "fgsm", "--n", "40", "--no-diagnostics",
            "--no-progress", "--precision", "bf16", "--out", str(tmp_path / "e.json")]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "attacks in bf16" in first and "img/s" in first
    assert json.loads((tmp_path / "e.json").read_text())["attack_settings"]["fgsm"]["precision"] == "bf16"
    assert main(args) == 0
    assert "already holds this evaluation" in capsys.readouterr().out
