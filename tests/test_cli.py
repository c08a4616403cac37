"""The ``adrnet`` command line: train end to end on tiny data, resume flags, data
subcommands, and one ``error: ...`` line with exit status 2 for every user mistake."""

import subprocess
import sys
from pathlib import Path

import pytest

from adrnet.cli import build_parser, main
from _train_helpers import (  # noqa: F401 (tiny_mnist is a fixture)
    meta, records, tiny_config, tiny_mnist, write_config,
)


@pytest.fixture
def tiny_toml(tmp_path):
    return write_config(tmp_path / "tiny.toml", tiny_config(train={"epochs": 2}))


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_end_to_end_in_a_subprocess(tmp_path, tiny_toml):
    result = subprocess.run([sys.executable, "-m", "adrnet.cli", "train", "--config", tiny_toml,
                             "--out", tmp_path / "run", "--set", "train.epochs=1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"run directory: {tmp_path / 'run'}" in result.stdout
    assert [r["epoch"] for r in records(tmp_path / "run")] == [1]
    assert "epochs = 1" in (tmp_path / "run" / "config.toml").read_text()


def test_default_run_dir_overrides_and_resume_if_exists(tmp_path, tiny_toml, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("train", "--config", tiny_toml, "--set", "train.epochs=1",
                           "optim.lr=0.01", "--no-progress", "--device", "cpu", capsys=capsys)
    assert code == 0 and "runs/tiny" in out
    first = records(tmp_path / "runs/tiny")
    code, out, _ = run_cli("train", "--config", tiny_toml, "--out", "runs/tiny",
                           "--set", "optim.lr=0.01", "--resume-if-exists", capsys=capsys)
    assert code == 0 and "resuming at epoch 2" in out
    both = records(tmp_path / "runs/tiny")
    assert [r["epoch"] for r in both] == [1, 2] and both[0] == first[0]
    code, out, _ = run_cli("train", "--config", tiny_toml, "--out", "fresh",
                           "--resume-if-exists", capsys=capsys)
    assert code == 0 and "starting" in out and meta(tmp_path / "fresh")["epoch"] == 2


def test_resume_extends_a_finished_run(tmp_path, tiny_toml, capsys):
    assert run_cli("train", "--config", tiny_toml, "--out", tmp_path / "r", capsys=capsys)[0] == 0
    code, out, _ = run_cli("train", "--resume", tmp_path / "r", "--set", "train.epochs=3",
                           capsys=capsys)
    assert code == 0 and meta(tmp_path / "r")["epoch"] == 3
    assert "epochs = 3" in (tmp_path / "r" / "config.toml").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
    (["--set", "optim.name=lbfgs"], "'optim.name' must be one of 'sgd', 'adam'"),
    (["--set", "attack.steps=-1"], "'attack.steps' must be >= 1"),
    (["--set", "model.name=vgg"], "'model.name' must be one of"),
    (["--set", "train"], "section.key=value"),
    (["--set", "attack.eps=1e39"], "'attack.eps': L∞ eps must be a number from 0 to 1"),
    (["--set", "attack.eps=1e30"], "got 1e+30"),
    (["--set", "attack.threat=l2", "attack.eps=1.5"], "from 0 to 1.41421 (√2, the diameter"),
])
def test_config_mistakes_print_one_error_line(tmp_path, tiny_toml, capsys, args, needle):
    code, _, err = run_cli("train", "--config", tiny_toml, "--out", tmp_path / "x", *args,
                           capsys=capsys)
    assert code == 2 and err.startswith("error: ") and needle in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


PRESETS = sorted(Path(__file__).resolve().parents[1].glob("configs/*.toml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda path: path.stem)
def test_an_objective_left_with_no_weighted_term_is_refused(tmp_path, preset, capsys):
    """Every preset with all its objective's weights set to 0 (``ce_adv=0`` on PGD-AT
    made the loss the integer 0 and crashed in the loop): one line, exit 2, no run."""
    from adrnet.config import load_config
    from adrnet.objectives import OBJECTIVES
    cfg = load_config(preset)
    weights = {**OBJECTIVES[cfg.objective.name][0], **cfg.objective.weights}
    zeros = [f"objective.weights.{name}=0" for name in weights]
    code, out, err = run_cli("train", "--config", preset, "--out", tmp_path / "x", "--set", *zeros,
                             capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: objective '{cfg.objective.name}' with these weights has no term")
    assert not (tmp_path / "x").exists()


def test_an_adr_warmup_needs_a_base_term(tmp_path, tiny_toml, capsys):
    code, _, err = run_cli("train", "--config", tiny_toml, "--out", tmp_path / "x", "--set",
                           "objective.weights.ce_clean=0", "objective.weights.ce_adv=0",
                           "objective.adr_warmup_epochs=1", capsys=capsys)
    assert code == 2 and "'objective.adr_warmup_epochs' ramps the ADR weights from 0" in err
    code, _, _ = run_cli("train", "--config", tiny_toml, "--out", tmp_path / "y", "--set",
                         "objective.weights.ce_clean=0", "objective.weights.ce_adv=0",
                         "train.epochs=1", "--no-progress", capsys=capsys)
    assert code == 0  # ADR's terms alone are an objective; only the warm-up leaves nothing


@pytest.mark.parametrize("content, needle", [
    (None, "is a directory; give a .toml file"),
    ("", "is empty; it would run every default"),
    ("train = 5\n", "'train' must be a [train] table, got 5"),
])
def test_config_file_mistakes_are_blamed_on_the_file(tmp_path, capsys, content, needle):
    path = tmp_path / "c.toml"
    path.mkdir() if content is None else path.write_text(content)
    code, _, err = run_cli("train", "--config", path, "--out", tmp_path / "x", "--no-progress",
                           capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert needle in err and str(path) in err and "override" not in err
    assert not (tmp_path / "x").exists()


def test_missing_data_says_how_to_obtain_it(tmp_path, tiny_toml, capsys):
    code, _, err = run_cli("train", "--config", tiny_toml, "--out", tmp_path / "x",
                           "--set", "data.name=mnist", f"data.root={tmp_path / 'empty'}",
                           "model.name=smallcnn", "model.options={}", capsys=capsys)
    assert code == 2 and "MNIST not found" in err and "adrnet data fetch mnist" in err


def test_run_dir_misuse(tmp_path, tiny_toml, capsys):
    assert run_cli("train", "--config", tiny_toml, "--out", tmp_path / "r", capsys=capsys)[0] == 0
    code, _, err = run_cli("train", "--config", tiny_toml, "--out", tmp_path / "r", capsys=capsys)
    assert code == 2 and "already holds a run" in err and "--resume" in err
    code, _, err = run_cli("train", "--resume", tmp_path / "nothing", capsys=capsys)
    assert code == 2 and "no config.toml" in err
    code, _, err = run_cli("train", "--resume", tmp_path / "r", "--set", "optim.lr=0.5",
                           capsys=capsys)
    assert code == 2 and "optim.lr changed" in err
    code, _, err = run_cli("train", "--resume", tmp_path / "r", "--config", tiny_toml,
                           capsys=capsys)
    assert code == 2 and "drop --config" in err
    code, _, err = run_cli("train", capsys=capsys)
    assert code == 2 and "--config" in err
    code, _, err = run_cli("train", "--config", tmp_path / "nope.toml", capsys=capsys)
    assert code == 2 and "nope.toml not found" in err


def test_data_info_and_fetch_hints(capsys, tiny_mnist):
    code, out, _ = run_cli("data", "info", "blobs", "moons", capsys=capsys)
    assert code == 0 and "blobs" in out and "classes 3" in out and "val 500" in out
    code, out, _ = run_cli("data", "info", "mnist", "--root", tiny_mnist, capsys=capsys)
    assert code == 0 and "shape [1, 28, 28]" in out and "train 100, val 5000, test 50" in out
    code, out, _ = run_cli("data", "info", "mnist", "--root", tiny_mnist / "nothing",
                           capsys=capsys)
    assert code == 0 and "not found" in out and "adrnet data fetch mnist" in out
    code, out, _ = run_cli("data", "fetch", "fashion_mnist", "--dry-run", capsys=capsys)
    assert code == 0 and "dataset-fashion-mnist" in out
    code, _, err = run_cli("data", "info", "imagenet", capsys=capsys)
    assert code == 2 and "unknown data set" in err


def test_parser_documents_every_train_option():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {o for action in train._actions for o in action.option_strings}
    assert {"--config", "--set", "--out", "--resume", "--resume-if-exists", "--device",
            "--no-progress"} <= options


def test_eval_subcommands_are_registered():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert "eval" in commands


@pytest.mark.parametrize("module", ["adrnet", "adrnet.cli"])
def test_python_dash_m_runs_the_command(module):
    """`python -m adrnet` and `python -m adrnet.cli` (what torchrun launches) reach main()."""
    from adrnet import __version__
    result = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"adrnet {__version__}"


def test_eval_package_does_not_import_the_command_line():
    code = ("import sys, pkgutil, importlib, adrnet.eval as e\n"
            "for m in pkgutil.iter_modules(e.__path__): importlib.import_module('adrnet.eval.' + m.name)\n"
            "print(sorted(n for n in sys.modules if n.startswith('adrnet.cli')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_data_fetch_hints_come_from_the_registry(capsys):
    from adrnet.data import DATASETS
    fetchable = build_parser().parse_args(["data", "fetch", "mnist"])
    assert fetchable.name == "mnist"
    for name in ("fashion_mnist", "cifar10"):
        code, out, _ = run_cli("data", "fetch", name, "--dry-run", "--root", "./data",
                               capsys=capsys)  # the real download: tests/test_fetch.py
        assert code == 0 and DATASETS[name].how_to_get("./data") in out
    code, out, _ = run_cli("data", "info", "moons", capsys=capsys)
    assert code == 0 and "(generated)" in out
    assert {n for n, info in DATASETS.items() if info.generated} == {"moons", "circles", "blobs"}
    for kind in ("npz", "folder", "moons"):  # nothing to download: the user's file, or generated
        with pytest.raises(SystemExit) as refused:
            build_parser().parse_args(["data", "fetch", kind])
        assert refused.value.code == 2
