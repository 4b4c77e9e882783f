"""A user-defined SDE, exactly as the README's extension-point section writes it: a cosine-β VP SDE
(Nichol & Dhariwal 2021's ᾱ(t) as a continuous-time SDE), defined by four functions of t."""

import math
from dataclasses import dataclass

import torch

from ncml import SDEScheduler, SDESchedulerConfig


@dataclass(frozen=True)
class CosineVPSDESchedulerConfig(SDESchedulerConfig):
    s: float = 0.008  # offset that keeps β(0) finite
    horizon: float = 1.0  # time at which ᾱ reaches 0
    t_max: float = 0.1  # largest time the model is trained on


class CosineVPSDEScheduler(SDEScheduler):
    """m(t)² = ᾱ(t) = cos²(φ(t)) / cos²(φ(0)),  φ(t) = ½π·(t/horizon + s)/(1 + s)."""

    config_class = CosineVPSDESchedulerConfig

    def _phi(self, t):
        c = self.config
        return 0.5 * math.pi * (t / c.horizon + c.s) / (1 + c.s)

    def _log_m(self, t):
        return torch.log(torch.cos(self._phi(t)) / torch.cos(self._phi(torch.zeros_like(t))))

    def drift_coeff(self, t):  # f = d log m / dt
        c = self.config
        return -torch.tan(self._phi(t)) * 0.5 * math.pi / (c.horizon * (1 + c.s))

    def diffusion(self, t):  # VP family: g² = −2f
        return torch.sqrt(-2 * self.drift_coeff(t))

    def marginal_mean_coeff(self, t):
        return torch.exp(self._log_m(t))

    def marginal_std(self, t):
        return torch.sqrt(-torch.expm1(2 * self._log_m(t)))
