"""MART (Wang et al., ICLR 2020): hand-computed values, gradient masks, presets, two classes."""

import math

import pytest
import torch
import torch.nn.functional as F

from _tiny import TinyNet, tiny_batch
from _train_helpers import records, tiny_config
from adrnet.config import config_from_dict
from adrnet.objectives import OBJECTIVES, adr_term_names, make_objective, mart_bce, mart_kl

ADR_TERMS = adr_term_names()
from adrnet.train import train
from test_objectives import _loss_and_grads, _passes

LN3 = math.log(3.0)


def _two_by_two():
    """b = 2, C = 2: p0 = (1/2, 1/2), p1 = (3/4, 1/4), q0 = (1/4, 3/4), q1 = (1/2, 1/2), y = (0, 1)."""
    t = lambda rows: torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    return t([[0.0, 0.0], [LN3, 0.0]]), t([[0.0, LN3], [0.0, 0.0]]), torch.tensor([0, 1])


def test_boosted_ce_with_two_classes_is_twice_the_ce():
    # C = 2: the only wrong class has q_k = 1 − q_y, so BCE_i = −2 log q_iy.
    _, logits_adv, y = _two_by_two()
    value = mart_bce(logits_adv, y)
    assert value.item() == pytest.approx((-2 * math.log(0.25) - 2 * math.log(0.5)) / 2)
    assert value.item() == pytest.approx(3 * math.log(2.0))
    (grad,) = torch.autograd.grad(value, logits_adv)
    q = torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64)
    expected = 2 * (q - F.one_hot(y, 2)) / 2  # d(−2 log q_y)/df = 2(q − e_y), mean over b = 2
    assert torch.allclose(grad, expected)


def test_boosted_ce_picks_the_strongest_wrong_class():
    # q = (1/6, 2/6, 3/6): y = 0 -> −ln(1/6) − ln(1 − 1/2) = ln 12; y = 2 -> −ln(1/2) − ln(1 − 1/3) = ln 3.
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0]] * 2, dtype=torch.float64))
    assert mart_bce(logits[:1], torch.tensor([0])).item() == pytest.approx(math.log(12.0))
    assert mart_bce(logits[1:], torch.tensor([2])).item() == pytest.approx(math.log(3.0))


def test_weighted_kl_hand_value():
    logits_clean, logits_adv, y = _two_by_two()
    kl0 = 0.5 * math.log(2.0) + 0.5 * math.log(2 / 3)            # KL(p0 ‖ q0), weight 1 − 1/2
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)            # KL(p1 ‖ q1), weight 1 − 1/4
    assert mart_kl(logits_clean, logits_adv, y).item() == pytest.approx((0.5 * kl0 + 0.75 * kl1) / 2)


def test_gradient_masks_follow_the_paper_formula():
    torch.manual_seed(0)
    logits_clean = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    logits_adv = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    g = torch.autograd.grad(mart_bce(logits_adv, y), [logits_clean, logits_adv], allow_unused=True)
    assert g[0] is None and g[1].abs().sum() > 0          # BCE: adversarial pass only
    g = torch.autograd.grad(mart_kl(logits_clean, logits_adv, y), [logits_clean, logits_adv])
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0  # KL: both passes, nothing detached
    assert torch.autograd.gradcheck(lambda a: mart_bce(a, y), (logits_adv,))
    assert torch.autograd.gradcheck(lambda c, a: mart_kl(c, a, y), (logits_clean, logits_adv))


def test_the_weight_carries_gradient_as_in_the_reference():
    torch.manual_seed(1)
    logits_clean = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    logits_adv = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    (full,) = torch.autograd.grad(mart_kl(logits_clean, logits_adv, y), logits_clean)
    log_p, log_q = F.log_softmax(logits_clean, 1), F.log_softmax(logits_adv, 1)
    weight = 1 - log_p.exp().gather(1, y[:, None]).squeeze(1)
    detached = ((log_p.exp() * (log_p - log_q)).sum(1) * weight.detach()).mean()
    (partial,) = torch.autograd.grad(detached, logits_clean)
    assert not torch.allclose(full, partial)


def test_boosted_ce_stays_finite_when_a_wrong_class_is_certain():
    # q_k → 1 makes −log(1 − q_k) large, never infinite or NaN for finite logits
    logits = torch.tensor([[0.0, 80.0, 0.0]], requires_grad=True)
    value = mart_bce(logits, torch.tensor([0]))
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    # −log q_0 = 80 + log(1 + 2e^−80) ≈ 80; −log(q_0 + q_2) = 80 − ln 2
    assert value.item() == pytest.approx(160.0 - math.log(2.0), rel=1e-6)


def test_presets_attack_with_ce_and_weigh_kl_by_six():
    assert OBJECTIVES["mart"] == ({"mart_bce": 1.0, "mart_kl": 6.0}, "ce")
    weights, attack = OBJECTIVES["adr_mart"]
    assert attack == "ce" and set(weights) == {"mart_bce", "mart_kl", *ADR_TERMS}


def _hand_mart(logits_clean, logits_adv, y, beta=6.0):
    """MART's loss written out in float64 from the probabilities (no log-sum-exp):
    mean_i [−log q_iy − log(1 − max_{k≠y} q_ik)] + β mean_i KL(p_i ‖ q_i) (1 − p_iy)."""
    p, q = logits_clean.double().softmax(1), logits_adv.double().softmax(1)
    rows = torch.arange(len(y))
    q_y, p_y = q[rows, y], p[rows, y]
    q_wrong = q.clone()
    q_wrong[rows, y] = -1.0
    bce = -q_y.log() - (1 - q_wrong.max(1).values).log()
    kl = (p * (p.log() - q.log())).sum(1)
    return bce.mean() + beta * (kl * (1 - p_y)).mean()


def test_adr_mart_with_zero_adr_weights_equals_mart_exactly():
    zeros = {term: 0.0 for term in ADR_TERMS}
    adr = make_objective("adr_mart", **zeros)
    out_adr, grads_adr = _loss_and_grads(adr)
    out_ref, grads_ref = _loss_and_grads(make_objective("mart"))
    assert torch.equal(out_adr["loss"], out_ref["loss"])
    assert all(torch.equal(a, b) for a, b in zip(grads_adr, grads_ref))
    # MART itself, by hand from the two passes the objective ran
    model, y, (logits, _), (logits_adv, _) = _passes("ce")
    expected = _hand_mart(logits, logits_adv, y)
    assert float(out_adr["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    grads = torch.autograd.grad(expected.float(), list(model.parameters()))
    for got, want in zip(grads_adr, grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # an ADR weight acts linearly on top: entropy at 1e-3 adds 1e-3 · H(q)
    small, _ = _loss_and_grads(make_objective("adr_mart", **{**zeros, "entropy": 1e-3}))
    q = logits_adv.detach().double().softmax(1)
    h = float(-(q * q.log()).sum(1).mean())
    assert float((small["loss"] - out_adr["loss"]).detach()) == pytest.approx(1e-3 * h, abs=5e-6)


def test_objective_loss_is_bce_plus_beta_kl():
    torch.manual_seed(0)
    model = TinyNet(num_classes=2).eval()
    x, y = tiny_batch(n=6, num_classes=2)
    out = make_objective("mart")(model, x, y, lambda m, xb, yb: xb.flip(0))
    with torch.no_grad():
        lc, la = model(x), model(x.flip(0))
    expected = mart_bce(la, y) + 6.0 * mart_kl(lc, la, y)
    assert torch.allclose(out["loss"], expected, rtol=1e-5, atol=1e-6)
    assert float(out["loss"].detach()) == pytest.approx(float(_hand_mart(lc, la, y)), rel=1e-5)
    assert torch.allclose(out["mart_bce"], mart_bce(la, y), rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["mart_kl"], mart_kl(lc, la, y), rtol=1e-5, atol=1e-6)
    assert torch.equal(out["logits_clean"], lc) and torch.equal(out["logits_adv"], la)


def test_mart_trains_on_a_two_class_data_set(tmp_path):
    cfg = config_from_dict(tiny_config(data={"name": "moons", "train_subset": 256},
                                       objective={"name": "mart"}, train={"epochs": 3}))
    result = train(cfg, tmp_path / "mart")
    epochs = records(tmp_path / "mart")
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["mart_kl"]) for r in epochs)
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    assert result.last_record["val_acc_clean"] > 0.7  # two classes: chance is 0.5
