"""Tiny ``ARBackbone``s with likelihoods known in closed form, for testing the evaluation suite.

- ``UniformBackbone``: every value uniform over its ``2^bits`` bins at ``t = 0`` and uniform on
  ``[−1 − Δ/2, 1 + Δ/2]`` at ``t > 0``; both give exactly ``num_bits`` bits/dim.
- ``TableARBackbone``: a genuinely autoregressive categorical model over the levels (``log_softmax`` of
  logits that depend linearly on the earlier levels), small enough to enumerate every image; at ``t > 0`` a
  ``t``-dependent Gaussian density reported as ``log pdf + log Δ``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ncml.models.autoregressive import ARBackbone, BackboneOutput


@dataclass(frozen=True)
class ToyBackboneConfig:
    sample_size: int = 2
    in_channels: int = 1
    num_bits: int = 2
    num_classes: int | None = None
    seed: int = 0


class UniformBackbone(ARBackbone):
    config_class: ClassVar[type] = ToyBackboneConfig

    def __init__(self, config: ToyBackboneConfig):
        super().__init__(config)

    def forward(self, x, t, class_labels=None):
        self.check_inputs(x, t, class_labels)
        lp = torch.full_like(x, -self.config.num_bits * math.log(2.0))
        return BackboneOutput(log_prob=lp, params=lp)


class TableARBackbone(ARBackbone):
    config_class: ClassVar[type] = ToyBackboneConfig

    def __init__(self, config: ToyBackboneConfig):
        super().__init__(config)
        d, levels = config.in_channels * config.sample_size**2, 2**config.num_bits
        g = torch.Generator().manual_seed(config.seed)
        self.base = torch.nn.Parameter(torch.randn(d, levels, generator=g) * 1.5)
        # coupling[i, j] only for j < i: causal
        self.coupling = torch.nn.Parameter(torch.randn(d, d, levels, generator=g).tril(-1).mul(0.7)
                                           .permute(0, 2, 1).contiguous())  # (d, levels, d)
        self.class_embed = torch.nn.Parameter(torch.randn(config.num_classes or 1, levels, generator=g))

    def forward(self, x, t, class_labels=None):
        t, labels = self.check_inputs(x, t, class_labels)
        levels = 2**self.config.num_bits
        k = ((x + 1) / self.bin_width).round().clamp(0, levels - 1).long().flatten(1)  # (B, d)
        kn = k.float() / (levels - 1)
        mask = torch.ones(self.coupling.shape[0], self.coupling.shape[2]).tril(-1)  # (d, d): j < i
        logits = self.base + torch.einsum("ilj,ij,bj->bil", self.coupling, mask, kn)  # (B, d, levels)
        if labels is not None:
            logits = logits + self.class_embed[labels][:, None, :]
        discrete = torch.log_softmax(logits, -1).gather(-1, k[..., None])[..., 0]  # (B, d)
        std = 0.5 + t[:, None]  # a t-dependent continuous density for t > 0
        xf = x.flatten(1)
        continuous = -0.5 * (xf / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi) + math.log(self.bin_width)
        lp = torch.where((t == 0)[:, None], discrete, continuous).view_as(x)
        return BackboneOutput(log_prob=lp, params=logits)


def all_images(config: ToyBackboneConfig) -> torch.Tensor:
    """Every image of the config's space as uint8 ``(L^d, H, W, C)``."""
    d, levels = config.in_channels * config.sample_size**2, 2**config.num_bits
    grid = torch.cartesian_prod(*[torch.arange(levels)] * d).reshape(-1, d)
    s, c = config.sample_size, config.in_channels
    return grid.reshape(-1, c, s, s).permute(0, 2, 3, 1).to(torch.uint8).contiguous()
