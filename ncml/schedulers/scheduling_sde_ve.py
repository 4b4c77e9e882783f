"""Variance-exploding SDE (Song et al. 2021): ``dx = √(dσ(t)²/dt) dw``, σ(t) = σ_min(σ_max/σ_min)^t."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .scheduling_utils import SDEScheduler, SDESchedulerConfig


@dataclass(frozen=True)
class VESDESchedulerConfig(SDESchedulerConfig):
    sigma_min: float = 0.01  # σ_min
    sigma_max: float = 50.0  # σ_max (CIFAR-10 value)
    t_max: float = 0.5  # T: the paper's VE horizon (A.2)

    def __post_init__(self):
        super().__post_init__()
        if not (0 < self.sigma_min < self.sigma_max and math.isfinite(self.sigma_max)):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {self.sigma_min}, {self.sigma_max}")


class VESDEScheduler(SDEScheduler):
    """VE SDE with the exact marginal ``s(t)² = σ(t)² − σ_min²`` (so ``s(0) = 0``), ``m(t) = 1``."""

    config_class = VESDESchedulerConfig

    @property
    def _log_ratio(self) -> float:
        return math.log(self.config.sigma_max / self.config.sigma_min)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.config.sigma_min * torch.exp(t * self._log_ratio)

    def drift_coeff(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def marginal_mean_coeff(self, t):
        return torch.ones_like(t)

    def marginal_std(self, t):
        return self.config.sigma_min * torch.sqrt(torch.expm1(2 * t * self._log_ratio))
