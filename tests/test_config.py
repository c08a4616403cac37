"""Config: TOML round trips, overrides in TOML syntax, and errors that name the key."""

import dataclasses
from pathlib import Path

import pytest

from adrnet.config import (
    Config, apply_overrides, config_diff, config_from_dict, config_to_dict, load_config,
    save_config,
)
from adrnet.errors import ConfigError
from adrnet.objectives import TERMS

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_defaults_without_a_file():
    assert load_config(None) == Config()


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_and_round_trips(preset, tmp_path):
    cfg = load_config(preset)
    save_config(cfg, tmp_path / "config.toml")
    assert load_config(tmp_path / "config.toml") == cfg


def test_presets_hold_the_papers_settings():
    mnist = load_config(PRESETS[0].parent / "mnist_smallcnn_adr_pgd.toml")
    assert (mnist.attack.eps, mnist.attack.steps, mnist.attack.step_size) == (0.3, 40, 0.01)
    assert mnist.schedule.milestones == (55, 75, 90) and mnist.train.epochs == 100
    cifar = load_config(PRESETS[0].parent / "cifar10_resnet18_pgd_at.toml")
    assert cifar.attack.eps == pytest.approx(8 / 255) and cifar.attack.steps == 10
    assert cifar.optim.weight_decay == pytest.approx(3.5e-3)
    assert cifar.schedule.lr_factors == (0.1, 0.01) and cifar.schedule.milestones == (75, 90)
    names = {p.stem for p in PRESETS}
    for method in ("pgd_at", "trades", "adr_pgd", "adr_trades"):
        assert {f"mnist_smallcnn_{method}", f"cifar10_resnet18_{method}"} <= names
    assert {"cifar10_wrn34_pgd_at", "cifar10_wrn34_adr_pgd", "mnist_quick_adr",
            "mnist_quick_pgd_at", "fashion_mnist_smallcnn_adr_pgd_eps01",
            "fashion_mnist_smallcnn_pgd_at_eps03"} <= names


def test_overrides_use_toml_values():
    cfg = load_config(None, ["train.epochs=3", "schedule.milestones=[1, 2.5]",
                             "schedule.lr_factors=[0.1, 0.01]", "model.name=mlp",
                             "objective.weights.entropy=0.5", "optim.lr=1", "train.progress=false",
                             'model.options={hidden = [8]}'])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.schedule.milestones == (1.0, 2.5)
    assert cfg.model.name == "mlp" and cfg.model.options == {"hidden": [8]}
    assert cfg.objective.weights == {"entropy": 0.5}
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.train.progress is False


def test_overrides_replace_file_values(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 7\nbatch_size = 64\n")
    cfg = load_config(path, ["train.epochs=2"])
    assert (cfg.train.epochs, cfg.train.batch_size) == (2, 64)
    assert apply_overrides(cfg, ["train.batch_size=8"]).train.batch_size == 8


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.epochs = 3


@pytest.mark.parametrize("override, needles", [
    ("train.epoch=3", ["'train.epoch'", "did you mean 'train.epochs'", "allowed keys in [train]"]),
    ("trian.epochs=3", ["[trian]", "allowed sections", "train"]),
    ("train.epochs=three", ["'train.epochs'", "integer", "three"]),
    ("train.epochs=0", ["'train.epochs'", ">= 1"]),
    ("train.epochs=2.5", ["'train.epochs'", "integer"]),
    ("train.progress=1", ["'train.progress'", "true or false"]),
    ("optim.name=rmsprop", ["'optim.name'", "'sgd', 'adam'", "rmsprop"]),
    ("optim.lr=0", ["'optim.lr'", "> 0"]),
    ("optim.momentum=1", ["'optim.momentum'", "< 1"]),
    ("optim.lr=nan", ["'optim.lr'", "finite"]),
    ("train.precision=fp8", ["'train.precision'", "'bf16'"]),
    ("train.device=tpu", ["'train.device'", "auto, cpu, cuda"]),
    ("attack.eps=-0.1", ["'attack.eps'", ">= 0"]),
    ("eval.eps=-0.1", ["'eval.eps'", ">= 0"]),
    ("eval.eps=1.5", ["'eval.eps'", "from 0 to 1"]),
    ("model.name=vgg", ["'model.name'", "smallcnn"]),
    ("data.name=imagenet", ["'data.name'", "mnist"]),
    ("objective.name=madry", ["'objective.name'", "adr_pgd"]),
    ("objective.weights.compactness=1", ["'objective.weights.compactness'", "local_compactness"]),
    ("objective.weights.entropy=-1", ["'objective.weights.entropy'", ">= 0"]),
    ("schedule.milestones=[5]", ["'schedule.milestones'", "'schedule.lr_factors'", "same length"]),
    ("optim.betas=[0.9]", ["'optim.betas'", "2 values"]),
    ("optim.betas=[0.9, 1.5]", ["'optim.betas'", "[0, 1)"]),
    ("train.epochs", ["section.key=value"]),
    ("epochs=3", ["section.key=value"]),
])
def test_bad_input_names_the_key_and_what_is_allowed(override, needles):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    for needle in needles:
        assert needle in str(info.value)


def test_the_reported_radius_is_eval_eps_else_attack_eps():
    assert load_config(None, ["attack.eps=0.4"]).eval_eps == 0.4
    overshoot = load_config(None, ["attack.eps=0.4", "eval.eps=0.3"])
    assert (overshoot.attack.eps, overshoot.eval_eps) == (0.4, 0.3)


def test_negative_lr_factors_are_refused():
    with pytest.raises(ConfigError, match="'schedule.lr_factors'.*>= 0"):
        load_config(None, ["schedule.milestones=[5]", "schedule.lr_factors=[-0.1]"])


def test_decreasing_milestones_are_refused():
    with pytest.raises(ConfigError, match="strictly increasing"):
        load_config(None, ["schedule.milestones=[5, 2]", "schedule.lr_factors=[0.1, 0.01]"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    unreadable = tmp_path / "folder.toml"
    unreadable.mkdir()
    with pytest.raises(ConfigError, match="folder.toml is a directory; give a .toml file"):
        load_config(unreadable)
    section_not_table = tmp_path / "flat.toml"
    section_not_table.write_text("train = 3\n")
    with pytest.raises(ConfigError, match=r"flat.toml: 'train' must be a \[train\] table"):
        load_config(section_not_table, ["train.progress=false"])  # the file, not the override


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n"])
def test_an_empty_config_file_is_refused(tmp_path, text):
    """It would otherwise silently start the all-defaults 100-epoch PGD-40 MNIST run."""
    (tmp_path / "empty.toml").write_text(text)
    with pytest.raises(ConfigError, match="empty.toml is empty; it would run every default"):
        load_config(tmp_path / "empty.toml")


def test_unset_options_are_left_out_of_the_file(tmp_path):
    cfg = Config()
    assert "root" not in config_to_dict(cfg)["data"]
    save_config(cfg, tmp_path / "c.toml")
    assert "root" not in (tmp_path / "c.toml").read_text()
    with_root = load_config(tmp_path / "c.toml", ["data.root=/tmp/x"])
    assert with_root.data.root == "/tmp/x"


def test_config_diff_names_changed_keys():
    base = Config()
    changed = apply_overrides(base, ["train.epochs=5", "objective.weights.entropy=0"])
    assert config_diff(base, changed) == ["objective.weights", "train.epochs"]
    assert config_diff(base, config_from_dict(config_to_dict(base))) == []


@pytest.mark.parametrize("term", TERMS)
def test_every_registered_term_has_a_weight_key(term):
    cfg = load_config(None, [f"objective.weights.{term}=0.5"])
    assert cfg.objective.weights == {term: 0.5}
