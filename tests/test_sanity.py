"""Gradient-masking checks: they fire on deliberately masked models, not on a normal one."""

from __future__ import annotations

import json

import pytest
import torch

from _masking import NoisyLogits, QuantizedInput
from adrnet.eval.sanity import check_determinism, random_noise_attack, sanity_checks

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SETTINGS = dict(norm="linf", eps=0.1, steps=10, square_queries=300)


def test_quiet_on_a_normal_model(tiny_trained_model):
    model, x, y = tiny_trained_model
    report = sanity_checks(model, x, y, **SETTINGS)
    assert report.passed, report.to_dict()
    assert set(report.checks) == {"large_eps_chance", "more_steps", "more_restarts", "noise_vs_pgd",
                                  "deterministic", "square_vs_whitebox"}
    assert report.checks["large_eps_chance"].values["accuracy"] <= 0.1


def test_flags_shattered_gradients(tiny_trained_model):
    model, x, y = tiny_trained_model
    masked = QuantizedInput(model, levels=2)
    grad_input = x[:4].clone().requires_grad_(True)
    masked(grad_input).sum().backward()
    assert grad_input.grad.abs().max() == 0  # the masking really kills the gradient
    report = sanity_checks(masked, x, y, **SETTINGS)
    assert not report.passed
    assert {"large_eps_chance", "square_vs_whitebox"} <= set(report.flags)
    # the record is JSON-ready and says why: PGD at ε = 1 (any image allowed) leaves the
    # masked model far above chance
    record = json.loads(json.dumps(report.to_dict()))
    large = record["checks"]["large_eps_chance"]
    assert record["passed"] is False and "gradients look masked" in large["message"]
    assert large["values"]["eps"] == 1.0 and large["values"]["accuracy"] > 0.5


def test_flags_randomised_model(tiny_trained_model):
    model, x, y = tiny_trained_model
    report = sanity_checks(NoisyLogits(model, sigma=0.1), x, y, square=False, **SETTINGS)
    assert "deterministic" in report.flags
    assert check_determinism(model, x).passed


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_noise_has_size_eps(tiny_trained_model, norm, eps):
    model, x, y = tiny_trained_model
    x_noisy = random_noise_attack(norm, eps, draws=3)(model, x, y)
    delta = (x_noisy - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all() and x_noisy.min() >= 0 and x_noisy.max() <= 1


def test_sanity_keeps_global_rng(tiny_trained_model):
    model, x, y = tiny_trained_model
    torch.manual_seed(5)
    state = torch.get_rng_state()
    sanity_checks(model, x[:20], y[:20], **SETTINGS)
    assert torch.equal(torch.get_rng_state(), state)
