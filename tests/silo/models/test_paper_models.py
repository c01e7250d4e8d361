"""The SILO paper's networks: parameter counts against the published figures, and every
study file's task building its model and training 2 steps on a tiny synthetic batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oracle.study import load_study
from silo.models import build_model, model_kwargs
from silo.pruning import (
    Mask,
    MaskedStep,
    PruneContext,
    get_strategy,
    prunable_parameters,
    swd,
)
from silo.schedules import silo_max_lr
from silo.step import make_optimizer
from tests._repo import REPO

STUDIES = sorted((REPO / "studies").glob("*.yaml"))

# dataset -> (input shape, classes) of the synthetic batch. ImageNet's is 64x64 instead of
# 224x224 to stay quick on a CPU (ResNet-50 pools adaptively, so it runs at any size).
SHAPES = {
    "mnist1d": ((1, 40), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "tiny_imagenet": ((3, 64, 64), 200),
    "imagenet": ((3, 64, 64), 1000),
}




def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def within(count: int, published: float, tolerance: float = 0.02) -> bool:
    return abs(count - published) / published <= tolerance


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize(
    "name, classes, exact, published",
    [
        # Huang et al. 2017, Table 2: DenseNet (L=40, k=12) 1.0M; Network Slimming (Liu et al.
        # 2017) quotes 1.02M on CIFAR-10 and 1.06M on CIFAR-100.
        ("densenet40", 10, 1_019_722, 1.0e6),
        ("densenet40", 10, 1_019_722, 1.02e6),
        ("densenet40", 100, 1_060_132, 1.06e6),
        # The CIFAR MobileNetV2 (stride-1 stem and first 24-channel stage): 2.24M / 2.35M.
        ("mobilenetv2", 10, 2_236_682, 2.24e6),
        ("mobilenetv2", 100, 2_351_972, 2.35e6),
        # ViT-Lite-7/4 (Hassani et al. 2021): 3.72M.
        ("vit_cifar", 10, 3_722_250, 3.72e6),
        # torchvision's ResNet-50: 25,557,032 (25.56M).
        ("resnet50", 1000, 25_557_032, 25.56e6),
    ],
)
def test_parameter_count_matches_the_published_figure(name, classes, exact, published):
    torch.manual_seed(0)
    model = build_model(name, num_classes=classes, in_channels=3)
    assert n_params(model) == exact
    assert within(exact, published)


def test_densenet40_structure():
    model = build_model("densenet40", num_classes=10, in_channels=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # 1 stem + 3 blocks x 12 layers + 2 transitions = 39 convs, + the head = 40 layers.
    assert len(convs) == 39 and all(c.bias is None for c in convs)
    assert [c.out_channels for c in convs if c.kernel_size == (1, 1)] == [160, 304]  # no compression
    assert model.fc.in_features == 448


def test_mobilenetv2_is_adapted_to_32x32_and_has_depthwise_convs():
    model = build_model("mobilenetv2", num_classes=100, in_channels=3).eval()
    strides = [m.stride[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
    assert strides == [2, 2, 2]  # 32x32 -> 4x4
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_vit_projections_are_prunable_linear_layers():
    model = build_model("vit_cifar", num_classes=10, in_channels=3, depth=2, dim=64, heads=2)
    names = list(prunable_parameters(model))
    assert names == ["embed.weight"] + [
        f"blocks.{b}.{layer}.weight" for b in range(2) for layer in ("attn.qkv", "attn.proj", "fc1", "fc2")
    ] + ["head.weight"]
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    assert model_kwargs("vit_cifar") == {
        "image_size": 32, "patch": 4, "dim": 256, "depth": 7, "heads": 4, "mlp_ratio": 2.0
    }
    with pytest.raises(ValueError, match="multiple of heads"):
        build_model("vit_cifar", num_classes=10, in_channels=3, dim=65, heads=2)
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(1, 3, 64, 64))  # built for 32x32


def test_resnet50_options():
    gray = build_model("resnet50", num_classes=10, in_channels=1, small_input=True)
    assert gray.conv1.in_channels == 1 and gray.conv1.kernel_size == (3, 3)
    assert isinstance(gray.maxpool, nn.Identity)
    assert n_params(build_model("resnet50", num_classes=1000, in_channels=3, small_input=True)) == 25_557_032 - 7_680
    with pytest.raises(ValueError, match="small_input"):
        build_model("resnet50", num_classes=10, in_channels=3, small_input="yes")


# ----------------------------------------------------------------------------- each study


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_task_builds_and_trains_two_steps(path):
    study = load_study(path)
    task = study.task
    shape, classes = SHAPES[task.data.name]
    torch.manual_seed(0)
    model = build_model(task.model, num_classes=classes, in_channels=shape[0], **task.model_args)
    x, y = torch.randn(2, *shape), torch.randint(0, classes, (2,))
    mask = Mask.ones(model, exclude=task.pruning.exclude)
    if mask.num_total() < 5_000_000:  # the study's own strategy; the big nets skip a slow global sort
        context = PruneContext([(x, y)], F.cross_entropy)
        if swd.is_swd(task.pruning):  # SWD cuts at the end of a cycle, from the weights alone
            mask = swd.cut(model.state_dict(), mask, task.pruning)
        else:
            mask = get_strategy(task.pruning.strategy)(model, mask, task.pruning.rate, context)
        mask.apply_(model)
        assert 0 < mask.sparsity() < 0.5
    max_lr = silo_max_lr(2, prune_rate=task.pruning.rate, offset=study.arms.silo.offset,
                         alpha=study.arms.silo.alpha, beta=study.arms.silo.beta,
                         delay=study.arms.silo.delay)
    optimizer = make_optimizer(task, model.parameters(), max_lr)
    step = MaskedStep(model, mask)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        loss = F.cross_entropy(model(x), y, label_smoothing=task.label_smoothing)
        assert torch.isfinite(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step()
    params = dict(model.named_parameters())
    assert any(not torch.equal(before[n], p) for n, p in params.items())  # it trained
    for n, keep in mask.items():
        assert not params[n][~keep].any()  # pruned weights stayed zero
