"""Multi-targeted PGD and Brendel & Bethge (`adrnet eval --attacks mt,bb`): properties,
the worst case, the foolbox plumbing and the missing-package message."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from adrnet.attacks import L2, Linf, multi_targeted, pgd
from adrnet.errors import ConfigError
from adrnet.eval import robust_accuracy
from adrnet.attacks import attack_settings, build_attacks, parse_attack_names
from adrnet.attacks.brendel_bethge import BrendelBethge, distances

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _norms(x_adv, x):
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1), delta.norm(dim=1)


@pytest.mark.parametrize("threat", [Linf(0.1), L2(1.0)])
def test_multi_targeted_stays_in_the_ball_and_leaves_the_input(tiny_trained_model, threat):
    model, x, y = tiny_trained_model
    x0 = x.clone()
    x_adv = multi_targeted(model, x, y, threat=threat, steps=5, step_size=threat.eps / 4)
    linf, l2 = _norms(x_adv, x)
    size = linf if isinstance(threat, Linf) else l2
    assert (size <= threat.eps + 1e-5).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x, x0)


def test_broken_by_multi_targeted_iff_some_targeted_run_breaks_it(tiny_trained_model):
    # Deterministic runs (no random start): MT's broken set is the union over the C − 1 targets.
    model, x, y = tiny_trained_model
    kwargs = dict(threat=Linf(0.08), steps=5, step_size=0.02, loss="cw", random_start=False)
    x_adv = multi_targeted(model, x, y, **kwargs)
    with torch.no_grad():
        broken_mt = model(x_adv).argmax(1) != y
        broken_any = torch.zeros_like(broken_mt)
        for offset in range(1, 10):
            xt = pgd(model, x, (y + offset) % 10, targeted=True, **kwargs)
            broken_any |= model(xt).argmax(1) != y
    assert torch.equal(broken_mt, broken_any)
    assert 0 < int(broken_mt.sum()) < len(y)  # the check is not vacuous


def test_two_classes_multi_targeted_is_untargeted_cw_pgd():
    # C = 2: the one target t = 1 − y; minimising f_y − f_t is maximising f_t − f_y.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    x, y = torch.rand(12, 1, 4, 4), torch.randint(0, 2, (12,))
    kwargs = dict(threat=Linf(0.1), steps=4, step_size=0.03, loss="cw", random_start=False)
    assert torch.equal(multi_targeted(model, x, y, **kwargs), pgd(model, x, y, **kwargs))


class ThreeWay(nn.Module):
    """Logits (0, 10 (x0 − 1/2), 10 (x1 − 1/2)) on x = (x0, x1): linear, so at L∞ radius 0.1
    an example of class 0 can be broken exactly when x0 > 0.4 (towards class 1) or
    x1 > 0.4 (towards class 2), and one of class 1 exactly when x0 < 0.6."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
            self.linear.bias.copy_(torch.tensor([0.0, -5.0, -5.0]))

    def forward(self, x, return_latent=False):
        return self.linear(x)


#: (x0, x1), label: broken via class 1, broken via class 2, robust, robust, wrong when
#: clean, robust (class 1). Every margin is ≥ 0.3 logits at the attacks' reach.
THREE_WAY = ([(0.45, 0.20), (0.20, 0.45), (0.20, 0.20), (0.30, 0.10), (0.70, 0.20), (0.80, 0.10)],
             [0, 0, 0, 0, 0, 1])
#: What each flag must be on THREE_WAY, by hand.
THREE_WAY_CLEAN = [True, True, True, True, False, True]
THREE_WAY_ROBUST = [False, False, True, True, False, True]


def test_mt_in_the_suite_and_worst_case(tiny_trained_model):
    model, x, y = tiny_trained_model
    assert parse_attack_names("pgd,mt,bb") == ["pgd", "mt", "bb"]
    settings = attack_settings("mt", norm="linf", eps=0.1, steps=5)
    assert (settings.label, settings.loss, settings.random_start) == ("mt-5", "cw", True)
    fns, recorded = build_attacks(["pgd", "mt"], norm="linf", eps=0.1, steps=5)
    assert set(fns) == set(recorded) == {"pgd-5", "mt-5"}
    result = robust_accuracy(model, x, y, fns)
    assert result.attack_accuracy["mt-5"] < result.clean_accuracy
    # on a model whose breakable examples are known, the counts are exact
    torch.manual_seed(0)
    x3, y3 = torch.tensor(THREE_WAY[0]), torch.tensor(THREE_WAY[1])
    result = robust_accuracy(ThreeWay().eval(), x3, y3, fns, batch_size=4)
    assert result.correct["clean"].tolist() == THREE_WAY_CLEAN
    assert result.correct["mt-5"].tolist() == result.correct["pgd-5"].tolist() == THREE_WAY_ROBUST
    assert result.correct["worst_case"].tolist() == THREE_WAY_ROBUST
    assert result.clean_accuracy == pytest.approx(5 / 6)
    assert result.attack_accuracy == {"pgd-5": pytest.approx(3 / 6), "mt-5": pytest.approx(3 / 6)}
    assert result.worst_case_accuracy == pytest.approx(3 / 6)


# ---------- Brendel & Bethge: the protocol around foolbox, with foolbox's part faked ----------
class FakeBB:
    """Stands in for foolbox's B&B class: records its call and walks halfway back to x."""

    calls: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def run(self, fmodel, x, criterion, *, starting_points):
        FakeBB.calls.append((type(self).__name__, self.kwargs, len(x)))
        return x + (starting_points - x) / 2


class FakeLinf(FakeBB):
    pass


class FakeL2(FakeBB):
    pass


@pytest.fixture
def fake_foolbox(monkeypatch):
    fb = pytest.importorskip("foolbox")
    pytest.importorskip("numba")
    monkeypatch.setattr(fb.attacks, "LinfinityBrendelBethgeAttack", FakeLinf)
    monkeypatch.setattr(fb.attacks, "L2BrendelBethgeAttack", FakeL2)
    FakeBB.calls = []
    return FakeBB.calls


@pytest.mark.parametrize("norm,eps,cls", [("linf", 0.1, "FakeLinf"), ("l2", 1.0, "FakeL2")])
def test_bb_uses_the_norms_own_variant_from_the_pgd_start(tiny_trained_model, fake_foolbox,
                                                         norm, eps, cls):
    model, x, y = tiny_trained_model
    attack = BrendelBethge(norm, eps)
    torch.manual_seed(0)
    x_adv = attack(model, x, y)
    (name, kwargs, n_walked), = fake_foolbox
    assert name == cls and kwargs["steps"] == 200
    summary = attack.summary()
    assert summary["attacked"] == len(y) and summary["started"] == n_walked > 0
    walked = torch.isfinite(attack.distances[0])
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert not fooled[~walked].any()  # no adversarial start: no B&B, nothing broken
    # FakeBB halves the start's perturbation; what it reports is that distance
    assert (attack.distances[0][walked] <= eps / 2 * (1 + 1e-5)).all()
    assert (distances(x_adv, x, norm) <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_bb_settings_follow_the_adr_protocol():
    s = BrendelBethge("linf", 0.3).settings()
    assert (s["steps"], s["init"], s["init_step_size"]) == (200, "pgd-20", 0.15)


def test_bb_joins_the_worst_case(tiny_trained_model, fake_foolbox):
    model, x, y = tiny_trained_model
    fns, settings = build_attacks(["pgd", "bb"], norm="linf", eps=0.1, steps=5)
    assert settings["bb"]["source"] == "foolbox"
    result = robust_accuracy(model, x, y, fns)
    assert result.attack_accuracy["bb"] < result.clean_accuracy  # B&B's points do break some
    # on a model whose breakable examples are known: B&B walks (FakeBB: halfway back) from
    # the PGD start of the clean-correct examples that start breaks, keeps the start where
    # the walked point is not adversarial, and so breaks exactly the breakable ones, which
    # the worst case counts
    fake_foolbox.clear()
    torch.manual_seed(0)
    x3, y3 = torch.tensor(THREE_WAY[0]), torch.tensor(THREE_WAY[1])
    bb = BrendelBethge("linf", 0.1)
    result = robust_accuracy(ThreeWay().eval(), x3, y3, {"bb": bb})
    assert [n for _, _, n in fake_foolbox] == [2]  # the 2 breakable of 5 clean-correct
    assert result.correct["bb"].tolist() == THREE_WAY_ROBUST
    assert result.correct["worst_case"].tolist() == THREE_WAY_ROBUST
    assert result.worst_case_accuracy == pytest.approx(3 / 6)
    assert bb.summary()["started"] == bb.summary()["within_eps"] == 2


def test_missing_foolbox_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "foolbox", None)
    with pytest.raises(ConfigError, match=r"adrnet\[bb\]"):
        build_attacks(["bb"], norm="linf", eps=0.1)


def test_bb_refuses_other_norms():
    with pytest.raises(ConfigError, match="norm"):
        BrendelBethge("l1", 0.1)


@pytest.mark.slow
def test_real_bb_only_shrinks_the_pgd_start(tiny_trained_model):
    # Needs foolbox's numba optimiser (~30 s to compile). B&B moves only towards x, so at
    # the start's own radius it breaks exactly the examples the PGD-20 start broke.
    pytest.importorskip("foolbox")
    pytest.importorskip("numba")
    model, x, y = tiny_trained_model
    x, y = x[:16], y[:16]
    torch.manual_seed(0)
    start = BrendelBethge("linf", 0.08)._start(model, x, y)
    torch.manual_seed(0)
    attack = BrendelBethge("linf", 0.08, steps=20)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1) != y, model(start).argmax(1) != y)
    found = torch.isfinite(attack.distances[0])
    assert (attack.distances[0][found] <= distances(start, x, "linf")[found] + 1e-6).all()
