"""Properties of the threat models and the single PGD loop (Madry et al., 2018)."""

import math
import pytest
import torch
import torch.nn.functional as F

from _tiny import TinyNet, tiny_batch
from adrnet.attacks import THREATS, L2, Linf, attack_mode, cw_loss, fgsm, kl_loss, pgd
from adrnet.errors import ConfigError


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyNet().eval()


def _ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("norm", sorted(THREATS))
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_ball_and_box_and_leaves_input(model, norm, random_start):
    x, y = tiny_batch()
    x_before = x.clone()
    eps = 0.1 if norm == "linf" else 0.5
    x_adv = pgd(model, x, y, threat=THREATS[norm](eps), steps=5, step_size=eps / 2, random_start=random_start)
    delta = (x_adv - x).flatten(1)
    norms = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (norms <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x, x_before)
    assert not x_adv.requires_grad
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("threat", [Linf(0.1), L2(0.5)])
def test_random_init_is_inside_ball(threat):
    x = torch.rand(32, 1, 6, 6)
    start = threat.init(x)
    delta = (start - x).flatten(1)
    norms = delta.abs().amax(1) if isinstance(threat, Linf) else delta.norm(dim=1)
    assert (norms <= threat.eps + 1e-6).all() and start.min() >= 0 and start.max() <= 1
    assert norms.max() > 0


def test_pgd_raises_loss_above_clean_and_more_steps_help(model):
    x, y = tiny_batch(n=64)
    clean = _ce(model, x, y).mean()
    losses = []
    for steps in (1, 5, 20):
        torch.manual_seed(1)
        x_adv = pgd(model, x, y, threat=Linf(0.1), steps=steps, step_size=0.02)
        losses.append(_ce(model, x_adv, y).mean())
    assert losses[0] > clean
    assert losses[0] < losses[1] < losses[2]


def test_fgsm_equals_one_step_pgd_and_hand_formula(model):
    x, y = tiny_batch()
    eps = 0.05
    x_fgsm = fgsm(model, x, y, threat=Linf(eps))
    x_pgd = pgd(model, x, y, threat=Linf(eps), steps=1, step_size=eps, random_start=False)
    assert torch.equal(x_fgsm, x_pgd)
    x_req = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)
    assert torch.allclose(x_fgsm, (x + eps * grad.sign()).clamp(0, 1))


def test_restarts_keep_per_example_strongest(model):
    x, y = tiny_batch(n=64)
    threat = Linf(0.08)
    torch.manual_seed(3)
    first = pgd(model, x, y, threat=threat, steps=2, step_size=0.02)
    second = pgd(model, x, y, threat=threat, steps=2, step_size=0.02)
    torch.manual_seed(3)
    best = pgd(model, x, y, threat=threat, steps=2, step_size=0.02, restarts=2)

    def fooled(x_adv):
        with torch.no_grad():
            return model(x_adv).argmax(1) != y

    assert torch.equal(fooled(best), fooled(first) | fooled(second))
    both_same = fooled(first) == fooled(second)
    expected_loss = torch.maximum(_ce(model, first, y), _ce(model, second, y))
    assert torch.allclose(_ce(model, best, y)[both_same], expected_loss[both_same])


def test_targeted_attack_moves_towards_target(model):
    x, _ = tiny_batch(n=32)
    target = torch.full((32,), 3)
    with torch.no_grad():
        before = F.softmax(model(x), 1)[:, 3]
    x_adv = pgd(model, x, target, threat=Linf(0.2), steps=10, step_size=0.05, targeted=True)
    with torch.no_grad():
        after = F.softmax(model(x_adv), 1)[:, 3]
    assert (after > before).float().mean() > 0.9


def test_attack_runs_in_eval_mode_and_restores_modes():
    torch.manual_seed(0)
    net = TinyNet(batchnorm=True).train()
    net.head.eval()  # a submodule's own mode must survive the attack
    x, y = tiny_batch()
    stats = net.features[1].running_mean.clone()
    pgd(net, x, y, threat=Linf(0.1), steps=2, step_size=0.05)
    assert torch.equal(net.features[1].running_mean, stats)  # eval mode: BN stats untouched
    assert net.training and net.features[1].training and not net.head.training
    pgd(net, x, y, threat=Linf(0.1), steps=2, step_size=0.05, keep_train_mode=True)
    assert not torch.equal(net.features[1].running_mean, stats)  # train mode: stats move
    with attack_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and not net.head.training


def test_cw_and_kl_losses_match_hand_values():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(cw_loss(logits, y), torch.tensor([2.0, -4.0]))
    log3 = torch.log(torch.tensor(3.0))
    clean = torch.tensor([[0.0, 0.0]])
    adv = torch.tensor([[0.0, log3]])  # q = (1/4, 3/4), p = (1/2, 1/2)
    expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.5 * torch.log(torch.tensor(2 / 3))
    assert torch.allclose(kl_loss(adv, None, clean), expected.view(1))


def test_kl_attack_increases_divergence(model):
    x, y = tiny_batch(n=32)
    torch.manual_seed(0)
    x_adv = pgd(model, x, y, threat=Linf(0.1), steps=5, step_size=0.03, loss="kl")
    with torch.no_grad():
        clean_logits = model(x)
        start = kl_loss(model(x + 0.001 * torch.randn_like(x)), y, clean_logits).mean()
        end = kl_loss(model(x_adv), y, clean_logits).mean()
    assert end > 10 * start


def test_pgd_under_bf16_autocast_and_channels_last(model):
    x, y = tiny_batch(n=32)
    net = model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(net, x_cl, y, threat=Linf(0.1), steps=5, step_size=0.03)
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert _ce(net, x_adv, y).mean() > _ce(net, x, y).mean()


def test_bad_arguments_are_clear_errors(model):
    x, y = tiny_batch()
    with pytest.raises(ConfigError, match="eps"):
        Linf(-0.1)
    with pytest.raises(ConfigError, match="allowed"):
        pgd(model, x, y, threat=Linf(0.1), steps=1, step_size=0.1, loss="hinge")
    with pytest.raises(ConfigError, match="restarts"):
        pgd(model, x, y, threat=Linf(0.1), steps=1, step_size=0.1, restarts=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_threat_steps_equal_the_textbook_formulas_bit_for_bit(channels_last):
    # step/project use in-place operations on fresh temporaries: same values, same
    # memory format, inputs untouched (the trained weights of every run depend on it)
    from adrnet.attacks.threats import per_example_norm
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 5, 5, generator=gen)
    x_adv = (x + 0.2 * torch.randn(6, 3, 5, 5, generator=gen)).clamp(0, 1)
    grad = torch.randn(6, 3, 5, 5, generator=gen)
    if channels_last:
        x, x_adv, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, x_adv, grad))
    copies = [t.clone() for t in (x, x_adv, grad)]
    linf, l2 = Linf(0.1), L2(0.5)
    norm = lambda t: per_example_norm(t).clamp_min(1e-12)
    expected = {
        "linf step": x_adv + 0.03 * grad.sign(),
        "linf project": (x + (x_adv - x).clamp(-0.1, 0.1)).clamp(0, 1),
        "l2 step": x_adv + 0.03 * grad / norm(grad),
        "l2 project": (x + (x_adv - x) * (0.5 / norm(x_adv - x)).clamp(max=1.0)).clamp(0, 1),
    }
    got = {"linf step": linf.step(x_adv, grad, 0.03), "linf project": linf.project(x_adv, x),
           "l2 step": l2.step(x_adv, grad, 0.03), "l2 project": l2.project(x_adv, x)}
    for key, value in expected.items():
        assert torch.equal(got[key], value) and got[key].stride() == value.stride(), key
    assert all(torch.equal(a, b) for a, b in zip((x, x_adv, grad), copies))


def test_radius_is_bounded_by_the_input_box(model):
    """L∞ ε ≤ 1 and L2 ε ≤ √d on [0, 1]^d: larger radii allow every image and measure
    nothing (above float32's range they crashed the attack)."""
    x, y = tiny_batch()  # d = 64: the L2 diameter of the box is 8
    for bad in (1.0001, 1e30, 1e39, math.inf, math.nan, -0.1):
        with pytest.raises(ConfigError, match="L∞ eps must be a number from 0 to 1 "):
            Linf(bad)
    assert pgd(model, x, y, threat=Linf(1.0), steps=1, step_size=1.0).shape == x.shape
    assert pgd(model, x, y, threat=L2(8.0), steps=1, step_size=1.0).shape == x.shape
    with pytest.raises(ConfigError, match="L2 eps must be a number from 0 to 65536"):
        L2(1e39)  # no input known yet: the diameter of a box of 2^32 values
    with pytest.raises(ConfigError, match=r"from 0 to 8 \(√64, the diameter"):
        pgd(model, x, y, threat=L2(8.01), steps=1, step_size=1.0)  # checked on meeting x
