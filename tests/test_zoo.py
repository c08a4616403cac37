"""The shipped models (adrnet.runs.zoo): ``zoo:NAME`` loads and evaluates without training,
each shipped model reproduces on this CPU the figures recorded when it was shipped, and a
damaged or unknown entry is refused in one line."""

import json

import pytest
import torch

import adrnet
from adrnet.cli import main
from adrnet.data import load
from adrnet.errors import CheckpointError, DataError
from adrnet.eval import evaluate_model
from adrnet.eval.robust import predict
from adrnet.runs import load_checkpoint, resolve_checkpoint
from adrnet.runs import zoo
from adrnet.runs.checkpoint import read_checkpoint

SHIPPED = zoo.zoo_names()


def test_the_headline_models_are_shipped():
    assert {"mnist_pgd_at", "mnist_adr_pgd", "mnist_trades", "mnist_adr_trades", "mnist_recipe",
            "fashion_mnist_pgd_at", "fashion_mnist_adr_pgd"} <= set(SHIPPED)


def first_test_images(cfg, n):
    """The first ``n`` test images of the model's data set; the test is skipped (saying how to
    get them) where the data set's files are not on this machine."""
    try:
        x, y = load(cfg.data).test
    except DataError as exc:
        pytest.skip(f"{cfg.data.name} files absent ({exc}); `adrnet data fetch {cfg.data.name}`")
    return x[:n], y[:n]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_classifies_as_recorded(name):
    """Within one image of the 500: another CPU's kernels may round one logit differently."""
    model, cfg = adrnet.load_model(f"zoo:{name}")
    recorded = zoo.zoo_record(name)["figures"]["clean_first_500"]
    x, y = first_test_images(cfg, recorded["n"])
    correct = int(predict(model, x).eq(y).sum())
    assert abs(correct - recorded["correct"]) <= 1, (name, correct, recorded)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_resists_pgd20_as_recorded(name):
    """Within two images of the 200: an attack's path amplifies rounding differences."""
    model, cfg = adrnet.load_model(f"zoo:{name}")
    recorded = zoo.zoo_record(name)["figures"]["pgd20_first_200"]
    x, y = first_test_images(cfg, recorded["n"])
    result = evaluate_model(model, x, y, attacks=("pgd",), eps=recorded["eps"], norm=recorded["norm"],
                            steps=recorded["steps"], seed=recorded["seed"])
    assert abs(round(result.worst_case_accuracy * len(y)) - recorded["correct"]) <= 2, name


def test_adrnet_eval_zoo_writes_below_the_working_directory(tmp_path, monkeypatch, capsys):
    model, cfg = adrnet.load_model("zoo:mnist_adr_pgd")
    monkeypatch.chdir(tmp_path)
    first_test_images(cfg, 1)  # skipped without MNIST where the command will look for it
    assert main(["eval", "zoo:mnist_adr_pgd", "--attacks", "fgsm", "--n", "500", "--no-diagnostics",
                 "--no-progress"]) == 0
    record = json.loads((tmp_path / "runs" / "zoo" / "mnist_adr_pgd" / "eval.json").read_text())
    recorded = zoo.zoo_record("mnist_adr_pgd")
    assert abs(record["clean_accuracy"] * 500 - recorded["figures"]["clean_first_500"]["correct"]) <= 1
    assert record["weights_sha256"] == recorded["files"]["weights"]["sha256"]
    assert record["objective"] == recorded["config"]["objective"]["name"] == "adr_pgd"
    assert "runs/zoo/mnist_adr_pgd/eval.json" in capsys.readouterr().out


# ---- entries written here, from a toy run, into a folder of the test's own ----

@pytest.fixture
def toy_zoo(tiny_toy_run, tmp_path, monkeypatch):
    """A zoo of the test's own (the real one is never written) holding the toy run's best
    checkpoint as ``zoo:toy``."""
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    zoo.write_zoo_entry(read_checkpoint(resolve_checkpoint(tiny_toy_run)), "toy",
                        {"clean_first_500": {"correct": 1, "n": 500}}, "a toy run")
    return tmp_path / "zoo"


def test_a_shipped_entry_is_the_checkpoint_it_was_made_from(toy_zoo, tiny_toy_run):
    shipped = load_checkpoint("zoo:toy")
    original = load_checkpoint(tiny_toy_run)
    assert shipped.cfg == original.cfg
    for key, tensor in original.model.state_dict().items():
        assert torch.equal(shipped.model.state_dict()[key], tensor), key
    assert not shipped.model.training
    assert sorted(path.name for path in toy_zoo.iterdir()) == ["toy.json", "toy.safetensors"]
    record = zoo.zoo_record("toy")
    assert record["trained"]["which"] == "best" and record["description"] == "a toy run"
    assert "state" not in record["files"]  # no optimiser state, no pickle: tensors only


def test_damaged_weights_are_refused_before_use(toy_zoo):
    weights = toy_zoo / "toy.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256.*damaged: reinstall adrnet$"):
        adrnet.load_model("zoo:toy")


@pytest.mark.parametrize("name", ["nothing", "../toy", "Toy", ""])
def test_an_unknown_name_lists_the_shipped_ones(toy_zoo, name):
    with pytest.raises(CheckpointError, match=r"no shipped model .*the zoo holds: zoo:toy$"):
        adrnet.load_model(f"zoo:{name}")


def test_a_record_of_another_format_is_refused(toy_zoo):
    record = json.loads((toy_zoo / "toy.json").read_text())
    (toy_zoo / "toy.json").write_text(json.dumps({**record, "version": 2}))
    with pytest.raises(CheckpointError, match="version 2.*upgrade adrnet"):
        adrnet.load_model("zoo:toy")
    (toy_zoo / "toy.json").write_text(json.dumps({**record, "version": True}))
    with pytest.raises(CheckpointError, match="version True: the record is corrupt"):
        adrnet.load_model("zoo:toy")
    (toy_zoo / "toy.json").write_text(json.dumps({**record, "format": "adrnet-checkpoint"}))
    with pytest.raises(CheckpointError, match="not an adrnet zoo record"):
        adrnet.load_model("zoo:toy")


def test_a_shipped_model_has_no_last_checkpoint(toy_zoo):
    with pytest.raises(CheckpointError, match="its run's best: which='last' does not apply"):
        adrnet.load_model("zoo:toy", which="last")


def test_adrnet_zoo_lists_every_shipped_model(capsys):
    assert main(["zoo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [f"zoo:{name}" for name in SHIPPED]
