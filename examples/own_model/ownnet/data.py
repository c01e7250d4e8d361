"""Synthetic images generated in code: a short bar in noise; its orientation is the class."""

from __future__ import annotations

import torch

# Unit steps along each class's bar: horizontal, vertical, diagonal, anti-diagonal.
_DIRECTIONS = torch.tensor([[0, 1], [1, 0], [1, 1], [1, -1]])


def _images(n: int, size: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, len(_DIRECTIONS), (n,), generator=generator)
    centre = torch.randint(3, size - 3, (n, 2), generator=generator)
    x = noise * torch.randn(n, size, size, generator=generator)
    rows = torch.arange(n)
    for t in range(-3, 4):  # a bar of 7 pixels through the centre
        pixel = centre + t * _DIRECTIONS[labels]
        x[rows, pixel[:, 0], pixel[:, 1]] += 1.0
    return x.unsqueeze(1), labels  # (N, 1, size, size) float32, int64 labels 0..3


def oriented_bars(*, n_train: int = 2000, n_test: int = 500, size: int = 16, noise: float = 0.5,
                  seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The dataset factory the study names (`ownnet.data:oriented_bars`), called with the
    study's task.data.args: returns (train, test), each a pair of tensors (x, y)."""
    g = torch.Generator().manual_seed(seed)
    return _images(n_train, size, noise, g), _images(n_test, size, noise, g)
