"""``SDEScheduler``: linear-drift SDEs ``dx = f(t)·x dt + g(t) dw`` and the numerical steps that reverse them.

A new SDE implements four functions of ``t`` (a float64 tensor): ``drift_coeff`` f(t), ``diffusion`` g(t),
``marginal_mean_coeff`` m(t) and ``marginal_std`` s(t), where ``x_t | x_0 ~ N(m(t)·x_0, s(t)²·I)`` is the
*exact* marginal of the SDE started at clean data, so ``s(0) = 0``. They must satisfy
``m' = f·m`` and ``(s²)' = 2f·s² + g²`` (the tests check this for every scheduler).

Steps take a **score tensor**, never a model, and are stateless: each takes the current time ``t`` and the next
time ``t_next`` (as EDM's sampler steps from ``t_cur`` to ``t_next``), so a grid has one owner, the caller
(``ncml.pipelines.refinement``), and nothing on a scheduler changes while a pipeline runs. :meth:`timesteps`
builds the grids the refinement loop uses. Coefficients are computed in float64 and cast to the sample's dtype
at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..configuration_utils import ConfigMixin
from ..utils import Generator, expand_as, randn


TIME_SPACINGS = ("uniform", "log")


@dataclass(frozen=True)
class SDESchedulerConfig:
    t_max: float = 1.0  # T: the largest time the model is trained on and the scheduler accepts

    def __post_init__(self):
        if not (isinstance(self.t_max, (int, float)) and math.isfinite(self.t_max) and self.t_max > 0):
            raise ValueError(f"t_max must be a finite number > 0, got {self.t_max!r}")


@dataclass(frozen=True)
class SDESchedulerOutput:
    prev_sample: torch.Tensor  # (B, ...) the sample at the next (smaller) time
    prev_sample_mean: torch.Tensor  # (B, ...) the same step without its noise term (the final, denoised output)


class SDEScheduler(ConfigMixin):
    """Base class of the noising SDEs. Subclass it and implement the four coefficient functions.

    ``SDEScheduler(config)`` or ``SDEScheduler(**config_fields)``; ``scheduler.config`` is the frozen config.
    """

    config_class: ClassVar[type] = SDESchedulerConfig
    config_name: ClassVar[str] = "scheduler_config.json"

    def __init__(self, config: SDESchedulerConfig | None = None, /, **fields):
        if config is not None and fields:
            raise TypeError(f"{type(self).__name__}: pass either a config or keyword fields, not both")
        if config is None:
            config = self.config_class(**fields)
        elif not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @property
    def t_max(self) -> float:
        return float(self.config.t_max)

    # ---- the SDE: four functions of t (float64 tensors) --------------------------------------
    def drift_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """f(t) in ``dx = f(t)·x dt + g(t) dw``."""
        raise NotImplementedError

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t) in ``dx = f(t)·x dt + g(t) dw``."""
        raise NotImplementedError

    def marginal_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """m(t) = exp(∫₀ᵗ f)."""
        raise NotImplementedError

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        """s(t), with s(0) = 0 and (s²)' = 2f·s² + g²."""
        raise NotImplementedError

    # ---- inputs -------------------------------------------------------------------------------
    def check_time(self, t, batch_size: int, *, device=None, argname: str = "t") -> torch.Tensor:
        """Return ``t`` as a float64 tensor of shape ``(batch_size,)``; raise on NaN, bad shape or range."""
        if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
            raise TypeError(f"{argname} must be a float or a tensor of shape ({batch_size},), got {type(t).__name__}")
        t = torch.as_tensor(t, dtype=torch.float64, device=device)
        if t.ndim == 0:
            t = t.expand(batch_size)
        if t.shape != (batch_size,):
            raise ValueError(f"{argname} must be a scalar or have shape ({batch_size},), got {tuple(t.shape)}")
        if torch.isnan(t).any():
            raise ValueError(f"{argname} contains NaN")
        # a float32 time that rounds to just above t_max (float32(0.1) > 0.1) counts as t_max
        t_max = torch.tensor(self.t_max, dtype=torch.float64)
        t = torch.where((t > t_max) & (t <= t_max.float().double()), t_max.to(t.device), t)
        if (t < 0).any() or (t > self.t_max).any():
            raise ValueError(f"{argname} must lie in [0, t_max={self.t_max!r}], got values in "
                             f"[{t.min().item()!r}, {t.max().item()!r}]")
        return t

    def _coeff(self, fn, t, x: torch.Tensor, argname: str = "t") -> torch.Tensor:
        """``fn(t)`` for the batch of ``x``, as ``(B, 1, …, 1)`` in ``x``'s dtype."""
        return expand_as(fn(self.check_time(t, x.shape[0], device=x.device, argname=argname)), x)

    @staticmethod
    def _check_same_shape(name: str, a: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(a).__name__}")
        if a.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(a.shape)} but {ref_name} has shape {tuple(ref.shape)}")

    # ---- forward process ----------------------------------------------------------------------
    def marginal(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``m(t)·x0`` and std ``s(t)`` (shape ``(B, 1, …, 1)``) of ``x_t | x_0``."""
        return self._coeff(self.marginal_mean_coeff, t, x0) * x0, self._coeff(self.marginal_std, t, x0)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """``x_t = m(t)·x0 + s(t)·noise`` with ``noise ~ N(0, I)``."""
        self._check_same_shape("noise", noise, "x0", x0)
        mean, std = self.marginal(x0, t)
        return mean + std * noise

    def prior_sample(self, shape, *, generator: Generator = None, device=None, dtype=torch.float32) -> torch.Tensor:
        """A draw from ``N(0, (m(T)² + s(T)²)·I)``: the marginal at ``T`` of zero-mean, unit-variance data."""
        T = torch.tensor([self.t_max], dtype=torch.float64)
        std = torch.sqrt(self.marginal_mean_coeff(T) ** 2 + self.marginal_std(T) ** 2).item()
        return randn(shape, generator=generator, device=device, dtype=dtype) * std

    # ---- reverse process ----------------------------------------------------------------------
    def timesteps(self, num_steps: int, t_start: float, *, spacing: str = "uniform",
                  t_end_ratio: float = 1e-2) -> torch.Tensor:
        """A float64 grid of ``num_steps + 1`` decreasing times from exactly ``t_start`` to exactly ``0``.

        ``spacing="uniform"``: ``t_start·(1 − i/num_steps)``. ``spacing="log"``: ``num_steps`` log-spaced times from
        ``t_start`` down to ``t_start·t_end_ratio``, then ``0``: suited to small ``t_start``, where ``s(t)`` and
        the score change by orders of magnitude over the grid. Step ``i`` goes from ``grid[i]`` to ``grid[i+1]``;
        the score is never evaluated at ``t = 0`` itself.
        """
        if isinstance(num_steps, bool) or not isinstance(num_steps, int):
            raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if isinstance(t_start, bool) or not isinstance(t_start, (int, float)) or not math.isfinite(t_start):
            raise ValueError(f"t_start must be a finite float, got {t_start!r}")
        t_start = float(self.check_time(float(t_start), 1, argname="t_start")[0])
        if not t_start > 0:
            raise ValueError(f"t_start must lie in (0, t_max={self.t_max}], got {t_start}")
        if spacing not in TIME_SPACINGS:
            raise ValueError(f"spacing must be one of {TIME_SPACINGS}, got {spacing!r}")
        if not (isinstance(t_end_ratio, (int, float)) and 0 < t_end_ratio < 1):
            raise ValueError(f"t_end_ratio must be a number in (0, 1), got {t_end_ratio!r}")
        if spacing == "uniform":
            grid = torch.linspace(t_start, 0.0, num_steps + 1, dtype=torch.float64)
        else:
            exponents = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64)
            grid = torch.cat([t_start * t_end_ratio ** exponents, torch.zeros(1, dtype=torch.float64)])
        grid[0] = t_start  # exactly, so t_start = t_max passes the range check
        return grid

    def _dt(self, t, t_next, x: torch.Tensor) -> torch.Tensor:
        """``t − t_next`` per sample, ``(B, 1, …, 1)`` in ``x``'s dtype; raises unless ``0 ≤ t_next < t``."""
        t = self.check_time(t, x.shape[0], device=x.device)
        t_next = self.check_time(t_next, x.shape[0], device=x.device, argname="t_next")
        if not (t_next < t).all():
            raise ValueError("t_next must be smaller than t (the reverse process runs from t down to t_next)")
        return expand_as(t - t_next, x)

    def reverse_drift(self, x: torch.Tensor, t, score: torch.Tensor, *, probability_flow: bool = False) -> torch.Tensor:
        """Drift of the reverse-time SDE ``f·x − g²·score`` (``f·x − ½g²·score`` for the probability-flow ODE)."""
        self._check_same_shape("score", score, "x", x)
        f = self._coeff(self.drift_coeff, t, x)
        g2 = self._coeff(self.diffusion, t, x) ** 2
        return f * x - (0.5 if probability_flow else 1.0) * g2 * score

    def step(self, score: torch.Tensor, t, t_next, x: torch.Tensor, *,
             generator: Generator = None) -> SDESchedulerOutput:
        """Euler–Maruyama predictor for the reverse SDE, from ``t`` to ``t_next < t``.

        ``x_mean = x − reverse_drift·Δt``,  ``x = x_mean + g(t)·√Δt·z``, ``Δt = t − t_next``
        (Song et al. 2021, Alg. 2 predictor).
        """
        dt = self._dt(t, t_next, x)
        mean = x - self.reverse_drift(x, t, score) * dt
        g = self._coeff(self.diffusion, t, x)
        noise = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return SDESchedulerOutput(prev_sample=mean + g * torch.sqrt(dt) * noise, prev_sample_mean=mean)

    def step_correct(self, score: torch.Tensor, t, x: torch.Tensor, *, snr: float = 0.16,
                     generator: Generator = None) -> SDESchedulerOutput:
        """One Langevin corrector step at fixed ``t`` with a per-sample step size.

        ``ε = 2·(snr·‖z‖ / ‖score‖)²`` per sample, ``x_mean = x + ε·score``, ``x = x_mean + √(2ε)·z``
        (Song et al. 2021, Alg. 4, with per-sample rather than batch-mean norms).
        """
        self._check_same_shape("score", score, "x", x)
        if isinstance(snr, bool) or not (isinstance(snr, (int, float)) and snr > 0 and math.isfinite(snr)):
            raise ValueError(f"snr must be a finite number > 0, got {snr!r}")
        self.check_time(t, x.shape[0], device=x.device)
        noise = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        score_norm = score.flatten(1).norm(dim=1).clamp_min(torch.finfo(score.dtype).tiny)
        noise_norm = noise.flatten(1).norm(dim=1)
        eps = expand_as(2 * (snr * noise_norm / score_norm) ** 2, x)
        mean = x + eps * score
        return SDESchedulerOutput(prev_sample=mean + torch.sqrt(2 * eps) * noise, prev_sample_mean=mean)

    def step_ode(self, score: torch.Tensor, t, t_next, x: torch.Tensor) -> SDESchedulerOutput:
        """Euler step of the probability-flow ODE ``dx = [f·x − ½g²·score] dt`` from ``t`` to ``t_next < t``."""
        mean = x - self.reverse_drift(x, t, score, probability_flow=True) * self._dt(t, t_next, x)
        return SDESchedulerOutput(prev_sample=mean, prev_sample_mean=mean)

    def denoise(self, score: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
        """Tweedie's formula: ``E[x_0 | x_t = x] = (x + s(t)²·score) / m(t)`` for ``t > 0``.

        One score evaluation jumps from ``x_t`` to the posterior mean of clean data, exact for the true score
        (the SDE's marginal is Gaussian given ``x_0``).
        """
        self._check_same_shape("score", score, "x", x)
        if not (self.check_time(t, x.shape[0], device=x.device) > 0).all():
            raise ValueError("t must be > 0 for the Tweedie denoiser (at t = 0 there is no noise to remove)")
        m, s = self._coeff(self.marginal_mean_coeff, t, x), self._coeff(self.marginal_std, t, x)
        return (x + s**2 * score) / m
