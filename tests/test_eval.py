"""adrnet.eval: worst-case aggregation, attack settings, sweeps, divergence, `adrnet eval`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from adrnet.cli import main
from adrnet.cli.evaluate import parse_eps, parse_eps_list
from adrnet.errors import AdrnetError, ConfigError
from adrnet.eval import EvalOptions, evaluate_run, robust_accuracy, summarize, worst_case
from adrnet.attacks import attack_settings, build_attacks, make_attack, parse_attack_names
from adrnet.eval.divergence import latent_tsne, layer_divergence
from adrnet.eval.sweep import PAPER_EPS, default_eps_list, eps_sweep

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---------- hand-made fixture: inputs carry their id and the class they show ----------
class ReadsPixel(nn.Module):
    """Predicts the class written in pixel 0 (as class/10); pixel 1 holds the example id."""

    def forward(self, x, return_latent=False):
        cls = torch.round(x[:, 0] * 10).long().clamp(0, 9)
        return nn.functional.one_hot(cls, 10).float()


def _inputs(labels):
    n = len(labels)
    x = torch.stack([torch.tensor([c / 10, i / 100]) for i, c in enumerate(labels)])
    return x, torch.tensor(labels[:n])


def fooling(ids, seen):
    """An 'attack' that relabels the examples whose id is in ``ids`` and logs what it saw."""
    def attack(model, x, y):
        seen.extend(torch.round(x[:, 1] * 100).long().tolist())
        out = x.clone()
        hit = torch.isin(torch.round(x[:, 1] * 100).long(), torch.tensor(sorted(ids)))
        out[hit, 0] = ((y[hit] + 1) % 10).float() / 10
        return out
    return attack


def test_worst_case_is_union_of_fooled_examples():
    x, y = _inputs([1, 2, 3, 4, 5])
    x[4, 0] = 0.9  # example 4 is wrong when clean
    seen_a, seen_b = [], []
    result = robust_accuracy(ReadsPixel(), x, y, {"A": fooling({0, 1}, seen_a),
                                                  "B": fooling({1, 2}, seen_b)}, batch_size=2)
    assert result.correct["worst_case"].tolist() == [False, False, False, True, False]
    assert result.worst_case_accuracy == pytest.approx(1 / 5)
    assert result.attack_accuracy == {"A": pytest.approx(2 / 5), "B": pytest.approx(2 / 5)}
    assert result.clean_accuracy == pytest.approx(4 / 5)
    assert sorted(seen_a) == [0, 1, 2, 3]  # the clean-wrong example is never attacked
    assert result.n == 5


def test_summarize_fields_and_extra_flags():
    clean = torch.tensor([True, True, True, False])
    result = summarize(clean, {"pgd": torch.tensor([False, True, True, True]),
                               "autoattack": torch.tensor([True, True, False, True])},
                       {"pgd": {"steps": 20}})
    record = result.to_dict()
    assert set(record) == {"n", "clean_accuracy", "attack_accuracy", "worst_case_accuracy", "attack_settings",
                           "attack_seconds", "attack_images_per_s"}
    assert record["attack_seconds"] == {}  # summarize times nothing; robust_accuracy times each attack
    assert record["worst_case_accuracy"] == pytest.approx(0.25)
    # per-attack accuracy never counts a clean-wrong example as robust
    assert record["attack_accuracy"]["pgd"] == pytest.approx(0.5)
    assert worst_case(clean, {}).tolist() == clean.tolist()
    assert json.loads(json.dumps(record)) == record


def test_attack_settings_labels_and_default_step():
    pgd = attack_settings("pgd", norm="linf", eps=0.3, steps=200)
    assert pgd.label == "pgd-200" and pgd.step_size == pytest.approx(2.5 * 0.3 / 200)
    assert attack_settings("cw", norm="l2", eps=1.0, steps=10, restarts=3).label == "cw-10x3"
    fgsm = attack_settings("fgsm", norm="linf", eps=0.1, steps=50)
    assert (fgsm.steps, fgsm.step_size, fgsm.random_start) == (1, 0.1, False)
    assert attack_settings("cw", norm="linf", eps=0.1).loss == "cw"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_suite_attacks_stay_in_the_ball_and_hurt(tiny_trained_model, norm):
    model, x, y = tiny_trained_model
    eps = 0.1 if norm == "linf" else 1.0
    fns, settings = build_attacks(["fgsm", "pgd", "cw"], norm=norm, eps=eps, steps=10)
    assert set(fns) == set(settings) == {"fgsm", "pgd-10", "cw-10"}
    for fn in fns.values():
        x_adv = fn(model, x, y)
        delta = (x_adv - x).flatten(1)
        size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
        assert (size <= eps + 1e-5).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    result = robust_accuracy(model, x, y, fns)
    assert result.clean_accuracy > 0.9
    for name, accuracy in result.attack_accuracy.items():
        assert accuracy < result.clean_accuracy, name  # each attack breaks some examples


def test_bad_attack_names_and_eps():
    with pytest.raises(ConfigError, match="unknown attack"):
        parse_attack_names("fgsm,deepfool")
    with pytest.raises(ConfigError, match="eps must be"):
        attack_settings("pgd", norm="linf", eps=-0.1)
    with pytest.raises(ConfigError, match="unknown norm"):
        attack_settings("pgd", norm="l1", eps=0.1)
    with pytest.raises(ConfigError, match="eps"):
        parse_eps("-8/255")
    with pytest.raises(ConfigError, match="cannot read eps"):
        parse_eps("eight")
    assert parse_eps("8/255") == pytest.approx(8 / 255)


def test_paper_eps_lists():
    assert default_eps_list("cifar10", "linf")[3] == pytest.approx(8 / 255)
    assert len(PAPER_EPS["cifar10"]["linf"]) == 11
    assert 0.3 in default_eps_list("mnist", "linf") and max(default_eps_list("mnist", "linf")) == 0.5
    assert parse_eps_list("paper", dataset="fashion_mnist") == default_eps_list("mnist", "linf")
    assert parse_eps_list("0.2, 2/10,0.1") == [0.1, 0.2]


def test_eps_sweep_rows(tiny_trained_model):
    model, x, y = tiny_trained_model
    rows = eps_sweep(model, x, y, norm="linf", eps_list=[0.0, 0.1, 0.4], attacks=["pgd"], steps=10)
    assert [r["eps"] for r in rows] == [0.0, 0.1, 0.4]
    assert rows[0]["worst_case"] == rows[0]["clean"]  # ε = 0 cannot change any input
    assert rows[-1]["worst_case"] < rows[0]["worst_case"]
    assert all(set(r) == {"eps", "clean", "pgd-10", "worst_case", "n"} for r in rows)


class Doubler(nn.Module):
    def forward_stages(self, x):
        return {"double": 2 * x, "plus_one": x + 1}


def test_layer_divergence_hand_computed():
    x = torch.tensor([[1.0, -2.0], [0.5, 0.5]])
    x_adv = x + torch.tensor([[0.1, 0.0], [0.0, -0.3]])
    div = layer_divergence(Doubler(), x, x_adv)
    assert list(div) == ["double", "plus_one"]
    assert div["double"] == pytest.approx(0.4 / 4.0)   # Σ|2δ| / Σ|2x|
    assert div["plus_one"] == pytest.approx(0.4 / 6.0)  # Σ|δ| / Σ|x + 1| = 0.4 / (2+1+1.5+1.5)
    assert set(layer_divergence(Doubler(), x, x).values()) == {0.0}


def test_latent_tsne_shapes(tiny_trained_model):
    model, x, y = tiny_trained_model
    x_adv = make_attack(attack_settings("pgd", norm="linf", eps=0.1, steps=5))(model, x[:30], y[:30])
    emb = latent_tsne(model, x[:30], x_adv, y[:30])
    assert len(emb["clean"]) == len(emb["adv"]) == len(emb["labels"]) == 30
    assert all(len(p) == 2 for p in emb["clean"] + emb["adv"])


# ---------- `adrnet eval` on a real (tiny) run directory ----------
def test_evaluate_run_writes_eval_json(tiny_toy_run):
    record = evaluate_run(tiny_toy_run, EvalOptions(attacks=("fgsm", "pgd", "cw"), n=200, steps=5,
                                                    sweep=(0.0, 0.1), progress=False))
    saved = json.loads((tiny_toy_run / "eval.json").read_text())
    assert saved["n"] == 200 and saved["split"] == "test" and saved["norm"] == "linf"
    assert saved["eps"] == pytest.approx(0.05)  # the run's training ε
    assert set(saved["attack_accuracy"]) == {"fgsm", "pgd-5", "cw-5"}
    assert saved["attack_settings"]["pgd-5"]["steps"] == 5
    assert [r["eps"] for r in saved["sweeps"]["linf"]] == [0.0, 0.1]
    at_zero, at_large = saved["sweeps"]["linf"]
    # the sweep evaluates the same examples as the record: at ε = 0 no attack can change
    # an input, so every attack (and the worst case) keeps exactly the clean accuracy ...
    assert at_zero["n"] == at_large["n"] == 200
    assert at_zero["clean"] == at_large["clean"] == saved["clean_accuracy"]
    assert all(at_zero[name] == saved["clean_accuracy"] for name in ("fgsm", "pgd-5", "cw-5",
                                                                     "worst_case"))
    # ... while at twice the training radius the attacks do break examples
    assert at_large["worst_case"] < at_large["clean"]
    assert any(at_large[name] < at_large["clean"] for name in ("fgsm", "pgd-5", "cw-5"))
    assert set(saved["diagnostics"]["divergence"]) == {"fc1", "fc2", "logits"}
    assert record["path"] == str(tiny_toy_run / "eval.json")


def test_evaluation_radius_is_eval_eps_unless_given():
    from adrnet.config import config_from_dict
    from adrnet.eval.evaluate import resolve_options
    cfg = config_from_dict({"data": {"name": "blobs"}, "attack": {"eps": 0.1}, "eval": {"eps": 0.05}})
    assert resolve_options(EvalOptions(attacks=("pgd",)), cfg).eps == 0.05
    assert resolve_options(EvalOptions(attacks=("pgd",), eps=0.2), cfg).eps == 0.2


def test_cli_eval_prints_table(tiny_toy_run, tmp_path, capsys):
    out = tmp_path / "e.json"
    code = main(["eval", str(tiny_toy_run), "--attacks", "pgd", "--n", "50", "--steps", "3",
                 "--eps", "2/255", "--no-diagnostics", "--no-progress", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "worst case" in text and "pgd-3" in text
    assert json.loads(out.read_text())["eps"] == pytest.approx(2 / 255)


@pytest.mark.parametrize("args, message", [
    (["--eps", "-0.1"], "eps must be"),
    (["--attacks", "pgd,deepfool"], "unknown attack"),
    (["--n", "0"], "--n must be a positive"),
    (["--n", "100000"], "more than"),
    (["--norm", "l2"], "give --eps for --norm l2"),
    (["--sweep", "0.1,x"], "cannot read eps"),
    (["--eps", "1e39"], "L∞ eps must be a number from 0 to 1"),
    (["--eps", "1e400"], "L∞ eps must be a number from 0 to 1 (inputs lie in [0, 1]"),
    (["--sweep", "0.1,1.5"], "got 1.5"),
    (["--norm", "l2", "--eps", "1.5"], "L2 eps must be a number from 0 to 1.41421 (√2"),
    (["--step-size", "0"], "step size must be a finite number > 0, got 0.0 (--step-size)"),
    (["--step-size", "-0.1"], "step size must be a finite number > 0, got -0.1"),
    (["--step-size", "x"], "cannot read --step-size 'x'"),
])
def test_cli_eval_bad_inputs(tiny_toy_run, tmp_path, capsys, args, message):
    out = tmp_path / "eval.json"
    code = main(["eval", str(tiny_toy_run), "--no-progress", "--out", str(out)] + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_cli_eval_missing_run_dir(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_cli_eval_other_architecture(tiny_toy_run, tmp_path, capsys):
    run = tmp_path / "foreign"
    shutil.copytree(tiny_toy_run, run)
    meta_path = run / "checkpoints" / "best.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["model"]["options"] = {"hidden": [32, 16]}
    meta_path.write_text(json.dumps(meta))
    assert main(["eval", str(run), "--no-progress"]) == 2
    assert "architecture" in capsys.readouterr().err
    with pytest.raises(AdrnetError, match=r"best\.safetensors holds weights of a different "
                                          r"architecture than its config describes: shape of "
                                          r"\S+ is \[16\], the model needs \[32\]"):
        evaluate_run(run, EvalOptions(progress=False))


def test_linf_and_l2_sweeps_both_kept(tiny_toy_run, tmp_path):
    out = str(tmp_path / "eval.json")
    common = dict(attacks=("pgd",), n=40, steps=2, diagnostics=False, progress=False, out=out)
    evaluate_run(tiny_toy_run, EvalOptions(sweep=(0.02, 0.05), **common))
    record = evaluate_run(tiny_toy_run / "checkpoints" / "best.json",
                          EvalOptions(norm="l2", eps=0.1, sweep=(0.1, 0.3), **common))
    assert record["which"] == "best" and record["norm"] == "l2"
    assert [r["eps"] for r in record["sweeps"]["linf"]] == [0.02, 0.05]
    assert [r["eps"] for r in record["sweeps"]["l2"]] == [0.1, 0.3]
