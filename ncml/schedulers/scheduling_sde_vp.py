"""Variance-preserving SDE (Song et al. 2021): ``dx = −½β(t)·x dt + √β(t) dw``, β(t) = β₀ + t(β₁ − β₀)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .scheduling_utils import SDEScheduler, SDESchedulerConfig


@dataclass(frozen=True)
class VPSDESchedulerConfig(SDESchedulerConfig):
    beta_min: float = 0.1  # β₀
    beta_max: float = 20.0  # β₁
    t_max: float = 0.1  # T: the paper's VP horizon (A.2)

    def __post_init__(self):
        super().__post_init__()
        if not (0 <= self.beta_min < self.beta_max and math.isfinite(self.beta_max)):
            raise ValueError(f"need 0 <= beta_min < beta_max < inf, got beta_min={self.beta_min}, beta_max={self.beta_max}")


class VPSDEScheduler(SDEScheduler):
    """VP SDE. ``log m(t) = −¼t²(β₁−β₀) − ½tβ₀``, ``s(t)² = 1 − m(t)²``."""

    config_class = VPSDESchedulerConfig

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.config.beta_min + t * (self.config.beta_max - self.config.beta_min)

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        return -0.25 * t**2 * (self.config.beta_max - self.config.beta_min) - 0.5 * t * self.config.beta_min

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def marginal_mean_coeff(self, t):
        return torch.exp(self.log_mean_coeff(t))

    def marginal_std(self, t):
        # sqrt(1 - m²) written as sqrt(-expm1(2 log m)): exact at small t, where 1 - m² cancels.
        return torch.sqrt(-torch.expm1(2 * self.log_mean_coeff(t)))
