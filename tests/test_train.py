"""The training engine in-process on tiny data: run directory, learning, determinism,
schedules, NaN handling, config round trip and load_model."""

import math

import pytest
import torch

from adrnet.config import config_from_dict, load_config
from adrnet.errors import ConfigError
from adrnet import load_model
from adrnet.train import TrainingDiverged, train
from adrnet.train.state import load_data
from adrnet.train.schedules import eps_factor, lr_factor
from _train_helpers import (  # noqa: F401 (tiny_mnist is a fixture)
    meta, records, same_tensors, tiny_config, tiny_mnist, weights, without_timing,
)


def run_tiny(tmp_path, name="run", **sections):
    cfg = config_from_dict(tiny_config(**sections))
    return cfg, train(cfg, tmp_path / name)


def test_run_directory_layout_and_records(tmp_path):
    cfg, result = run_tiny(tmp_path, train={"checkpoint_every": 5})
    run = tmp_path / "run"
    for name in ("config.toml", "metrics.jsonl", "metrics.csv"):
        assert (run / name).is_file()
    for which in ("last", "best"):
        for suffix in (".safetensors", ".json", ".state.pt"):
            assert (run / "checkpoints" / f"{which}{suffix}").is_file()
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.prev.*"))
    epochs = records(run)
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    for r in epochs:
        assert r["val_examples"] == 200 and math.isfinite(r["loss"])
        for key in ("val_acc_clean", "val_acc_robust"):  # counts out of the 200 examples
            assert r[key] * 200 == pytest.approx(round(r[key] * 200), abs=1e-9), key
        # the validation attack breaks examples the model gets right when clean
        assert r["val_acc_robust"] < r["val_acc_clean"]
    best = max(epochs, key=lambda r: r["val_acc_robust"])
    assert result.best_val_acc_robust == best["val_acc_robust"]
    assert meta(run, "best")["best"]["epoch"] == result.best_epoch == best["epoch"]
    last = meta(run, "last")
    assert (last["epoch"], last["step"], last["global_step"]) == (3, 0, 3 * 8)
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and "val_acc_robust" in csv_lines[0]
    assert len(records(run, "step")) == 3 * 8 // 4


def test_training_learns_the_toy_problem(tmp_path):
    _, result = run_tiny(tmp_path, objective={"name": "pgd_at"}, train={"epochs": 4})
    # blobs: 3 classes, chance is 1/3; a trained MLP separates them at this small eps
    assert result.last_record["val_acc_clean"] > 0.8
    assert result.last_record["val_acc_robust"] > 0.6


def test_eval_eps_sets_the_validation_radius_not_the_training_one(tmp_path):
    # at radius 0 no perturbation exists, so every robust count equals the clean one,
    # while the steps still train at attack.eps (their records log the radius used)
    _, result = run_tiny(tmp_path, eval={"eps": 0.0})
    epochs = records(tmp_path / "run")
    assert all(r["val_acc_robust"] == r["val_acc_clean"] for r in epochs)
    assert all(r["eps"] == pytest.approx(0.05) for r in records(tmp_path / "run", "step"))


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    run_tiny(tmp_path, "a", train={"epochs": 1})
    run_tiny(tmp_path, "b", train={"epochs": 1})
    run_tiny(tmp_path, "c", train={"epochs": 1, "seed": 1})
    assert same_tensors(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not same_tensors(weights(tmp_path / "a"), weights(tmp_path / "c"))


def test_saved_config_reproduces_the_run(tmp_path):
    run_tiny(tmp_path, "first", train={"epochs": 2}, optim={"name": "sgd", "lr": 0.05,
                                                           "nesterov": True})
    again = load_config(tmp_path / "first" / "config.toml")
    train(again, tmp_path / "second")
    first, second = tmp_path / "first", tmp_path / "second"
    assert (first / "checkpoints/last.safetensors").read_bytes() == \
        (second / "checkpoints/last.safetensors").read_bytes()
    assert without_timing(records(first)) == without_timing(records(second))


def test_load_model_matches_the_recorded_validation_accuracy(tmp_path):
    cfg, result = run_tiny(tmp_path)
    model, loaded_cfg = load_model(tmp_path / "run", which="best")
    assert loaded_cfg == cfg and not model.training
    _, val = load_data(cfg)
    with torch.no_grad():
        accuracy = (model(val.x).argmax(1) == val.y).sum().item() / len(val.y)
    best = [r for r in records(tmp_path / "run") if r["epoch"] == result.best_epoch][0]
    assert accuracy == pytest.approx(best["val_acc_clean"], abs=1e-9)
    same_file, _ = load_model(tmp_path / "run/checkpoints/best.safetensors")
    assert same_tensors(same_file.state_dict(), model.state_dict())


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from adrnet.train import state as state_module
    real = state_module.objective_from_config
    calls = []

    def poisoned(cfg):
        objective = real(cfg)

        def call(*args, **kwargs):
            out = objective(*args, **kwargs)
            calls.append(1)
            if len(calls) == 11:  # epoch 2, step 3 (8 steps per epoch)
                out["loss"] = out["loss"] * float("nan")
            return out
        call.attack_loss = objective.attack_loss
        return call
    monkeypatch.setattr(state_module, "objective_from_config", poisoned)
    with pytest.raises(TrainingDiverged) as info:
        run_tiny(tmp_path, train={"checkpoint_every": 1})
    message = str(info.value)
    assert "nan" in message and "epoch 2, step 3" in message and "global step 11" in message
    assert "last.json" in message
    kept = meta(tmp_path / "run")
    assert (kept["epoch"], kept["step"], kept["global_step"]) == (1, 2, 10)
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "run").values())


def test_fp16_on_cpu_is_refused_with_advice(tmp_path):
    with pytest.raises(ConfigError, match="bf16"):
        run_tiny(tmp_path, train={"precision": "fp16", "device": "cpu"})


def test_bf16_channels_last_runs_on_images(tmp_path, tiny_mnist, monkeypatch):
    from contextlib import contextmanager
    from adrnet.train import loop
    real_autocast, real_to_device = loop.autocast_context, loop.to_device
    autocast, moved = [], []

    @contextmanager
    def spy_autocast(device, precision):  # what the passes actually run under
        with real_autocast(device, precision):
            enabled = torch.is_autocast_enabled("cpu")
            autocast.append((precision, enabled, torch.get_autocast_dtype("cpu") if enabled else None))
            yield

    def spy_to_device(x, device, channels_last):
        moved.append((x.dim(), channels_last))
        return real_to_device(x, device, channels_last)

    monkeypatch.setattr(loop, "autocast_context", spy_autocast)
    monkeypatch.setattr(loop, "to_device", spy_to_device)
    sections = dict(data={"name": "mnist", "root": str(tiny_mnist), "val_size": 40,
                          "train_subset": 64},
                    model={"name": "smallcnn", "options": {}}, objective={"name": "adr_pgd"},
                    attack={"eps": 0.3, "steps": 2, "step_size": 0.1, "eps_warmup_epochs": 1.0},
                    eval={"val_size": 40, "val_steps": 2})
    cfg, result = run_tiny(tmp_path, train={"epochs": 1, "precision": "bf16",
                                            "channels_last": True}, **sections)
    assert result.epochs_completed == 1 and math.isfinite(result.last_record["loss"])
    # 64 examples in batches of 32: two training steps and one validation batch, each
    # under bf16 autocast; every image batch placed in channels_last: the two training
    # batches, and validation's clean, attacked and adversarial batches
    assert autocast == [("bf16", True, torch.bfloat16)] * 3
    assert [(dim, last) for dim, last in moved if dim == 4] == [(4, True)] * 5
    # the same run in fp32 computes other numbers, and close ones
    autocast.clear()
    _, fp32 = run_tiny(tmp_path, name="fp32", train={"epochs": 1}, **sections)
    assert autocast == [("fp32", False, None)] * 3  # nothing autocast
    bf16_loss, fp32_loss = result.last_record["loss"], fp32.last_record["loss"]
    assert bf16_loss != fp32_loss and bf16_loss == pytest.approx(fp32_loss, rel=0.05)
    model, _ = load_model(tmp_path / "run", which="last")
    assert same_tensors({k: v for k, v in model.state_dict().items()}, weights(tmp_path / "run"))


# ---- schedules: pure functions of the position in training ----

def sched(**kw):
    return load_config(None, [f"schedule.{k}={v}" for k, v in kw.items()]).schedule


def test_piecewise_changes_exactly_at_the_milestones():
    s = sched(name='"piecewise"', milestones="[2, 4]", lr_factors="[0.1, 0.01]")
    spe = 10
    assert lr_factor(s, 1, spe - 1, spe, 6) == 1.0
    assert lr_factor(s, 2, 0, spe, 6) == 0.1
    assert lr_factor(s, 3, 9, spe, 6) == 0.1
    assert lr_factor(s, 4, 0, spe, 6) == 0.01


def test_cosine_and_onecycle_shapes():
    cos = sched(name='"cosine"', min_factor=0.1)
    factors = [lr_factor(cos, e, st, 10, 5) for e in range(5) for st in range(10)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    assert factors[-1] == pytest.approx(0.1) and factors[0] < 1.0
    one = sched(name='"onecycle"', pct_start=0.25, start_factor=0.1, min_factor=0.0)
    factors = [lr_factor(one, e, st, 10, 4) for e in range(4) for st in range(10)]
    peak = max(range(len(factors)), key=factors.__getitem__)
    assert peak == 9 and factors[peak] == pytest.approx(1.0)  # the end of epoch 1 = 25%
    assert factors[0] == pytest.approx(0.1 + 0.9 * (0.1 / 4) / 0.25)  # end of step 1: 2.5%
    assert all(a <= b for a, b in zip(factors[:peak], factors[1:peak + 1]))
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1:]))
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)


def test_lr_warmup_and_eps_warmup_are_linear_per_step():
    s = sched(name='"constant"', warmup_epochs=2)
    assert [lr_factor(s, 0, st, 4, 10) for st in range(4)] == [0.125, 0.25, 0.375, 0.5]
    assert lr_factor(s, 2, 0, 4, 10) == 1.0
    attack = load_config(None, ["attack.eps_warmup_epochs=1"]).attack
    assert [eps_factor(attack, 0, st, 4) for st in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert eps_factor(attack, 3, 1, 4) == 1.0
    assert eps_factor(load_config(None).attack, 0, 0, 4) == 1.0


def test_every_registered_term_is_logged_and_an_unregistered_scalar_is_refused():
    from adrnet.objectives import log_labels
    LOG_LABELS = log_labels()
    from adrnet.train.metrics import accumulate, postfix, step_record
    numbers = {name: float(index) for index, name in enumerate(LOG_LABELS)}
    numbers.update(correct_clean=3, correct_adv=None, examples=4)
    record = step_record(numbers, 1, 1, 1, 0.1, 0.3)
    assert all(record[name] == value for name, value in numbers.items() if name in LOG_LABELS)
    assert record["acc_clean"] == 0.75 and "acc_adv" not in record
    assert set(postfix(numbers, 1.0)) == {*LOG_LABELS.values(), "acc_clean", "img/s"}
    running = {}
    accumulate(running, numbers, 1.0, 0.1, 0.3)
    assert {f"sum_{name}" for name in LOG_LABELS} <= running.keys()
    with pytest.raises(KeyError, match="new_term"):
        accumulate({}, {**numbers, "new_term": 1.0}, 1.0, 0.1, 0.3)
