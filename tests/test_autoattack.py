"""The AutoAttack adapter (pyautoattack): flags, explicit device, resumable state file."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import adrnet.attacks.autoattack as aa_module
from adrnet.errors import ConfigError
from adrnet.attacks.autoattack import autoattack_eval

pytestmark = pytest.mark.usefixtures("torch_one_thread")
EPS = 0.08


@pytest.fixture
def twenty(tiny_trained_model):
    model, x, y = tiny_trained_model
    return model, x[:20], y[:20]


def test_custom_apgd_ce(twenty):
    model, x, y = twenty
    x_before = x.clone()
    result = autoattack_eval(model, x, y, eps=EPS, version="custom", attacks=["apgd-ce"], batch_size=8)
    assert torch.equal(x, x_before)
    assert result.robust.dtype == torch.bool and result.robust.shape == (20,)
    assert not (result.robust & ~result.clean_correct).any()  # robust implies clean-correct
    assert result.accuracy < float(result.clean_correct.float().mean())  # the attack does something
    assert list(result.accuracy_after) == ["apgd-ce"]
    assert result.settings["device"] == "cpu" and result.settings["version"] == "custom"


def test_standard_version_runs_all_four_and_counts_exactly_the_verified_breaks(twenty, monkeypatch):
    """Every adversarial batch the package returns is recorded and checked here, apart
    from adrnet's bookkeeping: an example is robust exactly when it is clean-correct and
    no returned image of it (inside the ε-ball and [0, 1]) is misclassified, and each
    attack's accuracy is the share left robust after it and the attacks before it."""
    model, x, y = twenty
    real, returned = aa_module._attack_batch, []

    def recording(adversary, attack, xb, yb, device):
        x_adv = real(adversary, attack, xb, yb, device)
        returned.append((attack, xb.clone(), x_adv.clone()))
        return x_adv
    monkeypatch.setattr(aa_module, "_attack_batch", recording)
    result = autoattack_eval(model, x, y, eps=EPS, version="standard", batch_size=20)
    assert list(result.accuracy_after) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    index = {row.numpy().tobytes(): i for i, row in enumerate(x)}
    with torch.no_grad():
        robust = model(x).argmax(1) == y
        assert torch.equal(result.clean_correct, robust)
        expected_after = {}
        for attack in result.accuracy_after:  # in the order they ran
            for _, xb, x_adv in (batch for batch in returned if batch[0] == attack):
                assert (x_adv - xb).abs().max() <= EPS + 1e-6 and 0 <= x_adv.min() <= x_adv.max() <= 1
                rows = torch.tensor([index[row.numpy().tobytes()] for row in xb])
                assert robust[rows].all()  # only examples still robust are attacked
                robust[rows] &= model(x_adv).argmax(1) == y[rows]
            expected_after[attack] = robust.float().mean().item()
    assert torch.equal(result.robust, robust)
    assert result.accuracy_after == pytest.approx(expected_after)
    assert result.accuracy < result.clean_correct.float().mean()  # the attacks break some


def test_resume_from_state_file(twenty, tmp_path, monkeypatch):
    model, x, y = twenty
    kwargs = dict(eps=EPS, version="custom", attacks=["apgd-ce", "square"], batch_size=5,
                  square_queries=100)
    full = autoattack_eval(model, x, y, **kwargs)
    state = tmp_path / "aa_state.json"
    real = aa_module._attack_batch
    calls = []

    def crash_after_one(*args):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(aa_module, "_attack_batch", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        autoattack_eval(model, x, y, state_path=state, **kwargs)
    assert sum(json.loads(state.read_text())["attacked"]["apgd-ce"]) == 5
    monkeypatch.setattr(aa_module, "_attack_batch", real)
    resumed = autoattack_eval(model, x, y, state_path=state, **kwargs)
    assert torch.equal(resumed.robust, full.robust)

    def must_not_run(*args):
        raise AssertionError("a finished evaluation must not attack again")
    monkeypatch.setattr(aa_module, "_attack_batch", must_not_run)
    again = autoattack_eval(model, x, y, state_path=state, **kwargs)
    assert torch.equal(again.robust, full.robust)


def test_state_file_of_another_evaluation_is_refused(twenty, tmp_path):
    model, x, y = twenty
    state = tmp_path / "s.json"
    autoattack_eval(model, x, y, eps=EPS, version="custom", attacks=["apgd-ce"], state_path=state)
    with pytest.raises(ConfigError, match="belongs to another evaluation"):
        autoattack_eval(model, x, y, eps=2 * EPS, version="custom", attacks=["apgd-ce"], state_path=state)


def test_global_rng_untouched(twenty):
    model, x, y = twenty
    torch.manual_seed(3)
    state = torch.get_rng_state()
    autoattack_eval(model, x, y, eps=EPS, version="custom", attacks=["apgd-ce"], seed=7)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kwargs, message", [
    (dict(version="custom"), "exactly when version='custom'"),
    (dict(version="standard", attacks=["apgd-ce"]), "exactly when version='custom'"),
    (dict(version="custom", attacks=["deepfool"]), "unknown AutoAttack attack"),
    (dict(version="standard", norm="linf2"), "norm must be"),
    (dict(version="standard", eps=-1.0), "eps must be"),
])
def test_bad_settings(twenty, kwargs, message):
    model, x, y = twenty
    with pytest.raises(ConfigError, match=message):
        autoattack_eval(model, x, y, **{"eps": EPS, **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_without_cuda_is_a_clear_error(twenty):
    model, x, y = twenty
    with pytest.raises(ConfigError, match="no CUDA device"):
        autoattack_eval(model, x, y, eps=EPS, device="cuda")


def test_too_few_classes_for_targeted_dlr(twenty):
    model, x, y = twenty
    three = torch.nn.Sequential(model, torch.nn.Linear(10, 3))
    with pytest.raises(ConfigError, match="more classes"):
        autoattack_eval(three, x, y % 3, eps=EPS, version="standard")


def test_runs_in_eval_mode_and_restores_mode(twenty):
    model, x, y = twenty
    with_dropout = torch.nn.Sequential(model, torch.nn.Dropout(0.9))
    reference = autoattack_eval(with_dropout.eval(), x, y, eps=EPS, version="custom", attacks=["apgd-ce"])
    with_dropout.train()
    result = autoattack_eval(with_dropout, x, y, eps=EPS, version="custom", attacks=["apgd-ce"])
    assert with_dropout.training and with_dropout[1].training
    assert torch.equal(result.robust, reference.robust)  # dropout was off during the attack


def test_a_resume_keeps_the_accuracy_each_finished_attack_left(twenty, tmp_path, monkeypatch):
    """After an interruption during a later attack, an earlier attack's "accuracy after"
    is the one it left, not one recomputed with the later attack's results in it."""
    model, x, y = twenty
    kwargs = dict(eps=EPS, version="custom", attacks=["apgd-ce", "square"], batch_size=5)
    squares, interrupt = [], [True]

    def fake(adversary, attack, xb, yb, device):  # apgd-ce: no effect; square: inverts
        squares.extend([1] if attack == "square" else [])
        if len(squares) == 2 and interrupt[0]:
            raise KeyboardInterrupt
        return xb if attack == "apgd-ce" else 1 - xb
    monkeypatch.setattr(aa_module, "_attack_batch", fake)
    state = tmp_path / "aa_state.json"
    with pytest.raises(KeyboardInterrupt):
        autoattack_eval(model, x, y, state_path=state, **kwargs)
    saved = json.loads(state.read_text())
    clean = aa_module.predict(model, x, 20).eq(y)
    assert saved["accuracy_after"] == {"apgd-ce": float(clean.float().mean())}
    assert sum(saved["robust"]) < int(clean.sum())  # the premise: square's first batch hit
    interrupt[0] = False
    resumed = autoattack_eval(model, x, y, state_path=state, **kwargs)
    uninterrupted = autoattack_eval(model, x, y, **kwargs)
    assert resumed.accuracy_after == uninterrupted.accuracy_after
    assert resumed.accuracy_after["apgd-ce"] == float(clean.float().mean())


def test_a_resume_reports_the_time_earlier_calls_spent(twenty, tmp_path, monkeypatch):
    """A resumed evaluation knows how long its earlier calls attacked the batches they
    saved, so its reported time is the whole cost, not only that of the last call."""
    model, x, y = twenty
    clock, batches = [0.0], []

    def two_seconds_each(adversary, attack, xb, yb, device):
        batches.append(len(xb))
        if len(batches) == 3:
            raise KeyboardInterrupt  # the third batch is lost, and so is its time
        clock[0] += 2.0
        return xb
    monkeypatch.setattr(aa_module, "_attack_batch", two_seconds_each)
    monkeypatch.setattr(aa_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    kwargs = dict(eps=EPS, version="custom", attacks=["apgd-ce"], batch_size=5)
    state = tmp_path / "aa_state.json"
    with pytest.raises(KeyboardInterrupt):
        autoattack_eval(model, x, y, state_path=state, **kwargs)
    saved = json.loads(state.read_text())
    assert saved.pop("seconds") == 4.0
    saved.pop("digest")  # kept since after the time was: a file without either is an older adrnet's
    legacy = tmp_path / "saved_before_the_time_was_kept.json"
    legacy.write_text(json.dumps(saved))
    assert autoattack_eval(model, x, y, state_path=state, **kwargs).resumed_seconds == 4.0
    assert autoattack_eval(model, x, y, state_path=legacy, **kwargs).resumed_seconds == 0.0
    assert autoattack_eval(model, x, y, **kwargs).resumed_seconds == 0.0
