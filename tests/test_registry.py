"""The open engine: one registry mechanism, user registrations seen everywhere, plugins
imported by the command line, and training from objects."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import adrnet
from _train_helpers import records, tiny_config, write_config
from adrnet.cli import main
from adrnet.config import config_from_dict, load_config
from adrnet.data import DATASETS, load_splits
from adrnet.errors import CheckpointError, ConfigError, DataError
from adrnet.models import Classifier
from adrnet.objectives import OBJECTIVES, adr_term_names, log_labels, make_objective
from adrnet.registry import Registry
from adrnet.train import train
from adrnet.train.metrics import summed_keys

pytestmark = pytest.mark.usefixtures("torch_one_thread", "registries_restored")


def test_a_registry_refuses_duplicates_and_lists_its_names():
    colours = Registry("colour")
    assert colours.register("red", 1) == 1
    colours.register("blue", 2, hue=240)

    @colours.register("green")
    def green():
        return 3
    assert colours.names() == ("red", "blue", "green") and list(colours) == ["red", "blue", "green"]
    assert colours.get("green") is green and colours.metadata("blue") == {"hue": 240}
    with pytest.raises(ConfigError, match="colour 'red' is already registered"):
        colours.register("red", 4)
    colours.register("red", 4, replace=True)
    assert colours["red"] == 4
    with pytest.raises(ConfigError, match="unknown colour 'pink'; choose one of red, blue, green"):
        colours.get("pink")
    with pytest.raises(ConfigError, match="Python identifier"):
        colours.register("dark red", 5)
    colours.unregister("blue")
    assert "blue" not in colours and len(colours) == 2


@pytest.fixture
def user_term():
    """A term registered at run time (adr=True, so ablations and warm-ups act on it)."""
    def logit_gap(logits_clean, logits_adv):
        return (logits_clean.float() - logits_adv.float()).abs().mean()
    return adrnet.register_term("logit_gap", logit_gap, ("logits_clean", "logits_adv"), "lg", adr=True)


def test_a_term_registered_later_is_seen_by_everything_derived_from_the_registry(user_term):
    assert "logit_gap" in adr_term_names() and log_labels()["logit_gap"] == "lg"
    assert "sum_logit_gap" in summed_keys()
    objective = make_objective("pgd_at", logit_gap=0.5)
    assert objective.active == {"ce_adv": 1.0, "logit_gap": 0.5}
    assert objective.with_adr_factor(0.5).weights["logit_gap"] == 0.25
    cfg = config_from_dict(tiny_config(objective={"name": "pgd_at", "weights": {"logit_gap": 0.5}}))
    assert cfg.objective.weights == {"logit_gap": 0.5}
    with pytest.raises(ConfigError, match="log label 'kl' is taken"):
        adrnet.register_term("kl_again", user_term.function, ("logits_clean", "logits_adv"), "kl")


def test_training_with_a_registered_term_logs_it(tmp_path, user_term):
    config = write_config(tmp_path / "t.toml", tiny_config(
        objective={"name": "pgd_at", "weights": {"logit_gap": 0.5}}, train={"epochs": 1}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    step = records(tmp_path / "run", "step")[-1]
    assert step["logit_gap"] > 0 and step["loss"] == pytest.approx(step["ce_adv"] + 0.5 * step["logit_gap"])


def _rings(root):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(600, 2, generator=gen)
    y = ((x - 0.5).norm(dim=1) > 0.3).long()
    return (x[:500], y[:500]), (x[500:], y[500:])


@pytest.fixture
def user_data():
    adrnet.register_dataset("rings_test", _rings, shape=(2,), num_classes=2, val_size=100)


def test_a_registered_data_set_loads_with_a_held_out_validation_split(user_data):
    splits = load_splits("rings_test", seed=3)
    assert (len(splits.train.y), len(splits.val.y), len(splits.test.y)) == (400, 100, 100)
    assert torch.equal(torch.cat([splits.train.x, splits.val.x]).sort(0).values,
                       _rings(None)[0][0].sort(0).values)  # a partition of the training data
    assert DATASETS["rings_test"].num_classes == 2 and DATASETS["rings_test"].mean == (0.0, 0.0)


@pytest.mark.parametrize("bad, needle", [
    (lambda: ((torch.rand(10, 3), torch.zeros(10).long()), _rings(None)[1]), "inputs of shape [10, 3]"),
    (lambda: ((torch.rand(10, 2), torch.full((10,), 2)), _rings(None)[1]), "labels outside [0, 2)"),
    (lambda: ((torch.rand(10, 2) * 255, torch.zeros(10).long()), _rings(None)[1]), "in [0, 1]"),
    (lambda: ((torch.full((10, 2), float("nan")), torch.zeros(10).long()), _rings(None)[1]), "finite"),
    (lambda: ((torch.rand(10, 2), torch.rand(10)), _rings(None)[1]), "labels must be 10 integers"),
    (lambda: ((torch.rand(0, 2), torch.zeros(0).long()), _rings(None)[1]), "expected [N > 0, 2]"),
])
def test_a_registered_loader_that_returns_bad_data_is_refused(bad, needle):
    adrnet.register_dataset("bad_test", lambda root: bad(), shape=(2,), num_classes=2, val_size=2)
    with pytest.raises(DataError, match="data set 'bad_test'") as caught:
        load_splits("bad_test")
    assert needle in str(caught.value)


PLUGIN = '''
import torch
from torch import nn
import adrnet
from adrnet.models import Classifier


def rings(root):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(600, 2, generator=gen)
    y = ((x - 0.5).norm(dim=1) > 0.3).long()
    return (x[:500], y[:500]), (x[500:], y[500:])


def tanh_net(*, num_classes, in_shape, mean, std, latent=None, width=8):
    features = nn.Sequential(nn.Linear(in_shape[0], width), nn.Tanh())
    return Classifier({"features": features, "logits": nn.Linear(width, num_classes)},
                      in_shape=in_shape, mean=mean, std=std, latent=latent or "features")


adrnet.register_dataset("plugin_rings", rings, shape=(2,), num_classes=2, val_size=100)
adrnet.register_model("plugin_tanh", tanh_net)
adrnet.register_term("plugin_gap", lambda a, b: (a.float() - b.float()).abs().mean(),
                     ("logits_clean", "logits_adv"), "pg")
'''


@pytest.fixture
def plugin_dir(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    raw = tiny_config(data={"name": "plugin_rings"}, model={"name": "plugin_tanh", "options": {"width": 8}},
                      objective={"name": "pgd_at", "weights": {"plugin_gap": 0.5}}, train={"epochs": 1})
    write_config(tmp_path / "by_option.toml", raw)
    write_config(tmp_path / "by_section.toml", {**raw, "plugins": {"modules": ["my_plugin"]}})
    return tmp_path


def _adrnet(*args, cwd):
    return subprocess.run([sys.executable, "-m", "adrnet", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_the_command_line_trains_and_evaluates_with_a_plugin(plugin_dir):
    """A plugin given by --import and one named in the config's [plugins] both work; a
    checkpoint never imports anything: evaluating without the plugin says what to import."""
    done = _adrnet("train", "--import", "my_plugin", "--config", "by_option.toml", "--out", "a",
                   "--no-progress", cwd=plugin_dir)
    assert done.returncode == 0, done.stderr
    done = _adrnet("train", "--config", "by_section.toml", "--out", "b", "--no-progress", cwd=plugin_dir)
    assert done.returncode == 0, done.stderr
    assert "my_plugin" in (plugin_dir / "b" / "config.toml").read_text()
    assert records(plugin_dir / "b", "step")[-1]["plugin_gap"] >= 0
    refused = _adrnet("eval", "b", "--attacks", "fgsm", "--no-diagnostics", cwd=plugin_dir)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "plugin module(s) my_plugin: import them first" in refused.stderr
    done = _adrnet("eval", "--import", "my_plugin", "b", "--attacks", "fgsm", "--no-diagnostics",
                   "--no-progress", cwd=plugin_dir)
    assert done.returncode == 0, done.stderr
    record = json.loads((plugin_dir / "b" / "eval.json").read_text())
    assert record["dataset"] == "plugin_rings" and record["n"] == 100


@pytest.mark.parametrize("module, needle", [
    ("no_such_plugin", "plugin module 'no_such_plugin' not found"),
    ("broken_plugin", "importing plugin module 'broken_plugin' failed: RuntimeError: boom"),
    ("not a name", "is not a module name"),
])
def test_a_plugin_that_cannot_be_imported_is_one_error_line(plugin_dir, monkeypatch, capsys, module, needle):
    monkeypatch.chdir(plugin_dir)
    assert main(["train", "--import", module, "--config", "by_option.toml", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert not (plugin_dir / "x").exists()


class TanhNet(nn.Module):
    """A user's module built outside adrnet's registry (a Classifier by its stages)."""

    def __new__(cls, width=8):
        features = nn.Sequential(nn.Linear(2, width), nn.Tanh())
        return Classifier({"features": features, "logits": nn.Linear(width, 2)},
                          in_shape=(2,), mean=(0.0,), std=(1.0,), latent="features")


def test_training_from_objects_records_them_and_needs_them_to_load_and_resume(tmp_path):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(300, 2, generator=gen)
    y = (x[:, 0] > x[:, 1]).long()
    splits = ((x[:200], y[:200]), (x[200:], y[200:]))
    objective = make_objective("trades", trades_kl=2.0)
    cfg = config_from_dict(tiny_config(train={"epochs": 1}))
    result = train(cfg, tmp_path / "run", model=TanhNet(), splits=splits, objective=objective)
    assert result.epochs_completed == 1
    saved = json.loads((tmp_path / "run" / "objects.json").read_text())
    assert set(saved) == {"model", "splits", "objective"} and "trades_kl': 2.0" in saved["objective"]
    assert records(tmp_path / "run", "step")[-1].keys() >= {"ce_clean", "trades_kl"}
    with pytest.raises(CheckpointError, match="trained on a model passed to train"):
        adrnet.load_model(tmp_path / "run")
    model, _ = adrnet.load_model(tmp_path / "run", model=TanhNet())
    assert model(x[:3]).shape == (3, 2)
    with pytest.raises(CheckpointError, match="different architecture"):
        adrnet.load_model(tmp_path / "run", model=TanhNet(width=4))
    longer = config_from_dict(tiny_config(train={"epochs": 2}))
    with pytest.raises(ConfigError, match="objects passed to train.. for: model, objective, splits"):
        train(longer, tmp_path / "run", resume=True)
    assert train(longer, tmp_path / "run", resume=True, model=TanhNet(), splits=splits,
                 objective=objective).epochs_completed == 2


@pytest.mark.parametrize("model, needle", [
    (nn.Linear(2, 2), "cannot be called as model(x, return_latent=True)"),
    ("not a module", "must be a torch.nn.Module"),
])
def test_a_model_object_that_cannot_train_is_refused(tmp_path, model, needle):
    with pytest.raises(ConfigError) as caught:
        train(config_from_dict(tiny_config(train={"epochs": 1})), tmp_path / "run", model=model)
    assert needle in str(caught.value) and not (tmp_path / "run" / "checkpoints").exists()


def test_public_registration_functions_reach_the_registries():
    from adrnet.models import build_model
    adrnet.register_model("tanh_test", lambda **kw: TanhNet(width=3))
    model = build_model("tanh_test", num_classes=2, in_shape=(2,), mean=(0,), std=(1,))
    assert model.stages["logits"].in_features == 3 and model.spec["name"] == "tanh_test"
    adrnet.register_objective("alp_test", {"ce_adv": 1.0, "ce_clean": 0.5})
    assert load_config(None, ["objective.name=alp_test"]).objective.name == "alp_test"
    with pytest.raises(ConfigError, match="needs a term of weight > 0"):
        adrnet.register_objective("nothing_test", {"ce_adv": 0.0})
    OBJECTIVES.unregister("alp_test")
    with pytest.raises(ConfigError, match="unknown objective 'alp_test'"):
        make_objective("alp_test")
