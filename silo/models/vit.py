"""A small Vision Transformer for CIFAR (Dosovitskiy et al. 2021, sized for 32x32 inputs).

Defaults are ViT-Lite-7/4 of Hassani et al. 2021 ("Escaping the Big Data Paradigm with
Compact Transformers"), the usual from-scratch ViT baseline on CIFAR: 4x4 patches (64
tokens + a class token), width 256, 7 pre-norm blocks of 4 heads, MLP ratio 2, learned
position embeddings, the head on the class token. 3,722,250 parameters for 10 classes
(published: 3.72M), 3,745,380 for 100.

Pruning: every projection is an `nn.Linear` (qkv, attention output, both MLP layers, head)
and the patch embedding an `nn.Conv2d`, so `prunable_parameters` sees all of them. Attention
is written out here rather than taken from nn.MultiheadAttention, whose packed
`in_proj_weight` is not the weight of a Linear module and would escape pruning.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from silo.models.registry import ModelArgumentError, positive_int, register


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # Fused softmax(q k^T / sqrt(d_head)) v (flash / memory-efficient kernels on a GPU).
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(
        self, num_classes: int, in_channels: int, *, image_size: int, patch: int, dim: int,
        depth: int, heads: int, mlp_ratio: float,
    ) -> None:
        super().__init__()
        if image_size % patch:
            raise ModelArgumentError(f"vit_cifar: image_size {image_size} is not a multiple of patch {patch}")
        if dim % heads:
            raise ModelArgumentError(f"vit_cifar: dim {dim} is not a multiple of heads {heads}")
        tokens = (image_size // patch) ** 2
        self.patch = patch
        # A stride-`patch` conv is the linear patch embedding of the paper, as one op.
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        hidden = max(1, round(dim * mlp_ratio))
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm / ViT reference: truncated normal (std 0.02) for position embeddings, class
        # token and Linear weights, zero biases, LayerNorm (1, 0); the patch embedding keeps
        # PyTorch's conv default (as timm's PatchEmbed does).
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)  # (n, tokens, dim)
        if x.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(
                f"vit_cifar was built for {self.pos_embed.shape[1] - 1} patches, the input has "
                f"{x.shape[1]}: set model_args.image_size to the input size"
            )
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


@register("vit_cifar")
def vit_cifar(
    *, num_classes: int, in_channels: int, image_size: int = 32, patch: int = 4, dim: int = 256,
    depth: int = 7, heads: int = 4, mlp_ratio: float = 2.0,
) -> nn.Module:
    """ViT-Lite-7/4 at the defaults: 3,722,250 parameters for 10 classes."""
    for what, v in (("image_size", image_size), ("patch", patch), ("dim", dim), ("depth", depth), ("heads", heads)):
        positive_int(f"vit_cifar: {what}", v)
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not (
        math.isfinite(mlp_ratio) and mlp_ratio > 0
    ):
        raise ModelArgumentError(f"vit_cifar: mlp_ratio must be a number > 0, got {mlp_ratio!r}")
    return ViT(
        num_classes, in_channels, image_size=image_size, patch=patch, dim=dim, depth=depth,
        heads=heads, mlp_ratio=float(mlp_ratio),
    )
