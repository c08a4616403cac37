"""ADR's stabilising options: latent normalisation, weight warm-up, the TF weighting.

Each option is off by default and then leaves the reference maths untouched; when on,
it computes exactly what docs/training.md says (checked against naive sums)."""

import functools

import pytest
import torch
import torch.nn.functional as F

from _tiny import TinyNet, tiny_batch
from adrnet.attacks import Linf, pgd
from adrnet.config import load_config
from adrnet.errors import ConfigError
from adrnet.objectives import OBJECTIVES, adr_term_names, adr_terms, make_objective

ADR_TERMS = adr_term_names()
from adrnet.train.schedules import adr_factor

ATTACK = functools.partial(pgd, threat=Linf(0.1), steps=3, step_size=0.03)


def _run(objective, seed=0):
    torch.manual_seed(seed)
    model = TinyNet(batchnorm=True, dropout=0.2).train()
    x, y = tiny_batch(n=12)
    torch.manual_seed(seed + 1)
    out = objective(model, x, y, ATTACK)
    grads = torch.autograd.grad(out["loss"], list(model.parameters()))
    return model, x, y, out, grads


def test_options_off_give_bit_identical_loss_and_gradients():
    plain = make_objective("adr_pgd")
    explicit = make_objective("adr_pgd", latent_norm="none").with_adr_factor(1.0)
    assert explicit.weights == plain.weights and explicit.latent_norm == "none"
    model, x, y, out_a, grads_a = _run(plain)
    *_, out_b, grads_b = _run(explicit)
    assert torch.equal(out_a["loss"], out_b["loss"])
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    # and both are the reference maths on the raw (un-normalised) latents, full ADR
    # weights: CE(clean) + CE(adv) + the five ADR terms, with the same attack, dropout
    # masks and BatchNorm batch statistics as the objective's passes
    torch.manual_seed(0)
    model = TinyNet(batchnorm=True, dropout=0.2).train()
    torch.manual_seed(1)
    x_adv = ATTACK(model, x, y)
    logits, z = model(x, return_latent=True)
    logits_adv, z_adv = model(x_adv, return_latent=True)
    expected = (F.cross_entropy(logits, y) + F.cross_entropy(logits_adv, y)
                + sum(adr_terms(z, logits, z_adv, logits_adv, y).values()))
    assert torch.allclose(out_a["loss"], expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(expected, list(model.parameters()))
    for got, want in zip(grads_a, grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _naive_compactness(model, x, x_adv, y, how):
    """Both compactness terms as explicit loops over normalised latents."""
    with torch.no_grad():
        z, z_adv = model(x, return_latent=True)[1], model(x_adv, return_latent=True)[1]
    norm = lambda v: v / v.norm() * (v.numel() ** 0.5 if how == "rms" else 1.0)  # noqa: E731
    b, k = z.shape
    local = sum((norm(z[i]) - norm(z_adv[i])).abs().sum() / k for i in range(b)) / b
    total = 0.0
    for i in range(b):
        for j in range(b):
            w = 1.0 if y[i] == y[j] else 1 - 1 / 0.99
            total += w * (norm(z[j]) - norm(z_adv[i])).abs().sum() / k
    return local, total / b ** 2


@pytest.mark.parametrize("how", ["l2", "rms"])
def test_latent_norm_compactness_equals_naive_pairwise_sums(how):
    model = TinyNet().eval()
    x, y = tiny_batch(n=10)
    torch.manual_seed(0)
    out = make_objective("adr_pgd", latent_norm=how)(model, x, y, ATTACK)
    torch.manual_seed(0)
    x_adv = ATTACK(model, x, y)
    local, pairwise = _naive_compactness(model, x, x_adv, y, how)
    assert torch.allclose(out["local_compactness"], local, rtol=1e-5)
    assert torch.allclose(out["global_compactness"], pairwise, rtol=1e-5)
    reference = make_objective("adr_pgd")
    torch.manual_seed(0)
    plain = reference(model, x, y, ATTACK)
    for name in ("local_smoothness", "global_smoothness", "entropy", "ce_adv", "ce_clean"):
        assert torch.equal(out[name], plain[name]), name  # only the compactness terms change


@pytest.mark.parametrize("how", ["l2", "rms"])
def test_latent_norm_makes_compactness_blind_to_the_latent_scale(how):
    """Scaling z by any positive factor leaves the normalised terms unchanged: the
    degree of freedom that lets the reference terms blow the latents up is gone."""
    from adrnet.objectives.objective import _normalised
    z, z_adv = torch.rand(6, 5) + 0.1, torch.rand(6, 5) + 0.1
    logits = torch.zeros(6, 3)
    for factor in (1.0, 1e3):
        _, a = _normalised((logits, z * factor), how)
        _, b = _normalised((logits, z_adv * factor), how)
        value = (a - b).abs().mean()
        if factor == 1.0:
            first = value
    assert torch.allclose(value, first, rtol=1e-5)


def test_latent_norm_rms_has_unit_root_mean_square_and_keeps_directions():
    from adrnet.objectives.objective import _normalised
    z = torch.tensor([[3.0, 4.0, 0.0, 0.0]])
    _, rms = _normalised((None, z), "rms")
    _, l2 = _normalised((None, z), "l2")
    assert torch.allclose(l2, torch.tensor([[0.6, 0.8, 0.0, 0.0]]))
    assert torch.allclose(rms, torch.tensor([[1.2, 1.6, 0.0, 0.0]]))  # √4 · z/‖z‖ = 2 · (0.6, 0.8)
    assert torch.allclose(rms.pow(2).mean(), torch.tensor(1.0))


def test_with_adr_factor_scales_only_the_adr_weights():
    objective = make_objective("adr_pgd", entropy=0.5)
    half = objective.with_adr_factor(0.5)
    assert half.weights["ce_clean"] == 1.0 and half.weights["ce_adv"] == 1.0
    assert half.weights["entropy"] == 0.25
    assert all(half.weights[n] == 0.5 for n in ADR_TERMS if n != "entropy")
    assert objective.with_adr_factor(1.0) is objective


def test_adr_warmup_gives_the_expected_weight_factor_at_a_given_step():
    cfg = load_config(None, ["objective.adr_warmup_epochs=2.0"]).objective
    steps_per_epoch = 10
    # progress counted at the end of the step: step 4 of epoch 0 ends at 0.5 epochs
    assert adr_factor(cfg, 0, 4, steps_per_epoch) == pytest.approx(0.25)
    assert adr_factor(cfg, 1, 4, steps_per_epoch) == pytest.approx(0.75)
    assert adr_factor(cfg, 1, 9, steps_per_epoch) == 1.0
    assert adr_factor(cfg, 5, 0, steps_per_epoch) == 1.0
    off = load_config(None).objective
    assert adr_factor(off, 0, 0, steps_per_epoch) == 1.0


def test_tf_preset_halves_the_two_cross_entropies_and_keeps_the_adr_terms():
    weights, attack = OBJECTIVES["adr_pgd_tf"]
    assert weights["ce_clean"] == weights["ce_adv"] == 0.5 and attack == "ce"
    assert all(weights[n] == 1.0 for n in ADR_TERMS)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="latent_norm"):
        make_objective("adr_pgd", latent_norm="cosine")
    with pytest.raises(ConfigError, match="latent_norm"):
        load_config(None, ["objective.latent_norm=batch"])
    with pytest.raises(ConfigError, match="adr_warmup_epochs"):
        load_config(None, ["objective.adr_warmup_epochs=-1"])
    cfg = load_config(None, ["objective.latent_norm=rms", "objective.name=adr_pgd_tf"])
    assert cfg.objective.latent_norm == "rms" and cfg.objective.name == "adr_pgd_tf"


def test_training_with_a_long_adr_warmup_stays_next_to_its_base(tmp_path):
    """Over the first steps of a 1000-epoch warm-up the ADR weights are ~0, so a run ends
    near the base run (all ADR weights 0), and clearly away from un-warmed ADR."""
    from _train_helpers import tiny_config, weights
    from adrnet.config import config_from_dict
    from adrnet.train import train
    runs = {"base": {"weights": {n: 0.0 for n in ADR_TERMS}},
            "warm": {"adr_warmup_epochs": 1000.0, "latent_norm": "rms"},
            "adr": {"latent_norm": "rms"}}
    final = {}
    for name, objective in runs.items():
        raw = tiny_config(train={"epochs": 1}, objective={"name": "adr_pgd", **objective})
        train(config_from_dict(raw), tmp_path / name)
        final[name] = torch.cat([w.flatten() for w in weights(tmp_path / name).values()])
    near, far = (final["warm"] - final["base"]).norm(), (final["adr"] - final["base"]).norm()
    assert 0 < near < far / 10
