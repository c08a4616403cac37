"""Your data, your model (issue 20): the npz and folder data set kinds, a model given as
``package.module:factory`` (z from a forward hook), and ``adrnet eval --model --weights``."""

import json
import sys

import numpy as np
import pytest
import torch

from _train_helpers import meta, records, write_config
from adrnet.cli import main
from adrnet.config import DataConfig, config_from_dict, config_to_dict
from adrnet.data import describe, load
from adrnet.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MODELS_MODULE = "adrnet_own_test_models"
MODELS_SOURCE = '''
import math
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes, in_shape, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(1), nn.Linear(math.prod(in_shape), width), nn.ReLU())
        self.embed = nn.Linear(width, width)
        self.act = nn.Tanh()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.act(self.embed(self.body(x))))


def build(num_classes, in_shape, width=8):
    return Net(num_classes, in_shape, width)


def broken(num_classes, in_shape):
    raise ValueError("this factory fails")


def three_outputs(num_classes, in_shape):
    return nn.Sequential(nn.Flatten(1), nn.Linear(math.prod(in_shape), 3 + num_classes))
'''


# ----------------------------------------------------------------------------- helpers
def cli(*args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args) -> str:
    """The one `error:` line of a command that must exit with status 2."""
    code, _, err = cli(*args, capsys=capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def images(n, shape=(8, 8, 3), seed=0, classes=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % classes


def write_npz(path, *, n_train=60, n_test=20, layout="nhwc", dtype="uint8", val=0, seed=0,
              **replace):
    x, y = images(n_train + n_test + val, seed=seed)
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    if dtype == "float":
        x = x.astype(np.float32) / 255
    arrays = {"x_train": x[:n_train], "y_train": y[:n_train],
              "x_test": x[n_train:n_train + n_test], "y_test": y[n_train:n_train + n_test]}
    if val:
        arrays.update(x_val=x[n_train + n_test:], y_val=y[n_train + n_test:])
    arrays.update(replace)
    np.savez(path, **arrays)
    return path


def write_folder(root, *, classes=("zebra", "ant", "cat"), per_class=(6, 3), size=(10, 8),
                 mode="RGB", ext="png"):
    from PIL import Image
    rng = np.random.default_rng(1)
    channels = 3 if mode == "RGB" else 1
    for split, count in zip(("train", "test"), per_class):
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(
                    folder / f"{i}.{ext}")
    return root


TRAIN = {
    "attack": {"eps": 0.03, "steps": 2, "step_size": 0.01},
    "objective": {"name": "adr_pgd"},
    "optim": {"name": "adam", "lr": 0.01},
    "schedule": {"name": "constant"},
    "train": {"epochs": 1, "batch_size": 20, "num_threads": 1, "progress": False, "log_every": 1},
    "eval": {"val_size": 10, "val_steps": 2, "batch_size": 50},
}


def train_config(tmp_path, data, model=None, **sections):
    raw = {"data": data, "model": model or {"name": f"{MODELS_MODULE}:build", "latent": "act"},
           **TRAIN, **sections}
    return write_config(tmp_path / "run.toml", raw)


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A module of the user's (in the current directory) with model factories."""
    (tmp_path / f"{MODELS_MODULE}.py").write_text(MODELS_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    yield MODELS_MODULE
    sys.modules.pop(MODELS_MODULE, None)


# ----------------------------------------------------------------------------- npz
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_npz_in_either_layout_and_dtype_loads_as_nchw_floats(tmp_path, layout, dtype):
    path = write_npz(tmp_path / "d.npz", layout=layout, dtype=dtype)
    data = DataConfig(name="npz", path=str(path), val_size=6)
    info = describe(data)
    assert info.shape == (3, 8, 8) and info.num_classes == 3 and len(info.sha256) == 64
    splits = load(data)
    x, _ = images(80)
    expected = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert torch.allclose(splits.test.x, expected[60:], atol=1e-7)
    assert (len(splits.train.y), len(splits.val.y), len(splits.test.y)) == (54, 6, 20)
    pooled = torch.cat([splits.train.x, splits.val.x])
    assert sorted(map(bytes, pooled.flatten(1).numpy())) == sorted(
        map(bytes, expected[:60].flatten(1).numpy()))
    channel = expected[:60].transpose(0, 1).reshape(3, -1).double()
    assert info.mean == pytest.approx(channel.mean(1).tolist(), abs=1e-5)
    assert info.std == pytest.approx(channel.std(1, unbiased=False).tolist(), abs=1e-5)


def test_npz_layout_rule_and_the_layout_key(tmp_path):
    # [N, 3, 8, 3]: the second axis is 3, so the rule reads it as channels-first
    x = np.random.default_rng(0).random((20, 3, 8, 3), dtype=np.float32)
    y = np.arange(20) % 2
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert describe(DataConfig(name="npz", path=str(tmp_path / "a.npz"))).shape == (3, 8, 3)
    assert describe(DataConfig(name="npz", path=str(tmp_path / "a.npz"), layout="nhwc")).shape == (3, 3, 8)
    grey = (x[:, 0] * 255).astype(np.uint8)  # [N, H, W]
    np.savez(tmp_path / "g.npz", x_train=grey, y_train=y, x_test=grey, y_test=y)
    assert describe(DataConfig(name="npz", path=str(tmp_path / "g.npz"))).shape == (1, 8, 3)


def test_npz_given_statistics_classes_and_its_own_validation_split(tmp_path):
    path = write_npz(tmp_path / "d.npz", val=12)
    data = DataConfig(name="npz", path=str(path), mean=(0.5,), std=(0.25, 0.5, 1.0), num_classes=5)
    info = describe(data)
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.25, 0.5, 1.0) and info.num_classes == 5
    splits = load(DataConfig(name="npz", path=str(path)))
    x, _ = images(92)
    assert len(splits.train.y) == 60 and len(splits.val.y) == 12
    assert torch.equal(splits.val.x, torch.from_numpy(x[80:].transpose(0, 3, 1, 2).astype(np.float32)).div_(255))
    pooled = load(DataConfig(name="npz", path=str(path), val_size=7))
    assert (len(pooled.train.y), len(pooled.val.y)) == (65, 7)


def test_new_data_keys_stay_out_of_the_config_and_fit_their_kind(tmp_path):
    assert set(config_to_dict(config_from_dict({}))["data"]) == {"name", "train_subset", "split_seed"}
    with pytest.raises(ConfigError, match="'data.path' is only read by the data set kinds"):
        config_from_dict({"data": {"name": "mnist", "path": "x.npz"}})
    with pytest.raises(ConfigError, match="set config key 'data.path'"):
        config_from_dict({"data": {"name": "npz"}})
    with pytest.raises(ConfigError, match="data.resize"):
        config_from_dict({"data": {"name": "folder", "path": "d", "resize": [0, 4]}})
    with pytest.raises(ConfigError, match="'data.resize' is not read by data.name = 'npz'"):
        config_from_dict({"data": {"name": "npz", "path": "d.npz", "resize": [4, 4]}})
    cfg = config_from_dict({"data": {"name": "npz", "path": "d.npz", "mean": [0.5]}})
    assert config_to_dict(cfg)["data"] == {"name": "npz", "train_subset": 0, "split_seed": 0,
                                           "path": "d.npz", "mean": [0.5]}


# ----------------------------------------------------------------------------- folder
@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_an_image_folder_with_sorted_classes(tmp_path, ext):
    root = write_folder(tmp_path / "imgs", ext=ext)
    info = describe(DataConfig(name="folder", path=str(root)))
    assert info.classes == ("ant", "cat", "zebra") and info.num_classes == 3
    assert info.shape == (3, 8, 10)
    splits = load(DataConfig(name="folder", path=str(root), val_size=3))
    assert (len(splits.train.y), len(splits.val.y), len(splits.test.y)) == (15, 3, 9)
    assert splits.test.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    if ext == "png":  # lossless: the pixels of test/ant/0.png come back exactly
        from PIL import Image
        first = np.asarray(Image.open(root / "test" / "ant" / "0.png"), dtype=np.float32) / 255
        assert torch.equal(splits.test.x[0], torch.from_numpy(first.transpose(2, 0, 1).copy()))


def test_a_folder_of_mixed_sizes_is_resized_when_asked(tmp_path, capsys):
    from PIL import Image
    root = write_folder(tmp_path / "imgs", classes=("a", "b"), mode="L")
    Image.new("L", (12, 5), 128).save(root / "train" / "b" / "big.png")
    line = refused(capsys, "data", "info", "folder", "--path", root)
    assert "train/b/big.png is 12x5" in line and "data.resize" in line
    info = describe(DataConfig(name="folder", path=str(root), resize=(6, 4)))
    assert info.shape == (1, 6, 4)
    assert load(DataConfig(name="folder", path=str(root), resize=(6, 4))).train.x.shape[1:] == (1, 6, 4)


# ----------------------------------------------------------------------------- bad input
def _npz_bad(tmp_path, case):
    path = tmp_path / "bad.npz"
    if case == "labels out of range":
        write_npz(path, y_test=np.full(20, 7))
    elif case == "class without examples":
        write_npz(path, y_train=np.arange(60) % 3 + 1, y_test=np.arange(20) % 3 + 1)
    elif case == "empty split":
        write_npz(path, x_test=np.zeros((0, 8, 8, 3), np.uint8), y_test=np.zeros(0, np.int64))
    elif case == "nan":
        x = np.full((20, 3, 8, 8), 0.5, np.float32)
        x[3, 0, 0, 0] = np.nan
        write_npz(path, dtype="float", layout="nchw", x_test=x)
    elif case == "out of range floats":
        write_npz(path, dtype="float", x_test=np.full((20, 8, 8, 3), 1.5, np.float32))
    elif case == "missing array":
        np.savez(path, x_train=np.zeros((4, 2), np.float32), y_train=np.arange(4) % 2)
    elif case == "objects":
        np.savez(path, x_train=np.array([{"a": 1}] * 4, dtype=object), y_train=np.arange(4) % 2,
                 x_test=np.zeros((4, 2), np.float32), y_test=np.arange(4) % 2)
    elif case == "not an npz":
        path.write_text("hello")
    return path


@pytest.mark.parametrize("case,expected", [
    ("labels out of range", "y_test holds labels outside [0, 3) (found 7..7"),
    ("class without examples", "class 0 has no training example"),
    ("empty split", "the test split is empty"),
    ("nan", "x_test holds 1 NaN or infinite value"),
    ("out of range floats", "x_test holds values in [1.5, 1.5], outside [0, 1]"),
    ("missing array", "lacks the array(s) x_test, y_test"),
    ("objects", "x_train holds Python objects"),
    ("not an npz", "is not an .npz file"),
])
def test_a_bad_npz_is_one_error_line(tmp_path, capsys, case, expected):
    line = refused(capsys, "data", "info", "npz", "--path", _npz_bad(tmp_path, case))
    assert expected in line and "bad.npz" in line


def test_labels_above_a_given_num_classes_are_refused(tmp_path, capsys, user_models):
    path = write_npz(tmp_path / "d.npz")
    config = train_config(tmp_path, {"name": "npz", "path": str(path), "num_classes": 2})
    line = refused(capsys, "train", "--config", config, "--out", tmp_path / "run")
    assert "y_train holds labels outside [0, 2) (found 0..2; 2 classes, given by data.num_classes)" in line


def _folder_bad(tmp_path, case):
    from PIL import Image
    root = write_folder(tmp_path / "imgs", classes=("a", "b"))
    if case == "class without images":
        (root / "train" / "c").mkdir()
    elif case == "mixed modes":
        Image.new("L", (10, 8)).save(root / "train" / "b" / "grey.png")
    elif case == "not an image":
        (root / "test" / "a" / "notes.txt").write_text("not a picture")
    elif case == "empty split":
        for folder in (root / "test").iterdir():
            for file in folder.iterdir():
                file.unlink()
            folder.rmdir()
    elif case == "rgba":
        Image.new("RGBA", (10, 8)).save(root / "train" / "a" / "alpha.png")
    return root


@pytest.mark.parametrize("case,expected", [
    ("class without images", "class 'c' has no images in train/c/"),
    ("mixed modes", "train/b/grey.png is grey-scale but train/a/0.png is RGB"),
    ("not an image", "test/a/notes.txt is not an image"),
    ("empty split", "the test split is empty"),
    ("rgba", "train/a/alpha.png has mode RGBA"),
])
def test_a_bad_image_folder_is_one_error_line(tmp_path, capsys, case, expected):
    assert expected in refused(capsys, "data", "info", "folder", "--path", _folder_bad(tmp_path, case))


def test_data_too_large_for_memory_is_refused_before_it_is_read(tmp_path, capsys, monkeypatch):
    import adrnet.data.own as own
    monkeypatch.setattr(own, "available_memory", lambda: 10_000)
    line = refused(capsys, "data", "info", "npz", "--path", write_npz(tmp_path / "d.npz"))
    assert "too large to hold in memory" in line and "has 0.0 MiB available" in line
    assert "need 0.1 MiB once loaded" in line
    line = refused(capsys, "data", "info", "folder", "--path", write_folder(tmp_path / "f"))
    assert "too large to hold in memory" in line


# ----------------------------------------------------------------------------- own model
def test_training_a_factory_model_on_an_npz_takes_z_from_the_named_layer(tmp_path, capsys, user_models):
    write_npz(tmp_path / "d.npz")
    config = train_config(tmp_path, {"name": "npz", "path": "d.npz"},
                          model={"name": f"{user_models}:build", "latent": "embed",
                                 "options": {"width": 6}})
    code, out, err = cli("train", "--config", config, "--out", tmp_path / "run", capsys=capsys)
    assert code == 0, err
    steps = records(tmp_path / "run", "step")
    assert steps and all(r["loss"] == r["loss"] for r in steps)
    import adrnet
    model, cfg = adrnet.load_model(tmp_path / "run", which="last")
    assert cfg.model.name == f"{user_models}:build" and cfg.model.latent == "embed"
    x = load(cfg.data).test.x[:5]
    logits, z = model(x, return_latent=True)
    net = model.net
    expected = net.embed(net.body(model.normalize(x)))
    assert z.shape == (5, 6) and torch.equal(z, expected.flatten(1))
    assert torch.equal(logits, net.head(net.act(expected)))
    record = meta(tmp_path / "run")
    assert record["model"]["name"] == f"{user_models}:build"
    assert record["data"]["sha256"] == describe(cfg.data).sha256 and record["data"]["shape"] == [3, 8, 8]
    # a checkpoint naming a module that is not imported: refused, with the fix
    sys.modules.pop(user_models)
    line = refused(capsys, "eval", tmp_path / "run", "--which", "last", "--steps", "2",
                   "--no-progress", "--no-diagnostics")
    assert f"pass --import {user_models}" in line
    assert user_models not in sys.modules  # the record made nothing import
    code, out, err = cli("eval", "--import", user_models, tmp_path / "run", "--which", "last",
                         "--steps", "2", "--no-progress", "--no-diagnostics", capsys=capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["model"] == f"{user_models}:build"


def test_the_default_latent_is_the_input_of_the_last_layer_with_weights(user_models):
    import importlib
    from adrnet.models import build_model
    importlib.import_module(user_models)
    model = build_model(f"{user_models}:build", num_classes=3, in_shape=(3, 4, 4), mean=(0.5,),
                        std=(0.5,))
    x = torch.rand(4, 3, 4, 4)
    _, z = model(x, return_latent=True)
    net = model.net
    assert torch.equal(z, net.act(net.embed(net.body((x - 0.5) / 0.5))))


def test_a_folder_run_records_its_classes_and_resumes_only_on_the_same_data(tmp_path, capsys, user_models):
    root = write_folder(tmp_path / "imgs")
    config = train_config(tmp_path, {"name": "folder", "path": "imgs", "val_size": 3})
    code, _, err = cli("train", "--config", config, "--out", tmp_path / "run", capsys=capsys)
    assert code == 0, err
    record = meta(tmp_path / "run")["data"]
    assert record["classes"] == ["ant", "cat", "zebra"] and record["shape"] == [3, 8, 10]
    code, _, err = cli("train", "--resume", tmp_path / "run", "--set", "train.epochs=2", capsys=capsys)
    assert code == 0, err
    assert [r["epoch"] for r in records(tmp_path / "run")] == [1, 2]
    from PIL import Image
    Image.new("RGB", (10, 8), (1, 2, 3)).save(root / "train" / "ant" / "0.png")
    line = refused(capsys, "train", "--resume", tmp_path / "run", "--set", "train.epochs=3")
    assert "the training and validation examples it would read now are not those it was trained on" in line


def test_resuming_on_a_changed_npz_is_refused(tmp_path, capsys, user_models):
    write_npz(tmp_path / "d.npz")
    config = train_config(tmp_path, {"name": "npz", "path": "d.npz"})
    assert cli("train", "--config", config, "--out", tmp_path / "run", capsys=capsys)[0] == 0
    code, _, err = cli("train", "--resume", tmp_path / "run", "--set", "train.epochs=2", capsys=capsys)
    assert code == 0, err
    write_npz(tmp_path / "d.npz", seed=5)
    line = refused(capsys, "train", "--resume", tmp_path / "run", "--set", "train.epochs=3")
    assert "are not those it was trained on (SHA-256" in line


@pytest.mark.parametrize("model,expected", [
    ({"name": "no_such_module_here:build"}, "module 'no_such_module_here' not found"),
    ({"name": f"{MODELS_MODULE}:nothing"}, f"module '{MODELS_MODULE}' has no attribute 'nothing'"),
    ({"name": f"{MODELS_MODULE}:broken"}, "failed: ValueError: this factory fails"),
    ({"name": f"{MODELS_MODULE}:build", "latent": "neck"},
     "has no submodule 'neck'; its submodules are body, body.0, body.1, body.2, embed, act, head"),
    ({"name": f"{MODELS_MODULE}:three_outputs"}, "returns [2, 6] for inputs of shape [2, 3, 8, 8]"),
    ({"name": f"{MODELS_MODULE}:build", "options": {"depth": 3}}, "unknown option(s) ['depth']"),
    ({"name": "not a path:x"}, "neither a registered model nor an import path"),
])
def test_a_wrong_model_is_one_error_line(tmp_path, capsys, user_models, model, expected):
    write_npz(tmp_path / "d.npz")
    config = train_config(tmp_path, {"name": "npz", "path": "d.npz"}, model=model)
    assert expected in refused(capsys, "train", "--config", config, "--out", tmp_path / "run")


# ----------------------------------------------------------------------------- eval --model
def test_eval_of_a_model_trained_outside_adrnet(tmp_path, capsys, user_models):
    import importlib
    from safetensors.torch import save_file
    write_npz(tmp_path / "d.npz")
    module = importlib.import_module(user_models)
    torch.manual_seed(0)
    net = module.build(num_classes=3, in_shape=(3, 8, 8), width=5)
    (tmp_path / "plain").mkdir()
    torch.save(net.state_dict(), tmp_path / "plain" / "model.pt")
    save_file(net.state_dict(), str(tmp_path / "plain" / "model.safetensors"))
    sys.modules.pop(user_models)  # --model imports it: the user named it on the command line
    common = ("--data", "npz", "--data-path", "d.npz", "--eps", "8/255", "--steps", "3",
              "--n", "12", "--no-progress", "--no-diagnostics", "--set", "model.options.width=5",
              "data.mean=[0]", "data.std=[1]")
    code, out, err = cli("eval", "--model", f"{user_models}:build", "--weights",
                         tmp_path / "plain" / "model.pt", *common, capsys=capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "plain" / "eval.json").read_text())
    assert record["model"] == f"{user_models}:build" and record["n"] == 12
    assert record["which"] == "model.pt" and {"fgsm", "pgd-3"} <= set(record["attack_accuracy"])
    x, y = load(DataConfig(name="npz", path="d.npz")).test
    with torch.no_grad():
        clean = (net(x[:12]).argmax(1) == y[:12]).float().mean().item()
    assert record["clean_accuracy"] == pytest.approx(clean)
    out_file = tmp_path / "st.json"
    code, _, err = cli("eval", "--model", f"{user_models}:build", "--weights",
                       tmp_path / "plain" / "model.safetensors", *common, "--out", out_file,
                       capsys=capsys)
    assert code == 0, err
    assert json.loads(out_file.read_text())["clean_accuracy"] == record["clean_accuracy"]
    code, out, err = cli("report", tmp_path / "plain", "--out", tmp_path / "r.html", capsys=capsys)
    assert code == 0, err
    assert "model.pt" in (tmp_path / "r.md").read_text()
    # weights of another shape, a file that is no state dict, a missing option
    line = refused(capsys, "eval", "--model", f"{user_models}:build", "--weights",
                   tmp_path / "plain" / "model.pt", *common[:-4])
    assert "different architecture" in line and "body.1.bias is [5], the model needs [8]" in line
    torch.save({"step": 3}, tmp_path / "plain" / "other.pt")
    line = refused(capsys, "eval", "--model", f"{user_models}:build", "--weights",
                   tmp_path / "plain" / "other.pt", *common)
    assert "not a state dict" in line
    line = refused(capsys, "eval", "--model", f"{user_models}:build", "--weights",
                   tmp_path / "plain" / "model.pt", "--data", "npz", "--data-path", "d.npz")
    assert "needs --eps too" in line
