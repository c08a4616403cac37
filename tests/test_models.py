"""Properties of adrnet.models: shapes, latent z, normalisation, init, bf16 / channels_last."""

import copy
import functools
import math

import pytest
import torch

from adrnet.errors import ConfigError
from adrnet.models import MODELS, build_model

# Small inputs per registry entry (WRN with a tiny depth/width for speed) and the
# expected default K = dim(z) for that input, from method.md's choice of latent layer.
CASES = {
    "smallcnn": ((1, 28, 28), {}, 64 * 4 * 4),
    "resnet18": ((3, 8, 8), {}, 512),
    "preact_resnet18": ((3, 8, 8), {}, 512),
    "wrn": ((3, 8, 8), {"depth": 10, "width": 1}, 64 * 1),
    "wrn34_10": ((3, 8, 8), {}, 64 * 10),
    "mlp": ((2,), {"hidden": (16, 8)}, 8),
}
NUM_CLASSES = 10
BATCH = 3
# wrn34_10 is the "wrn" code at full size (46M parameters): the forward tests run on
# the tiny "wrn" case; wrn34_10 gets the construction tests and one forward of its own.
LIGHT = sorted(set(MODELS) - {"wrn34_10"})


def make(name, latent=None):
    """A fresh copy of a cached build (building ResNets and WRN-34-10 is the slow part)."""
    return copy.deepcopy(_built(name, latent))


@functools.cache
def _built(name, latent):
    in_shape, options, _ = CASES[name]
    channels = in_shape[0]
    mean = [0.3 + 0.1 * c for c in range(channels)]
    std = [0.2 + 0.05 * c for c in range(channels)]
    return build_model(name, num_classes=NUM_CLASSES, in_shape=in_shape, mean=mean,
                       std=std, latent=latent, **options)


def inputs(name, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((BATCH,) + CASES[name][0], generator=generator)


def randomize_head(model):
    """SmallCNN's zero-initialised head makes every logit 0; give it values to compare."""
    torch.manual_seed(1)
    head = model.stages[list(model.stages)[-1]]
    torch.nn.init.normal_(head.weight, std=0.1)
    torch.nn.init.normal_(head.bias, std=0.1)


def test_every_registry_entry_has_a_case():
    assert set(CASES) == set(MODELS)


@pytest.mark.parametrize("name", LIGHT)
def test_shapes_latent_dim_and_grad_through_z(name):
    model = make(name)
    assert model.training, "building must leave the model in train mode"
    assert model.latent_dim == CASES[name][2]
    logits, z = model(inputs(name), return_latent=True)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert z.shape == (BATCH, model.latent_dim)
    assert model.num_classes == NUM_CLASSES
    # z comes from the graph of the normal forward pass, not a detached copy.
    first = list(next(iter(model.stages.values())).parameters())
    grads = torch.autograd.grad(z.sum(), first)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", LIGHT)
def test_return_latent_gives_same_logits_and_nonnegative_z(name):
    model = make(name).eval()
    x = inputs(name)
    logits, z = model(x, return_latent=True)
    assert torch.equal(model(x), logits)
    # Every default latent is taken after a ReLU (then pooled): z >= 0.
    assert z.min() >= 0


@pytest.mark.parametrize("name", LIGHT)
def test_forward_stages_order_shapes_and_latent(name):
    model = make(name).eval()
    x = inputs(name)
    outputs = model.forward_stages(x)
    assert list(outputs) == list(model.stages)
    for stage, out in outputs.items():
        assert tuple(out.shape) == (BATCH,) + model.stage_shapes[stage]
    logits, z = model(x, return_latent=True)
    assert torch.equal(outputs[list(outputs)[-1]], logits)
    assert torch.equal(outputs[model.latent].flatten(1), z)


@pytest.mark.parametrize("name", LIGHT)
def test_normalisation_is_the_first_operation(name):
    model = make(name).eval()
    randomize_head(model)
    x = inputs(name)
    channels = x.shape[1]
    view = (1, channels) + (1,) * (x.dim() - 2)
    mean = torch.tensor([0.3 + 0.1 * c for c in range(channels)]).view(view)
    std = torch.tensor([0.2 + 0.05 * c for c in range(channels)]).view(view)
    out = (x - mean) / std
    for stage in model.stages.values():
        out = stage(out)
    torch.testing.assert_close(model(x), out, rtol=1e-5, atol=1e-6)
    unnormalised = x
    for stage in model.stages.values():
        unnormalised = stage(unnormalised)
    assert not torch.allclose(unnormalised, out)
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


@pytest.mark.parametrize("name", LIGHT)
def test_latent_selection_by_name_changes_k(name):
    model = make(name).eval()
    x = inputs(name)
    outputs = model.forward_stages(x)
    dims = set()
    for stage, out in outputs.items():
        model.latent = stage
        _, z = model(x, return_latent=True)
        assert model.latent_dim == math.prod(out.shape[1:]) == z.shape[1]
        torch.testing.assert_close(z, out.flatten(1))
        dims.add(model.latent_dim)
    assert len(dims) > 1, "selecting another stage must change K"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bad_latent_name_lists_the_stages(name):
    with pytest.raises(ConfigError, match=list(make(name).stages)[0]):
        make(name, latent="no_such_stage")
    model = make(name)
    with pytest.raises(ConfigError, match="no_such_stage"):
        model.latent = "no_such_stage"


@pytest.mark.parametrize("name", LIGHT)
def test_channels_last_bf16_autocast_close_to_fp32(name):
    model = make(name).eval()
    randomize_head(model)
    x = inputs(name)
    ref_logits, ref_z = model(x, return_latent=True)
    if x.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fp32_logits, fp32_z = model(x, return_latent=True)
    # flatten(1) of a channels_last tensor keeps the logical (C, H, W) order.
    torch.testing.assert_close(fp32_z, ref_z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fp32_logits, ref_logits, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, z = model(x, return_latent=True)
    assert z.shape == (BATCH, model.latent_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(z).all()
    for low, ref in ((logits.float(), ref_logits), (z.float(), ref_z)):
        assert (low - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3
    # A 4-D latent stage (the first CNN stage) flattened from channels_last memory.
    first = list(model.stages)[0]
    model.latent = first
    _, z_first = model(x, return_latent=True)
    ref_first = model.forward_stages(x.contiguous())[first].contiguous().view(BATCH, -1)
    torch.testing.assert_close(z_first, ref_first, rtol=1e-4, atol=1e-5)


def test_smallcnn_architecture_and_parameter_count():
    model = make("smallcnn")
    assert model.stage_shapes["conv1"] == (32, 12, 12)  # 28 -> 26 -> 24 -> pool 12
    assert model.stage_shapes["conv2"] == (64 * 4 * 4,)  # 12 -> 10 -> 8 -> pool 4
    convs = [1 * 32 * 9 + 32, 32 * 32 * 9 + 32, 32 * 64 * 9 + 64, 64 * 64 * 9 + 64]
    linears = [1024 * 200 + 200, 200 * 200 + 200, 200 * 10 + 10]
    assert sum(p.numel() for p in model.parameters()) == sum(convs) + sum(linears)
    dropouts = [m for m in model.stages["fc1"] if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.5


def test_smallcnn_zero_initialised_head_gives_uniform_softmax():
    model = make("smallcnn")  # train mode: dropout active, still uniform
    head = model.stages["logits"]
    assert head.weight.abs().sum() == 0 and head.bias.abs().sum() == 0
    probs = model(inputs("smallcnn")).softmax(dim=1)
    torch.testing.assert_close(probs, torch.full_like(probs, 1 / NUM_CLASSES))


def test_wrn34_10_latent_dim_and_size_without_forward():
    model = build_model("wrn34_10", num_classes=10, in_shape=(3, 32, 32),
                        mean=(0.5,) * 3, std=(0.25,) * 3)
    assert model.latent_dim == 640
    assert model.stage_shapes["layer3"] == (640, 8, 8)
    # 46.16M parameters: the WRN-34-10 of the TRADES / PGD-AT literature.
    assert sum(p.numel() for p in model.parameters()) == 46_160_474


def test_wrn34_10_forward_on_a_small_input():
    model = make("wrn34_10").eval()
    x = inputs("wrn34_10")
    with torch.no_grad():
        logits, z = model(x, return_latent=True)
        assert torch.equal(model(x), logits)
    assert logits.shape == (BATCH, NUM_CLASSES) and z.shape == (BATCH, 640)
    assert z.min() >= 0  # pooled after the final BN-ReLU


def test_resnet18_cifar_stem_and_size():
    model = build_model("resnet18", num_classes=10, in_shape=(3, 32, 32),
                        mean=(0.5,) * 3, std=(0.25,) * 3)
    assert model.stage_shapes["layer1"] == (64, 32, 32)  # stride-1 stem, no max-pool
    assert model.stage_shapes["layer4"] == (512, 4, 4)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # CIFAR ResNet-18


@pytest.mark.parametrize("name", sorted(MODELS))
def test_spec_rebuilds_the_same_architecture(name):
    first = list(make(name).stages)[0]
    model = make(name, latent=first)
    assert model.latent == model.spec["latent"] == first
    spec = model.spec
    rebuilt = build_model(spec["name"], num_classes=spec["num_classes"],
                          in_shape=spec["in_shape"], mean=spec["mean"], std=spec["std"],
                          latent=spec["latent"], **spec["options"])
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert rebuilt.latent == model.latent
    torch.testing.assert_close(rebuilt.normalize.std, model.normalize.std)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"name": "resnet50"}, "smallcnn"),
    ({"in_shape": (1, 10, 10)}, "H, W >= 16"),
    ({"in_shape": (28, 28)}, "image input shape"),
    ({"in_shape": (1, 0, 28)}, "positive integers"),
    ({"mean": (0.1, 0.2)}, "one value per channel"),
    ({"std": (0.0,)}, "positive"),
    ({"num_classes": 1}, "num_classes"),
    ({"hidden": -3}, "hidden"),
    ({"dropout": 1.5}, "dropout"),
    ({"width": 2}, "allowed"),
])
def test_bad_configuration_raises_config_error(kwargs, fragment):
    args = {"name": "smallcnn", "num_classes": 10, "in_shape": (1, 28, 28),
            "mean": (0.5,), "std": (0.25,), **kwargs}
    with pytest.raises(ConfigError, match=fragment):
        build_model(args.pop("name"), **args)


@pytest.mark.parametrize("options, fragment", [
    ({"depth": 33}, "6n \\+ 4"), ({"width": 0}, "width"), ({"dropout": -0.1}, "dropout"),
])
def test_bad_wrn_options_raise_config_error(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_model("wrn", num_classes=10, in_shape=(3, 8, 8), mean=(0.5,), std=(0.25,),
                    **options)


def test_bad_mlp_hidden_raises_config_error():
    with pytest.raises(ConfigError, match="hidden"):
        build_model("mlp", num_classes=2, in_shape=(2,), mean=(0.0,), std=(1.0,), hidden=[])
