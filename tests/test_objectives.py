"""Objectives as weighted compositions: presets, ablation controls, pass skipping."""

import functools

import pytest
import torch
import torch.nn.functional as F

from _tiny import TinyNet, tiny_batch
from adrnet.attacks import Linf, pgd
from adrnet.errors import ConfigError
from adrnet.objectives import (OBJECTIVES, TERMS, Objective, adr_term_names, adr_terms, log_labels,
                               ce_adv, ce_clean, entropy, global_compactness, global_smoothness,
                               local_compactness, local_smoothness, make_objective)


class CountingNet(TinyNet):
    """TinyNet that counts forward calls made with return_latent=True (the objective's passes)."""

    def __init__(self):
        super().__init__()
        self.passes = 0

    def forward(self, x, return_latent=False):
        self.passes += int(return_latent)
        return super().forward(x, return_latent)


def _attack(loss="ce"):
    return functools.partial(pgd, threat=Linf(0.1), steps=3, step_size=0.03, loss=loss)


def _loss_and_grads(objective, seed=0):
    torch.manual_seed(seed)
    model = TinyNet(batchnorm=True, dropout=0.2).train()
    x, y = tiny_batch(n=12)
    torch.manual_seed(seed + 1)
    out = objective(model, x, y, _attack(objective.attack_loss))
    grads = torch.autograd.grad(out["loss"], list(model.parameters()), allow_unused=True)
    return out, grads


def _passes(attack_loss="ce", seed=0):
    """The model, labels and (logits, z) of the clean and adversarial passes exactly as
    ``_loss_and_grads`` makes them (same attack, dropout masks and BatchNorm batches),
    for objectives that run both passes."""
    torch.manual_seed(seed)
    model = TinyNet(batchnorm=True, dropout=0.2).train()
    x, y = tiny_batch(n=12)
    torch.manual_seed(seed + 1)
    x_adv = _attack(attack_loss)(model, x, y)
    clean = model(x, return_latent=True)
    adv = model(x_adv, return_latent=True)
    return model, y, clean, adv


def _hand_kl(logits_clean, logits_adv):
    """Σ_i KL(p_i ‖ q_i) / b, written out."""
    p, q = logits_clean.softmax(1), logits_adv.softmax(1)
    return (p * (p.log() - q.log())).sum(1).mean()


def _hand_entropy(logits):
    q = logits.softmax(1)
    return -(q * q.log()).sum(1).mean()


@pytest.mark.parametrize("name,base", [("adr_pgd", None), ("adr_trades", "trades")])
def test_adr_with_zero_adr_weights_equals_its_base_exactly(name, base):
    zeros = {term: 0.0 for term in adr_term_names()}
    adr = make_objective(name, **zeros)
    if base is None:  # the reference's own baseline: ce_clean + ce_adv
        reference = make_objective("pgd_at", ce_clean=1.0)
    else:
        reference = make_objective(base, trades_kl=OBJECTIVES[name][0]["trades_kl"])
    out_adr, grads_adr = _loss_and_grads(adr)
    out_ref, grads_ref = _loss_and_grads(reference)
    assert torch.equal(out_adr["loss"], out_ref["loss"])
    for g_adr, g_ref in zip(grads_adr, grads_ref):
        assert (g_adr is None and g_ref is None) or torch.equal(g_adr, g_ref)
    # the base itself, by hand from the two passes: CE(clean) + CE(adv) for ADR-PGD,
    # CE(clean) + 1 · KL(p ‖ q) for ADR-TRADES (β = 1 in the ADR reference)
    model, y, (logits, _), (logits_adv, _) = _passes(adr.attack_loss)
    second = (F.cross_entropy(logits_adv, y) if base is None
              else OBJECTIVES[name][0]["trades_kl"] * _hand_kl(logits, logits_adv))
    expected = F.cross_entropy(logits, y) + second
    assert torch.allclose(out_adr["loss"], expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(expected, list(model.parameters()))
    for got, want in zip(grads_adr, grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # and an ADR weight acts linearly: entropy at 1e-3 adds 1e-3 · H(q) to the base loss
    small, _ = _loss_and_grads(make_objective(name, **{**zeros, "entropy": 1e-3}))
    extra = float((small["loss"] - out_adr["loss"]).detach())
    h = float(_hand_entropy(logits_adv.detach()))
    assert extra == pytest.approx(1e-3 * h, abs=5e-6)
    assert float(small["entropy"]) == pytest.approx(h, rel=1e-5)


def test_trades_with_zero_beta_is_clean_ce_and_runs_no_attack():
    model = CountingNet().eval()
    x, y = tiny_batch()

    def forbidden_attack(*args):
        raise AssertionError("attack must not run when no term needs it")

    out = make_objective("trades", trades_kl=0.0)(model, x, y, forbidden_attack)
    assert torch.allclose(out["loss"], F.cross_entropy(model(x), y))
    assert model.passes == 1


def test_pgd_at_skips_the_clean_pass():
    model = CountingNet().eval()
    x, y = tiny_batch()
    out = make_objective("pgd_at")(model, x, y, _attack())
    assert model.passes == 1 and "logits_clean" not in out and "logits_adv" in out


def test_loss_is_the_weighted_sum_of_reported_terms():
    weights = {"ce_clean": 0.5, "ce_adv": 0.5, "local_compactness": 2.0, "entropy": 0.3,
               "global_smoothness": 1.5, "global_compactness": 0.7, "local_smoothness": 1.1}
    out, grads = _loss_and_grads(Objective(weights))
    assert set(out) == {"loss", "logits_clean", "logits_adv", *weights}
    # each term from the public term functions on the two passes' (logits, z)
    model, y, (logits, z), (logits_adv, z_adv) = _passes()
    probs = F.softmax(logits.detach(), dim=1)
    terms = {"ce_clean": ce_clean(logits, y), "ce_adv": ce_adv(logits_adv, y),
             "local_compactness": local_compactness(z, z_adv),
             "local_smoothness": local_smoothness(logits, logits_adv),
             "global_compactness": global_compactness(z_adv, z, y, y, 0.99),
             "global_smoothness": global_smoothness(logits_adv, probs, y, y, 0.99),
             "entropy": entropy(logits_adv)}
    for name, value in terms.items():
        assert torch.allclose(out[name], value, rtol=1e-5, atol=1e-6), name
    expected = sum(w * terms[name] for name, w in weights.items())
    assert torch.allclose(out["loss"], expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, torch.autograd.grad(expected, list(model.parameters()))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_adr_terms_in_objective_match_public_adr_terms():
    model = TinyNet().eval()
    x, y = tiny_batch()
    torch.manual_seed(0)
    out = make_objective("adr_pgd")(model, x, y, _attack())
    torch.manual_seed(0)
    x_adv = _attack()(model, x, y)
    expected = adr_terms(*model(x, return_latent=True)[::-1], *model(x_adv, return_latent=True)[::-1], y)
    for name, value in expected.items():
        assert torch.allclose(out[name], value, atol=1e-6)


def test_concat_pass_equals_two_passes_without_batchnorm():
    model = TinyNet().eval()
    x, y = tiny_batch()
    results = []
    for concat in (False, True):
        torch.manual_seed(0)
        results.append(make_objective("adr_pgd", concat=concat)(model, x, y, _attack())["loss"])
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_gather_of_own_batch_changes_nothing():
    model = TinyNet().eval()
    x, y = tiny_batch()
    outs = []
    for gather in (None, lambda t: t.clone()):
        torch.manual_seed(0)
        outs.append(make_objective("adr_pgd")(model, x, y, _attack(), gather=gather)["loss"])
    assert torch.equal(outs[0], outs[1])


def test_trades_presets_attack_with_kl_and_pgd_with_ce():
    assert make_objective("trades").attack_loss == "kl"
    assert make_objective("adr_trades").attack_loss == "kl"
    assert make_objective("pgd_at").attack_loss == "ce"
    assert make_objective("trades").weights["trades_kl"] == 6.0


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown objective 'madry'; choose one of pgd_at, trades"):
        make_objective("madry")
    with pytest.raises(ConfigError, match="lambda_typo"):
        make_objective("adr_pgd", lambda_typo=1.0)
    with pytest.raises(ConfigError, match="scale"):
        make_objective("adr_pgd", scale=0.0)


@pytest.mark.parametrize("name", TERMS)
def test_an_objective_of_one_term_runs_the_passes_its_registry_entry_names(name):
    term, attacked, gathered = TERMS[name], [], []
    model = CountingNet().eval()
    x, y = tiny_batch()

    def attack(m, xb, yb):
        attacked.append(1)
        return (xb + 0.05).clamp(0, 1)

    def gather(t):
        gathered.append(1)
        return t

    out = Objective({name: 1.0})(model, x, y, attack, gather=gather)
    assert model.passes == term.clean + term.adversarial
    assert bool(attacked) == term.adversarial and bool(gathered) == (term.scope == "global")
    assert ("logits_clean" in out) == term.clean and ("logits_adv" in out) == term.adversarial
    scalars = set(out) - {"logits_clean", "logits_adv"}
    assert scalars == {"loss", name}
    assert torch.isfinite(out[name]) and torch.equal(out["loss"], out[name])


@pytest.mark.parametrize("preset", OBJECTIVES)
def test_a_preset_reports_its_weighted_terms_and_their_weighted_sum(preset):
    """Each registered preset returns exactly its terms of weight > 0 (each with a log
    label of its own) and the loss is their weighted sum with the preset's weights."""
    weights = OBJECTIVES[preset][0]
    active = {name: w for name, w in weights.items() if w > 0}
    out, grads = _loss_and_grads(make_objective(preset))
    scalars = set(out) - {"logits_clean", "logits_adv"}
    assert scalars == {"loss", *active}
    assert len({log_labels()[name] for name in scalars}) == len(scalars)
    expected = sum(float(out[name]) * w for name, w in active.items())
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-6)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_a_preset_naming_an_unregistered_term_is_refused(registries_restored):
    from adrnet.objectives import register_objective
    with pytest.raises(ConfigError, match="unknown objective term.*entropie"):
        register_objective("typo", {"ce_adv": 1.0, "entropie": 1.0})
    assert "typo" not in OBJECTIVES
