"""An ``ARBackbone`` with a closed-form likelihood: the exact marginals of Gaussian data under an SDE.

Data: every dimension i.i.d. ``N(μ_y, σ²)`` with ``μ_y = mu + class_shift·y`` (``y`` the class label, 0 if
unconditional). Under a scheduler with ``x_t = m(t)·x_0 + s(t)·ε`` the marginal of ``x_t`` is, per dimension,
``N(m(t)·μ_y, m(t)²σ² + s(t)²)``; for ``t > 0`` ``log_prob`` is that log-density plus ``log Δ`` (the ARBackbone
convention) and ``score`` is the exact score. At ``t == 0`` it is the discretised ``N(μ_y, σ²)`` over the
``2^bits`` bins of width Δ (edge bins open), an exact probability mass. Dimensions are independent, so drawing
them all at once *is* autoregressive sampling. Known pixels are kept, as the ARBackbone contract asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ncml.configuration_utils import resolve_class
from ncml.models.autoregressive import ARBackbone, BackboneOutput
from ncml.schedulers import SDEScheduler
from ncml.utils import expand_as, randn


@dataclass(frozen=True)
class GaussianBackboneConfig:
    sample_size: int = 4
    in_channels: int = 1
    num_bits: int = 8
    num_classes: int | None = None
    mu: float = 0.1  # data mean (class 0)
    sigma: float = 0.2  # data std
    class_shift: float = 0.3  # μ_y = mu + class_shift · y
    scheduler: dict[str, Any] = field(default_factory=lambda: {"_class_name": "VPSDEScheduler"})  # a scheduler config


class GaussianBackbone(ARBackbone):
    config_class: ClassVar[type] = GaussianBackboneConfig

    def __init__(self, config: GaussianBackboneConfig):
        super().__init__(config)
        library = config.scheduler.get("_library", "ncml")  # a user-defined SDE names its own package
        scheduler_class = resolve_class(library, config.scheduler["_class_name"], SDEScheduler, argname="scheduler")
        self.sde = scheduler_class.from_config(config.scheduler)
        # one (unused) parameter so that .device / .dtype / .to() / save_pretrained behave like a real model
        self.loc = torch.nn.Parameter(torch.tensor(float(config.mu)), requires_grad=False)

    @classmethod
    def for_scheduler(cls, scheduler: SDEScheduler, **fields) -> GaussianBackbone:
        scheduler_config = {"_class_name": type(scheduler).__name__,
                            "_library": type(scheduler).__module__.split(".")[0], **vars(scheduler.config)}
        return cls(GaussianBackboneConfig(scheduler=scheduler_config, **fields))

    def marginal(self, t: torch.Tensor, class_labels: torch.Tensor | None, like: torch.Tensor):
        """Per-sample mean and std ``(B, 1, 1, 1)`` of ``x_t`` (float64 coefficients, cast to ``like``)."""
        t64 = t.to(torch.float64)
        c = self.config
        y = torch.zeros_like(t64) if class_labels is None else class_labels.to(torch.float64)
        m = self.sde.marginal_mean_coeff(t64)
        mean = m * (c.mu + c.class_shift * y)
        std = torch.sqrt(m**2 * c.sigma**2 + self.sde.marginal_std(t64) ** 2)
        return expand_as(mean, like), expand_as(std, like)

    def forward(self, x, t, class_labels=None):
        t, class_labels = self.check_inputs(x, t, class_labels)
        mean, std = self.marginal(t, class_labels, x)
        z = (x - mean) / std
        continuous = -0.5 * z**2 - torch.log(std) - 0.5 * math.log(2 * math.pi) + math.log(self.bin_width)
        log_prob = continuous
        clean = t == 0
        if clean.any():  # discretised Gaussian; computed on the clean subset only (no inf·0 in gradients)
            half = 0.5 * self.bin_width / std[clean]
            zc = z[clean]
            upper = torch.where(x[clean] >= 1 - 1e-6, torch.full_like(zc, math.inf), zc + half)
            lower = torch.where(x[clean] <= -1 + 1e-6, torch.full_like(zc, -math.inf), zc - half)
            normal = torch.distributions.Normal(0.0, 1.0)
            mass = normal.cdf(upper) - normal.cdf(lower)
            log_prob = log_prob.clone()
            log_prob[clean] = torch.log(mass.clamp_min(1e-30))
        return BackboneOutput(log_prob=log_prob, params=torch.cat([mean, std], 1).expand(-1, 2, *x.shape[2:]))

    @torch.no_grad()
    def sample(self, batch_size, t, class_labels=None, *, known=None, known_mask=None, generator=None,
               use_cache=True, progress=True):  # one draw for every dimension: nothing to cache, no loop to show
        batch_size = self.check_batch_size(batch_size)
        t = self.check_time(t, batch_size, device=self.device)
        class_labels = self.check_class_labels(class_labels, batch_size, device=self.device)
        known, known_mask = self.check_known(known, known_mask, batch_size, device=self.device)
        shape = (batch_size, *self.image_shape)
        x = randn(shape, generator=generator, device=self.device, dtype=self.dtype)
        mean, std = self.marginal(t, class_labels, x)
        x = mean + std * x
        clean = (t == 0).view(-1, 1, 1, 1).expand_as(x)
        levels = 2**self.config.num_bits - 1
        on_grid = ((x.clamp(-1, 1) + 1) * levels / 2).round() * 2 / levels - 1  # the discretised draw
        x = torch.where(clean, on_grid, x)
        if known is not None:
            x = torch.where(known_mask, known.to(x.dtype), x)
        return x
