"""A tiny but real ``ARBackbone`` for loss tests: one logistic per dimension, masked-linear in the past.

``mean_i = b_i + Σ_{j<i} W_ij x_j + time/class shifts``, ``log_scale_i`` likewise without the past; raster order
with channels innermost. ``t == 0``: discretized logistic over the ``2^bits`` bins (open edge bins); ``t > 0``:
continuous logistic ``log pdf + log Δ``. Noise conditioning: ``log t`` for ``t > 0`` plus a learned ``t == 0`` shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ncml.models.autoregressive import ARBackbone, BackboneOutput


@dataclass(frozen=True)
class TinyARConfig:
    sample_size: int = 4
    in_channels: int = 1
    num_bits: int = 8
    num_classes: int | None = None


def discretized_logistic_log_prob(x, mean, log_scale, bin_width):
    """log P(bin of x) for a logistic(mean, e^log_scale), edge bins open at -1 and 1 (nats)."""
    inv_s = torch.exp(-log_scale)
    plus = inv_s * (x - mean + bin_width / 2)
    minus = inv_s * (x - mean - bin_width / 2)
    log_cdf_plus = F.logsigmoid(plus)  # x = -1: P = σ(plus)
    log_sf_minus = F.logsigmoid(-minus)  # x = 1: P = 1 - σ(minus)
    log_mid = F.logsigmoid(plus) + F.logsigmoid(-minus) + torch.log(-torch.expm1(-(plus - minus)))
    return torch.where(x < -1 + bin_width / 2, log_cdf_plus, torch.where(x > 1 - bin_width / 2, log_sf_minus, log_mid))


class TinyARModel(ARBackbone):
    config_class = TinyARConfig

    def __init__(self, config: TinyARConfig):
        super().__init__(config)
        d = config.in_channels * config.sample_size**2
        self.register_buffer("mask", torch.tril(torch.ones(d, d), diagonal=-1), persistent=False)
        self.weight = nn.Parameter(0.05 * torch.randn(d, d))
        self.mean_bias = nn.Parameter(0.1 * torch.randn(d))
        self.scale_bias = nn.Parameter(torch.full((d,), -1.0))
        self.time_weight = nn.Parameter(0.1 * torch.randn(2, d))  # (mean, log_scale) per unit of log t
        self.clean_shift = nn.Parameter(0.1 * torch.randn(2, d))  # the learned t == 0 embedding
        self.class_shift = nn.Parameter(0.1 * torch.randn(config.num_classes, d)) if config.num_classes else None

    def forward(self, x, t, class_labels=None):
        t, labels = self.check_inputs(x, t, class_labels)
        b = x.shape[0]
        flat = x.permute(0, 2, 3, 1).reshape(b, -1)  # (B, D) raster order, channels innermost
        clean = (t == 0).to(x.dtype)[:, None]  # (B, 1)
        log_t = torch.log(torch.where(t > 0, t, torch.ones_like(t))).to(x.dtype)[:, None]
        past = flat @ (self.weight * self.mask).T  # strictly lower-triangular: dimension i sees j < i only
        mean = self.mean_bias + past + log_t * self.time_weight[0] + clean * self.clean_shift[0]
        log_scale = self.scale_bias + log_t * self.time_weight[1] + clean * self.clean_shift[1]
        if labels is not None:
            mean = mean + self.class_shift[labels]
        log_scale = log_scale.clamp(min=-7.0)
        delta = self.bin_width
        z = (flat - mean) * torch.exp(-log_scale)
        continuous = z - log_scale - 2 * F.softplus(z) + torch.log(torch.tensor(delta, dtype=x.dtype))
        discrete = discretized_logistic_log_prob(flat, mean, log_scale, delta)
        log_prob = torch.where(clean.bool(), discrete, continuous)  # (B, D)
        c, s = self.config.in_channels, self.config.sample_size
        to_image = lambda v: v.reshape(b, s, s, c).permute(0, 3, 1, 2)  # noqa: E731
        return BackboneOutput(log_prob=to_image(log_prob), params=torch.stack([to_image(mean), to_image(log_scale)], 1))

    def sample(self, batch_size, t, class_labels=None, *, known=None, known_mask=None, generator=None, use_cache=True):
        batch_size = self.check_batch_size(batch_size)
        t = self.check_time(t, batch_size)
        x = torch.zeros(batch_size, *self.image_shape)
        c, s = self.config.in_channels, self.config.sample_size
        for i in range(c * s * s):
            p = self(x, t, class_labels).params  # (B, 2, C, H, W)
            h, rest = divmod(i, s * c)
            w, ch = divmod(rest, c)
            mean, log_scale = p[:, 0, ch, h, w], p[:, 1, ch, h, w]
            u = torch.rand(batch_size, generator=generator).clamp(1e-6, 1 - 1e-6)
            v = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
            grid = torch.round((v.clamp(-1, 1) + 1) / self.bin_width) * self.bin_width - 1
            v = torch.where(t == 0, grid, v)
            x[:, ch, h, w] = v
        return x
