"""The attack registry (adrnet.attacks.ATTACKS): every registered attack keeps to its
threat model, the built-ins record what they always recorded, and a user's attack,
added with one registration, runs through `adrnet eval` like a built-in."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import adrnet
from adrnet.attacks import (ATTACKS, AttackRun, AttackSpec, make_threat, parse_attack_names,
                            register_attack)
from adrnet.attacks.brendel_bethge import distances
from adrnet.cli import build_parser, main
from adrnet.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

EPS = {"linf": 0.1, "l2": 1.0}
#: cheap options for the costly attacks (every other attack runs with its defaults)
CHEAP = {"pgd": {"steps": 3}, "cw": {"steps": 3}, "mt": {"steps": 2},
         "bb": {"walk_steps": 5, "init_steps": 3},
         "autoattack": {"version": "custom", "attacks": ["apgd-ce"]},
         "square": {"square_queries": 20, "square_restarts": 1}}


class FakeWalk:
    """Stands in for foolbox's B&B (its numba optimiser takes a minute to compile):
    walks each start halfway back to x."""

    def __init__(self, **kwargs):
        pass

    def run(self, fmodel, x, criterion, *, starting_points):
        return x + (starting_points - x) / 2


@pytest.fixture
def fake_foolbox(monkeypatch):
    fb = pytest.importorskip("foolbox")
    pytest.importorskip("numba")
    monkeypatch.setattr(fb.attacks, "LinfinityBrendelBethgeAttack", FakeWalk)
    monkeypatch.setattr(fb.attacks, "L2BrendelBethgeAttack", FakeWalk)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_stays_in_its_ball_and_leaves_x(request, tiny_trained_model, name, norm):
    if name == "bb":
        request.getfixturevalue("fake_foolbox")
    model, x, y = tiny_trained_model
    x, y = x[:8].clone(), y[:8]
    x_before = x.clone()
    threat = make_threat(norm, EPS[norm])
    torch.manual_seed(0)
    model.train()  # an attack runs the model in eval mode and restores the caller's mode
    try:
        x_adv = ATTACKS[name].make(threat, **CHEAP.get(name, {}))(model, x, y)
        assert model.training
    finally:
        model.eval()
    assert torch.equal(x, x_before)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (distances(x_adv, x, norm) <= EPS[norm] * (1 + 1e-5)).all()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_describes_itself(name):
    spec = ATTACKS[name]
    assert spec.name == name and spec.description and "\n" not in spec.description
    threat = make_threat("linf", 0.1)
    settings = spec.settings(threat, spec.options(**CHEAP.get(name, {})))
    assert json.loads(json.dumps(settings)) == settings
    assert isinstance(spec.label(), str) and spec.label()


def test_builtin_labels_and_settings_are_those_eval_json_always_had():
    threat = make_threat("linf", 0.1)
    labels = {name: ATTACKS[name].label(ATTACKS[name].pick({"steps": 20, "restarts": 5}))
              for name in ("fgsm", "pgd", "cw", "mt", "bb", "autoattack")}
    assert labels == {"fgsm": "fgsm", "pgd": "pgd-20x5", "cw": "cw-20x5", "mt": "mt-20x5",
                      "bb": "bb", "autoattack": "autoattack"}
    assert ATTACKS["pgd"].label({"steps": 200}) == "pgd-200"
    assert ATTACKS["pgd"].settings(threat, {"steps": 20}) == {
        "name": "pgd", "norm": "linf", "eps": 0.1, "steps": 20, "step_size": 2.5 * 0.1 / 20,
        "restarts": 1, "loss": "ce", "random_start": True}
    assert ATTACKS["fgsm"].settings(threat) == {
        "name": "fgsm", "norm": "linf", "eps": 0.1, "steps": 1, "step_size": 0.1, "restarts": 1,
        "loss": "ce", "random_start": False}
    assert ATTACKS["mt"].settings(make_threat("l2", 1.0), {"steps": 4, "step_size": 0.3})["loss"] == "cw"
    bb = ATTACKS["bb"].settings(threat)
    assert (bb["name"], bb["steps"], bb["init"], bb["init_step_size"]) == ("bb", 200, "pgd-20", 0.05)
    # --steps goes to the PGD-loop attacks only: B&B's walk and AutoAttack keep their own
    assert "steps" not in ATTACKS["bb"].defaults and "steps" not in ATTACKS["autoattack"].defaults
    assert [n for n in ATTACKS if ATTACKS[n].whole_set] == ["autoattack", "square"]
    assert {n for n in ATTACKS if ATTACKS[n].expensive} == {"bb", "autoattack", "square"}


def test_autoattack_whole_set_flags_are_its_batch_attacks(tiny_trained_model):
    model, x, y = tiny_trained_model
    x, y = x[:12], y[:12]
    spec, threat = ATTACKS["autoattack"], make_threat("linf", 0.08)
    options = spec.options(**CHEAP["autoattack"])
    run = spec.evaluate(model, x, y, threat, device="cpu", batch_size=64, progress=False, **options)
    assert isinstance(run, AttackRun) and run.correct.dtype == torch.bool and run.correct.shape == (12,)
    assert run.settings["version"] == "custom" and run.settings["device"] == "cpu"
    assert set(run.summary) == {"accuracy_after", "warnings", "resumed_seconds"}
    with torch.no_grad():
        after = model(spec.build(threat, **options)(model, x, y)).argmax(1) == y
    assert torch.equal(run.correct, after)  # same package, seed and examples: the same points
    with pytest.raises(ConfigError, match="state file"):
        spec.make(threat, state_path="aa.json")


# ---------- a user's attack: one registration ----------
def shift(threat, scale=1.0):
    """Every pixel moved by +scale·ε, clipped to [0, 1] (inside an L∞ ball of radius ε)."""
    return lambda model, x, y: (x + scale * threat.eps).clamp(0, 1)


@pytest.fixture
def shift_registered():
    spec = register_attack("shift", shift, description="every pixel +eps (a test's attack)")
    yield spec
    ATTACKS.unregister("shift")


def test_register_attack_reads_options_from_the_build_function(shift_registered):
    spec = shift_registered
    assert ATTACKS["shift"] is spec and isinstance(spec, AttackSpec)
    assert dict(spec.defaults) == {"scale": 1.0} and spec.label() == "shift"
    assert spec.settings(make_threat("linf", 0.1), {"scale": 0.5}) == {
        "name": "shift", "norm": "linf", "eps": 0.1, "scale": 0.5}
    assert parse_attack_names("Shift, fgsm,shift") == ["shift", "fgsm"]
    with pytest.raises(ConfigError, match="takes no option 'steps'"):
        spec.options(steps=3)
    with pytest.raises(ConfigError, match="already registered"):
        register_attack("shift", shift)
    with pytest.raises(ConfigError, match="need defaults"):
        register_attack("needs_size", lambda threat, size: None)
    assert "needs_size" not in ATTACKS


def test_register_attack_as_a_decorator_and_through_adrnet():
    @adrnet.register_attack("noop", description="returns x")
    def noop(threat):
        return lambda model, x, y: x.clone()
    try:
        assert ATTACKS["noop"] is noop and noop.label() == "noop" and dict(noop.defaults) == {}
    finally:
        ATTACKS.unregister("noop")
    with pytest.raises(ConfigError, match="unknown attack name"):
        parse_attack_names("noop")


def test_a_registered_attack_runs_in_adrnet_eval(tiny_toy_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["eval", str(tiny_toy_run), "--attacks", "shift,fgsm", "--eps", "0.3", "--n", "60",
            "--no-diagnostics", "--no-progress", "--out", str(out)]
    args = build_parser().parse_args(argv)  # parsed before the attack exists: names are
    register_attack("shift", shift)  # checked when the command runs, not by argparse
    try:
        assert args.func(args) == 0
        eval_help = build_parser()._subparsers._group_actions[0].choices["eval"].format_help()
        assert "shift" in eval_help
    finally:
        ATTACKS.unregister("shift")
    record = json.loads(out.read_text())
    assert list(record["attack_accuracy"]) == ["shift", "fgsm"]
    assert record["attack_settings"]["shift"] == {"name": "shift", "norm": "linf", "eps": 0.3,
                                                  "scale": 1.0}
    assert record["attack_settings"]["fgsm"]["step_size"] == 0.3
    # by hand: an example survives the shift when it is classified correctly at x and at x + 0.3
    model, cfg = adrnet.load_model(tiny_toy_run)
    from adrnet.eval.evaluate import load_eval_data
    x, y = load_eval_data(cfg, "test", 60, None)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        survives = clean & (model((x + 0.3).clamp(0, 1)).argmax(1) == y)
    assert 0 < int(survives.sum()) < int(clean.sum())  # the check is not vacuous
    assert record["attack_accuracy"]["shift"] == float(survives.float().mean())
    assert record["clean_accuracy"] == float(clean.float().mean())
    assert record["worst_case_accuracy"] <= record["attack_accuracy"]["shift"]
    # unregistered, the name is refused again, and the error lists what is registered
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown attack name(s) ['shift']" in err and "fgsm, pgd" in err


def test_eval_options_reach_the_attack_they_name(tiny_toy_run, tmp_path, shift_registered):
    from adrnet.eval import EvalOptions, evaluate_run
    common = dict(n=20, eps=0.2, diagnostics=False, progress=False, out=str(tmp_path / "e.json"))
    record = evaluate_run(tiny_toy_run, EvalOptions(attacks=("shift", "pgd"), steps=2,
                                                    attack_options={"shift": {"scale": 0.0}},
                                                    **common))
    assert record["attack_settings"]["shift"]["scale"] == 0.0
    assert record["attack_accuracy"]["shift"] == record["clean_accuracy"]  # a shift of 0
    assert record["attack_settings"]["pgd-2"]["steps"] == 2
    with pytest.raises(ConfigError, match="takes no option 'steps'"):
        evaluate_run(tiny_toy_run, EvalOptions(attacks=("shift",), attack_options={"shift": {"steps": 3}},
                                               **common))
    with pytest.raises(ConfigError, match="unknown attack 'shfit'"):
        evaluate_run(tiny_toy_run, EvalOptions(attacks=("shift",), attack_options={"shfit": {}},
                                               **common))


def test_bb_is_refused_before_any_attack_runs_without_foolbox(monkeypatch):
    monkeypatch.setitem(sys.modules, "foolbox", None)
    with pytest.raises(ConfigError, match=r"adrnet\[bb\]"):
        ATTACKS["bb"].make(make_threat("linf", 0.1))
