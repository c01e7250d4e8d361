"""Tests of silo.models: the registry, parameter counts, shapes, initialisation, shortcuts."""

from __future__ import annotations

import functools
import math
import pickle

import pytest
import torch
from torch import nn

from silo import models
from silo.models import (
    MODELS,
    ModelArgumentError,
    build_model,
    check_model_args,
    model_kwargs,
    model_names,
    register,
    registry,
)
from silo.models.resnet_cifar import PadShortcut

# name -> (in_channels, input shape after the batch dim) that the model is built for.
INPUTS = {
    "mnist1d_cnn": (1, (1, 40)),
    "mnist1d_mlp": (1, (1, 40)),
    "resnet20": (3, (3, 32, 32)),
    "resnet56": (3, (3, 32, 32)),
    "vgg19_bn": (3, (3, 32, 32)),
}

# Exact trainable-parameter counts, (10 classes, 100 classes). ResNets use option-A
# (parameter-free) shortcuts; the often-quoted 272,474 / 855,770 are option B, 2,752 more.
PARAMS = {
    "mnist1d_cnn": (8_106, 22_596),
    "mnist1d_mlp": (15_210, 24_300),
    "resnet20": (269_722, 275_572),
    "resnet56": (853_018, 858_868),
    "vgg19_bn": (20_040_522, 20_086_692),
}




def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    return build_model(name, num_classes=num_classes, in_channels=INPUTS[name][0], **kwargs)


@functools.cache
def built(name: str, num_classes: int = 10) -> nn.Module:
    """A shared instance for tests that only read the model (VGG takes ~0.5 s to build)."""
    torch.manual_seed(0)
    return build(name, num_classes)


def test_registry_lists_every_model_sorted():
    assert model_names() == sorted(MODELS)
    # The models of this file; the SILO paper's (densenet40, ...) are in test_paper_models.py.
    assert set(INPUTS) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_parameter_counts_and_output_shape(name, num_classes):
    model = built(name, num_classes)
    assert n_params(model) == PARAMS[name][0 if num_classes == 10 else 1]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, *INPUTS[name][1]))
    assert out.shape == (3, num_classes)
    assert torch.isfinite(out).all()


def test_parameter_counts_match_the_literature():
    # He et al. 2016 Table 6 quotes 0.27M and 0.85M; the CIFAR VGG-19-BN is ~20.0M.
    assert abs(PARAMS["resnet20"][0] - 0.27e6) / 0.27e6 < 0.01
    assert abs(PARAMS["resnet56"][0] - 0.85e6) / 0.85e6 < 0.01
    assert abs(PARAMS["vgg19_bn"][0] - 20.0e6) / 20.0e6 < 0.01
    # The MNIST-1D models stay small enough for a chain of cycles to run in seconds on CPU.
    assert PARAMS["mnist1d_cnn"][0] < 50_000 and PARAMS["mnist1d_mlp"][0] < 50_000


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_training_forward_reaches_every_parameter(name):
    model = built(name)
    model.train()
    model.zero_grad()
    out = model(torch.randn(2, *INPUTS[name][1]))
    assert out.shape == (2, 10)
    out.logsumexp(dim=1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_models_accept_other_input_channels():
    out = build_model("resnet20", num_classes=7, in_channels=1)(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 7)
    out = build_model("mnist1d_cnn", num_classes=10, in_channels=2)(torch.randn(2, 2, 40))
    assert out.shape == (2, 10)


def test_model_options_change_the_model():
    assert model_kwargs("mnist1d_cnn") == {"width": 32, "length": 40}
    assert model_kwargs("mnist1d_mlp") == {"width": 100, "length": 40}
    assert model_kwargs("resnet20") == {}
    wide = build("mnist1d_cnn", width=64)
    assert wide.features[0].out_channels == 64
    assert wide(torch.randn(3, 1, 40)).shape == (3, 10)
    mlp = build("mnist1d_mlp", width=7)
    assert [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)] == [7, 7, 10]
    assert build("mnist1d_mlp", length=60)(torch.randn(2, 1, 60)).shape == (2, 10)


def test_unknown_model_lists_known_names_sorted():
    with pytest.raises(ValueError) as err:
        build_model("resnet18", num_classes=10, in_channels=3)
    message = str(err.value)
    assert "resnet18" in message
    assert ", ".join(model_names()) in message


@pytest.mark.parametrize("name, bad", [("mnist1d_cnn", "widht"), ("resnet20", "width")])
def test_unknown_option_is_rejected_by_name(name, bad):
    # Both exception types: TypeError as Python would raise, ValueError for pydantic.
    for exc in (TypeError, ValueError):
        with pytest.raises(exc, match=repr(bad)):
            build(name, **{bad: 3})
        with pytest.raises(exc, match=repr(bad)):
            check_model_args(name, {bad: 3})
    accepts = "accepts: length, width" if name.startswith("mnist") else "accepts: no options"
    with pytest.raises(ModelArgumentError, match=accepts):
        check_model_args(name, {bad: 3})


def test_bad_option_values_are_rejected():
    for kwargs in ({"width": 0}, {"width": True}, {"width": 2.5}, {"length": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            build("mnist1d_cnn", **kwargs)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet20", num_classes=0, in_channels=3)
    with pytest.raises(ValueError, match="in_channels"):
        check_model_args("resnet20", {"in_channels": 3})
    check_model_args("mnist1d_cnn", {"width": 16})  # a valid option passes


@pytest.mark.parametrize("name", ["mnist1d_cnn", "mnist1d_mlp", "resnet20"])
def test_same_seed_same_initial_weights(name):
    def weights(seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(name).state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    differs = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], c[k])]
    assert any(k.endswith("weight") for k in differs)


def test_building_draws_from_the_default_generator():
    torch.manual_seed(0)
    build("mnist1d_cnn")
    after_build = torch.rand(1)
    torch.manual_seed(0)
    assert not torch.equal(torch.rand(1), after_build)


def test_resnet_option_a_shortcuts_have_no_parameters():
    for name, depth in (("resnet20", 20), ("resnet56", 56)):
        model = built(name)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        # depth = stem conv + 2 convs per block + the head: no shortcut convs at all.
        assert len(convs) == depth - 1 and len(linears) == 1
        assert all(m.kernel_size == (3, 3) for m in convs)
        pads = [m for m in model.modules() if isinstance(m, PadShortcut)]
        assert len(pads) == 2  # entry of stages 2 and 3
        assert all(sum(p.numel() for p in m.parameters()) == 0 for m in pads)


def test_pad_shortcut_subsamples_and_zero_pads():
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).reshape(2, 16, 4, 4)
    y = PadShortcut(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 2, 2)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()


def test_initialisation_is_he_normal():
    resnet = built("resnet56")
    w = resnet.layer3[4].conv2.weight  # fan_in 64 * 9
    assert abs(w.std().item() / math.sqrt(2 / (64 * 9)) - 1) < 0.05
    vgg = built("vgg19_bn")
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    w = convs[-1].weight  # fan_out 512 * 9 (torchvision's VGG init)
    assert abs(w.std().item() / math.sqrt(2 / (512 * 9)) - 1) < 0.05
    assert all((m.bias == 0).all() for m in convs)


def test_models_pickle():
    # Ray ships models and their state between processes: no lambdas inside.
    model = built("resnet20")
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 3, 32, 32)
    model.eval(), clone.eval()
    assert torch.equal(model(x), clone(x))


def test_mnist1d_cnn_can_fit_a_batch():
    # A cheap check that the model learns at all: memorise 64 random labelled signals.
    # Plain gradient descent by hand: the first torch.optim optimizer of a process costs
    # seconds of lazy imports, which this file should not pay.
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 40), torch.randint(0, 10, (64,))
    model = build("mnist1d_cnn")
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() < 0.5
    model.train()
    for _ in range(40):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.2 * p.grad
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.95


def test_register_adds_a_model_and_guards_the_table(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))

    @register("tiny")
    def tiny(*, num_classes: int, in_channels: int, hidden: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.Linear(hidden, num_classes))

    assert "tiny" in registry.model_names()
    assert registry.model_kwargs("tiny") == {"hidden": 3}
    out = registry.build_model("tiny", num_classes=4, in_channels=1, hidden=5)(torch.randn(2, 6))
    assert out.shape == (2, 4)
    with pytest.raises(ValueError, match="already registered"):
        register("tiny")(tiny)
    with pytest.raises(TypeError, match="num_classes"):
        register("bad")(lambda *, in_channels: nn.Identity())
    with pytest.raises(TypeError, match="needs a default"):
        register("bad")(lambda *, num_classes, in_channels, width: nn.Identity())
    assert "bad" not in registry.MODELS


def test_public_api():
    assert set(models.__all__) == {
        "MODELS", "ModelArgumentError", "build_model", "check_model_args",
        "model_kwargs", "model_names", "register",
    }
