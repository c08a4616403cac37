"""The ADR / TRADES / PGD-AT terms against method.md: values, gradient masks, edge cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from adrnet.errors import ConfigError
from adrnet.objectives import TERMS, Term, adr_term_names, adr_terms, log_labels, pair_weights
from adrnet.objectives.terms import INPUTS, global_compactness, global_smoothness, local_smoothness

LN3 = math.log(3.0)


def _fixture(scale_dtype=torch.float64):
    """b = 2, K = 2, C = 2 with softmaxes p0 = (1/2, 1/2), p1 = (3/4, 1/4), q0 = (1/4, 3/4), q1 = (1/2, 1/2)."""
    t = lambda rows: torch.tensor(rows, dtype=scale_dtype, requires_grad=True)
    return dict(
        z_clean=t([[0.0, 0.0], [1.0, 1.0]]),
        logits_clean=t([[0.0, 0.0], [LN3, 0.0]]),
        z_adv=t([[0.5, -0.5], [1.0, 3.0]]),
        logits_adv=t([[0.0, LN3], [0.0, 0.0]]),
        y=torch.tensor([0, 1]),
    )


def test_values_match_hand_computation_with_s_half():
    # With s = 0.5 the cross-class weight is 1 - 1/0.5 = -1.
    got = adr_terms(**_fixture(), scale=0.5)
    # |z - z'| / K per pair (i adv, j clean): d00 = 0.5, d01 = 1, d10 = 2, d11 = 1.
    assert got["local_compactness"].item() == pytest.approx((0.5 + 1.0) / 2)
    assert got["global_compactness"].item() == pytest.approx((0.5 - 1.0 - 2.0 + 1.0) / 4)
    c00 = 0.5 * math.log(16 / 3)              # -(1/2 ln 1/4 + 1/2 ln 3/4)
    c01 = -(0.75 * math.log(0.25) + 0.25 * math.log(0.75))
    c1x = math.log(2.0)                       # q1 is uniform: CE = ln 2 for any target
    assert got["local_smoothness"].item() == pytest.approx((c00 + c1x) / 2)
    assert got["global_smoothness"].item() == pytest.approx((c00 - c01 - c1x + c1x) / 4)
    h0 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert got["entropy"].item() == pytest.approx((h0 + math.log(2.0)) / 2)


def test_default_scale_weighs_other_classes_by_minus_one_over_99():
    got = adr_terms(**_fixture())
    assert got["global_compactness"].item() == pytest.approx((0.5 + 1.0 - (1.0 + 2.0) / 99) / 4)
    weights = pair_weights(torch.tensor([0, 1, 1]), torch.tensor([1, 0]), 0.99)
    expected = torch.tensor([[-1 / 99, 1.0], [1.0, -1 / 99], [1.0, -1 / 99]])
    assert torch.allclose(weights, expected)


def test_trades_kl_and_ce_hand_values():
    f = _fixture()
    kl = TERMS["trades_kl"](f["logits_clean"], f["logits_adv"]).item()
    kl0 = 0.5 * math.log(4 / 3)
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kl == pytest.approx((kl0 + kl1) / 2)
    ce = TERMS["ce_clean"](f["logits_clean"], f["y"]).item()
    assert ce == pytest.approx((math.log(2.0) - math.log(0.25)) / 2)


# Which of (z_clean, logits_clean, z_adv, logits_adv) each term sends gradient to (method.md).
MASKS = {
    "local_compactness": {"z_adv"},
    "local_smoothness": {"logits_adv"},
    "global_compactness": {"z_adv"},
    "global_smoothness": {"logits_adv"},
    "entropy": {"logits_adv"},
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_gradient_masks(name):
    torch.manual_seed(0)
    inputs = {
        "z_clean": torch.randn(6, 5, requires_grad=True),
        "logits_clean": torch.randn(6, 4, requires_grad=True),
        "z_adv": torch.randn(6, 5, requires_grad=True),
        "logits_adv": torch.randn(6, 4, requires_grad=True),
    }
    value = adr_terms(**inputs, y=torch.tensor([0, 1, 2, 3, 0, 1]))[name]
    grads = torch.autograd.grad(value, list(inputs.values()), allow_unused=True)
    receives = {key for key, g in zip(inputs, grads) if g is not None and g.abs().sum() > 0}
    assert receives == MASKS[name]


def test_base_term_masks():
    logits_clean = torch.randn(4, 3, requires_grad=True)
    logits_adv = torch.randn(4, 3, requires_grad=True)
    g_clean, g_adv = torch.autograd.grad(TERMS["trades_kl"](logits_clean, logits_adv), [logits_clean, logits_adv])
    assert g_clean.abs().sum() > 0 and g_adv.abs().sum() > 0


def test_terms_pass_gradcheck_in_float64():
    torch.manual_seed(1)
    y = torch.tensor([0, 1, 1, 2])
    z_clean, logits_clean = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    z_adv = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    logits_adv = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    for name in MASKS:
        fn = lambda za, la: adr_terms(z_clean, logits_clean, za, la, y)[name]
        assert torch.autograd.gradcheck(fn, (z_adv, logits_adv))


def test_entropy_gradient_is_not_zero_and_matches_finite_difference():
    logits = torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(TERMS["entropy"](logits), logits)
    assert grad.abs().sum() > 1e-3
    assert torch.autograd.gradcheck(TERMS["entropy"], (logits,))


def test_local_smoothness_is_kl_plus_clean_entropy():
    torch.manual_seed(2)
    logits_clean, logits_adv = torch.randn(8, 10), torch.randn(8, 10)
    p = F.softmax(logits_clean, 1)
    clean_entropy = -(p * p.log()).sum(1).mean()
    expected = TERMS["trades_kl"](logits_clean, logits_adv) + clean_entropy
    assert torch.allclose(local_smoothness(logits_clean, logits_adv), expected, atol=1e-6)


@pytest.mark.parametrize("b,B,C", [(5, 5, 3), (3, 7, 100)])
def test_global_terms_equal_naive_pairwise_sums(b, B, C):
    torch.manual_seed(3)
    z_adv, z_cols = torch.randn(b, 6), torch.randn(B, 6)
    logits_adv, probs_cols = torch.randn(b, C), F.softmax(torch.randn(B, C), 1)
    y_rows, y_cols = torch.randint(0, 3, (b,)), torch.randint(0, 3, (B,))
    w = pair_weights(y_rows, y_cols, 0.99)
    naive_gc = (w * (z_adv[:, None] - z_cols[None]).abs().mean(-1)).mean()
    log_q = F.log_softmax(logits_adv, 1)
    naive_gs = (w * -(probs_cols[None] * log_q[:, None]).sum(-1)).mean()
    assert torch.allclose(global_compactness(z_adv, z_cols, y_rows, y_cols), naive_gc, atol=1e-6)
    assert torch.allclose(global_smoothness(logits_adv, probs_cols, y_rows, y_cols), naive_gs, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,C", [(1, 2), (7, 3), (16, 100)])
def test_any_batch_classes_dtype_and_one_class_batch_stay_finite(dtype, b, C):
    torch.manual_seed(4)
    args = [torch.randn(b, 4, dtype=dtype), torch.randn(b, C, dtype=dtype),
            torch.randn(b, 4, dtype=dtype, requires_grad=True),
            torch.randn(b, C, dtype=dtype, requires_grad=True)]
    for y in (torch.randint(0, C, (b,)), torch.zeros(b, dtype=torch.long)):
        terms = adr_terms(*args, y)
        assert set(terms) == set(MASKS)
        for value in terms.values():
            assert value.dim() == 0 and value.dtype == dtype and torch.isfinite(value)
        total = sum(terms.values())
        grads = torch.autograd.grad(total, args[2:])
        assert all(torch.isfinite(g).all() for g in grads)


def test_half_precision_inputs_are_computed_in_float32():
    torch.manual_seed(5)
    args = [torch.randn(4, 3).bfloat16() for _ in range(4)]
    terms = adr_terms(*args, torch.tensor([0, 1, 0, 2]))
    assert all(v.dtype == torch.float32 for v in terms.values())


# The registry: what each term reads decides its passes and scope (method.md's table).
PASSES = {  # name: (clean pass, adversarial pass, scope)
    "ce_clean": (True, False, "per_example"),
    "ce_adv": (False, True, "per_example"),
    "trades_kl": (True, True, "per_example"),
    "local_compactness": (True, True, "per_example"),
    "local_smoothness": (True, True, "per_example"),
    "global_compactness": (True, True, "global"),
    "global_smoothness": (True, True, "global"),
    "entropy": (False, True, "per_example"),
    "mart_bce": (False, True, "per_example"),
    "mart_kl": (True, True, "per_example"),
}


def test_the_built_in_terms_keep_method_md_passes_and_scope():
    """method.md's table for the terms adrnet ships; a term registered later is checked by
    the property tests below, which derive what they expect from its registry entry."""
    for name, passes in PASSES.items():
        term = TERMS[name]
        assert (term.clean, term.adversarial, term.scope) == passes, name
    assert adr_term_names() == ("local_compactness", "local_smoothness", "global_compactness",
                         "global_smoothness", "entropy")  # the paper's five


def test_log_labels_come_from_the_registry_and_are_distinct():
    labels = log_labels()
    assert labels == {"loss": "loss", **{name: term.label for name, term in TERMS.items()}}
    assert len(set(labels.values())) == len(labels)


def _registry_inputs(b=6, K=5, C=4, seed=6):
    """Everything a term may read (terms.INPUTS), for one small single-process batch."""
    gen = torch.Generator().manual_seed(seed)
    logits_clean = torch.randn(b, C, generator=gen, dtype=torch.float64, requires_grad=True)
    z_clean = torch.randn(b, K, generator=gen, dtype=torch.float64, requires_grad=True)
    logits_adv = torch.randn(b, C, generator=gen, dtype=torch.float64, requires_grad=True)
    z_adv = torch.randn(b, K, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 3][:b])
    inputs = dict(logits_clean=logits_clean, z_clean=z_clean, logits_adv=logits_adv, z_adv=z_adv, y=y,
                  y_cols=y, z_cols=z_clean.detach(), probs_cols=F.softmax(logits_clean.detach(), 1), scale=0.99)
    assert set(inputs) == set(INPUTS)
    return inputs


def _value(term, inputs):
    return term(*(inputs[arg] for arg in term.inputs))


def _rows(inputs, rows):
    """The inputs of the examples ``rows`` alone (a batch of their own)."""
    return {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@pytest.mark.parametrize("name", TERMS)
def test_every_registered_term_behaves_as_its_entry_says(name):
    """What the registry entry claims, checked on the function's values and gradients:
    a finite scalar; it depends on the clean pass exactly when ``clean`` says so and
    sends gradient to the adversarial pass exactly when ``adversarial`` says so; a
    per-example term of a batch is the mean of its examples' values, and a global term
    is not (it pairs examples)."""
    term, inputs = TERMS[name], _registry_inputs()
    value = _value(term, inputs)
    assert value.dim() == 0 and torch.isfinite(value)
    sides = [inputs[k] for k in ("logits_clean", "z_clean", "logits_adv", "z_adv")]
    grads = torch.autograd.grad(value, sides, allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads[2:]) == term.adversarial
    other = _registry_inputs(seed=7)  # a different clean pass (logit shifts vary per class)
    moved = dict(inputs, logits_clean=other["logits_clean"], z_clean=other["z_clean"])
    moved.update(z_cols=moved["z_clean"].detach(), probs_cols=F.softmax(moved["logits_clean"].detach(), 1))
    assert (not torch.equal(_value(term, moved), value)) == term.clean
    one_by_one = torch.stack([_value(term, _rows(inputs, [i])) for i in range(6)]).mean()
    assert torch.allclose(one_by_one, value, rtol=1e-12) == (term.scope == "per_example")


def test_a_term_reading_an_unknown_input_is_refused():
    with pytest.raises(ConfigError, match="unknown input"):
        Term("typo", lambda logits: logits.sum(), ("logit_adv",), "t")
