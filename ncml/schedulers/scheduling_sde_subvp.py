"""sub-VP SDE (Song et al. 2021): the VP drift with ``g(t)² = β(t)(1 − e^{−2β₀t − (β₁−β₀)t²})``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .scheduling_sde_vp import VPSDEScheduler, VPSDESchedulerConfig


@dataclass(frozen=True)
class SubVPSDESchedulerConfig(VPSDESchedulerConfig):
    t_max: float = 0.025  # T: the paper's sub-VP horizon (A.2)


class SubVPSDEScheduler(VPSDEScheduler):
    """sub-VP SDE: same m(t) as VP, ``s(t) = 1 − m(t)²`` (not squared), always below the VP std."""

    config_class = SubVPSDESchedulerConfig

    def diffusion(self, t):
        # 1 - exp(-2β₀t - (β₁-β₀)t²) = -expm1(4 log m)
        return torch.sqrt(self.beta(t) * -torch.expm1(4 * self.log_mean_coeff(t)))

    def marginal_std(self, t):
        return -torch.expm1(2 * self.log_mean_coeff(t))
