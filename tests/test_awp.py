"""AWP (Wu et al., NeurIPS 2020): the per-layer relative size γ, γ = 0 equals the plain
step bit for bit, BatchNorm statistics and the RNG untouched by the ascent pass, warm-up,
bad γ refused, bit-identical resume, and data-parallel runs."""

from __future__ import annotations

import copy
import functools
from types import SimpleNamespace

import pytest
import torch

from _tiny import TinyNet, tiny_batch
from _train_helpers import same_tensors, tiny_config, weights
from adrnet.attacks import Linf, pgd
from adrnet.config import config_from_dict, load_config
from adrnet.errors import ConfigError
from adrnet.objectives import make_objective
from adrnet.train import train
from adrnet.train.awp import ReusedAttack, awp_due, weight_perturbation
from adrnet.train.loop import TrainingDiverged, train_step

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _run(awp=None, objective="adr_trades", seed=0):
    """A minimal training-run object around TinyNet (BatchNorm + dropout) for train_step."""
    optim = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    if awp is not None:
        optim["awp"] = awp
    cfg = config_from_dict(tiny_config(optim=optim, objective={"name": objective}))
    torch.manual_seed(seed)
    net = TinyNet(batchnorm=True, dropout=0.3)
    return SimpleNamespace(
        cfg=cfg, net=net, model=net, objective=make_objective(objective), gather=None,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4),
        scaler=torch.amp.GradScaler("cpu", enabled=False), device=torch.device("cpu"),
        info=SimpleNamespace(rank=0, world_size=1, distributed=False), global_step=0,
        any_rank=bool, last_checkpoint_note=lambda: "")


def _attack(loss):
    return functools.partial(pgd, threat=Linf(0.1), steps=2, step_size=0.05, loss=loss)


def _steps(run, n=3):
    x, y = tiny_batch(n=12)
    attack = _attack(run.objective.attack_loss)
    return [train_step(run, run.objective, x, y, epoch=0, step=i, attack=attack, lr=0.05)
            for i in range(n)]


def _state(run):
    return ({k: v.clone() for k, v in run.net.state_dict().items()},
            copy.deepcopy(run.optimizer.state_dict()["state"]))


@pytest.mark.parametrize("objective", ["adr_trades", "mart", "pgd_at"])
def test_gamma_zero_is_bit_identical_to_the_plain_step(objective):
    plain, zero = _run(objective=objective), _run({"gamma": 0.0}, objective=objective)
    assert _steps(plain) == _steps(zero)
    (w_plain, opt_plain), (w_zero, opt_zero) = _state(plain), _state(zero)
    assert same_tensors(w_plain, w_zero)  # weights and BatchNorm buffers
    assert all(torch.equal(opt_plain[k]["momentum_buffer"], opt_zero[k]["momentum_buffer"])
               for k in opt_plain)
    assert torch.equal(torch.get_rng_state(), _rng_after(plain, objective))


def _rng_after(run, objective):
    """The RNG state after one more plain step (both runs were left at the same point)."""
    twin = _run(objective=objective)
    _steps(twin)
    return torch.get_rng_state()


def test_positive_gamma_changes_the_step():
    plain, awp = _run(), _run({"gamma": 0.01})
    _steps(plain), _steps(awp)
    assert not same_tensors(_state(plain)[0], _state(awp)[0])


def test_perturbation_has_relative_size_gamma_per_layer_and_spares_batchnorm():
    run = _run({"gamma": 0.02})
    run.net.train()
    x, y = tiny_batch(n=12)
    buffers = {k: v.clone() for k, v in run.net.named_buffers()}
    torch.manual_seed(3)
    attack = ReusedAttack(_attack("kl"), run.device)
    perturbation = weight_perturbation(run, run.objective, x, y, attack, gamma=0.02).pairs
    rng_after_awp = torch.get_rng_state()
    names = {id(p): name for name, p in run.net.named_parameters()}
    # the conv and linear kernels only: no biases, no BatchNorm affine weight/bias
    assert sorted(names[id(p)] for p, _ in perturbation) == ["features.0.weight", "head.weight"]
    for param, v in perturbation:
        assert v.shape == param.shape and v.abs().sum() > 0
        assert float(v.norm() / param.detach().norm()) == pytest.approx(0.02, rel=1e-5)
    assert all(torch.equal(buffers[k], v) for k, v in run.net.named_buffers())
    # the ascent pass (its dropout masks) leaves the RNG where the plain step is after
    # its attack: the same seed and the attack alone reach the same state
    torch.manual_seed(3)
    _attack("kl")(run.net, x, y)
    assert torch.equal(torch.get_rng_state(), rng_after_awp)


def test_weights_are_restored_when_the_step_fails():
    run = _run({"gamma": 0.05})
    before = {k: v.clone() for k, v in run.net.named_parameters()}
    run.any_rank = lambda flag: True  # every loss "non-finite"
    with pytest.raises(TrainingDiverged):
        _steps(run, n=1)
    assert same_tensors(before, dict(run.net.named_parameters()))  # exactly, not w + v − v


@pytest.mark.parametrize("bad", ["optim.awp={gamma=-0.01}", "optim.awp={gamma=nan}",
                                 "optim.awp={gamma=inf}", "optim.awp={warmup_epochs=-1}",
                                 "optim.awp={gama=0.01}", "optim.awp=0.01"])
def test_bad_awp_settings_are_refused(bad):
    with pytest.raises(ConfigError, match="optim.awp"):
        load_config(None, [bad])


def test_warm_up_and_unset():
    cfg = load_config(None, ["optim.awp={gamma=0.005, warmup_epochs=2}"])
    assert [awp_due(cfg, epoch) for epoch in range(4)] == [False, False, True, True]
    assert not awp_due(load_config(None), 0)


def test_warm_up_epochs_train_exactly_as_without_awp(tmp_path):
    small = {"name": "blobs", "train_subset": 96}
    plain = config_from_dict(tiny_config(data=small, train={"epochs": 1}))
    warm = config_from_dict(tiny_config(data=small, train={"epochs": 1},
                                        optim={"awp": {"gamma": 0.01, "warmup_epochs": 1}}))
    train(plain, tmp_path / "plain"), train(warm, tmp_path / "warm")
    assert same_tensors(weights(tmp_path / "plain"), weights(tmp_path / "warm"))


def test_resume_across_the_warm_up_is_bit_identical(tmp_path):
    awp, small = {"gamma": 0.01, "warmup_epochs": 1}, {"name": "blobs", "train_subset": 96}
    full = config_from_dict(tiny_config(data=small, train={"epochs": 2}, optim={"awp": awp}))
    train(full, tmp_path / "full")
    first = config_from_dict(tiny_config(data=small, train={"epochs": 1}, optim={"awp": awp}))
    train(first, tmp_path / "resumed")
    train(full, tmp_path / "resumed", resume=True)
    assert same_tensors(weights(tmp_path / "full"), weights(tmp_path / "resumed"))
    plain = config_from_dict(tiny_config(data=small, train={"epochs": 2}))
    train(plain, tmp_path / "plain")
    assert not same_tensors(weights(tmp_path / "full"), weights(tmp_path / "plain"))


def test_awp_presets_load():
    for name in ("cifar10_resnet18_trades_awp", "cifar10_resnet18_adr_pgd_awp"):
        cfg = load_config(f"configs/{name}.toml")
        assert cfg.optim.awp is not None and cfg.optim.awp.gamma > 0


def test_two_processes_train_the_same_awp_weights_as_one(tmp_path):
    """DDP: the ascent gradient is summed over ranks, so both ranks apply the v of the
    whole batch, and 2 x 16 examples train what 1 x 32 train (deterministic attack)."""
    from safetensors.torch import load_file
    from test_distributed_cli import TOY_MLP, WORLD, _run_cli, _write_config
    found = []
    for procs, batch in ((WORLD, 16), (1, 32)):
        config = _write_config(tmp_path / f"toy{procs}.toml", TOY_MLP.format(batch=batch))
        _run_cli(tmp_path / f"run{procs}", config, procs, "optim.awp={gamma=0.05}")
        found.append(load_file(tmp_path / f"run{procs}" / "checkpoints" / "last.safetensors"))
    for name in found[0]:
        torch.testing.assert_close(found[0][name], found[1][name], rtol=1e-4, atol=1e-5)
    plain = _write_config(tmp_path / "plain.toml", TOY_MLP.format(batch=32))
    _run_cli(tmp_path / "plain", plain, 1)
    without = load_file(tmp_path / "plain" / "checkpoints" / "last.safetensors")
    assert any(not torch.allclose(found[1][k], without[k]) for k in without)  # AWP acted
