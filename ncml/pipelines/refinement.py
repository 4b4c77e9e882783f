"""Score-based refinement: the one predictor–corrector loop of every NCML pipeline (paper section 4.2).

Phase 2 of two-part sampling solves the reverse SDE (or the probability-flow ODE) from ``x_{t_start}`` down to
``t = 0`` with the score ``∇ₓ log p_θ,t(x)`` of the autoregressive model itself, taken by autograd
(``backbone.score``). It is predictor–corrector sampling (Song et al. 2021, Alg. 2–4) on a time grid that this
loop owns (``scheduler.timesteps(num_inference_steps, t_start, spacing=...)``; the scheduler keeps no state): at
each time ``t`` of the grid run ``correct_steps`` Langevin corrector steps at ``t``, then one predictor step from
``t`` to the next time ``t_next`` (Euler–Maruyama for the reverse SDE, or an Euler step of the probability-flow
ODE). The corrector comes first, as in score-SDE's ``pc_sampler``, so the loop ends on a predictor step whose
noise-free mean is the denoised output; ``denoise="tweedie"`` instead replaces that last predictor step by one
Tweedie step ``(x + s(t)²·score)/m(t)`` to the posterior mean of clean data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models.autoregressive import ARBackbone
from ..schedulers.scheduling_utils import SDEScheduler
from ..utils import Generator

# (x (B, C, H, W), t) -> x with known pixels replaced by a fresh draw of p_t(x | x_known) (inpainting)
KnownHook = Callable[[torch.Tensor, float], torch.Tensor]
# (step index, t, x) -> x or None; called after every predictor step
StepEndHook = Callable[[int, float, torch.Tensor], "torch.Tensor | None"]


@dataclass(frozen=True)
class RefinementOutput:
    sample: torch.Tensor  # (B, C, H, W) x_0 in model space, continuous (not yet quantised)
    nfe: int  # score evaluations (one forward + one backward pass of the backbone each)


def check_denoise(denoise, argname: str = "denoise") -> None:
    """Raise unless ``denoise`` is ``True``, ``False`` or ``"tweedie"`` (the last steps :func:`refine` offers)."""
    if not (isinstance(denoise, bool) or denoise == "tweedie"):
        raise ValueError(f"{argname} must be True, False or 'tweedie', got {denoise!r}")


def refine(backbone: ARBackbone, scheduler: SDEScheduler, x: torch.Tensor, *, t_start: float,
           num_inference_steps: int, correct_steps: int = 1, snr: float = 0.16, probability_flow: bool = False,
           denoise: bool | str = True, spacing: str = "uniform", class_labels: torch.Tensor | None = None,
           guidance_scale: float = 0.0, generator: Generator = None,
           impose_known: KnownHook | None = None, on_step_end: StepEndHook | None = None,
           progress_bar: Callable | None = None) -> RefinementOutput:
    """Refine ``x`` ``(B, C, H, W)``, a draw of ``x_{t_start}``, down to ``t = 0``.

    Args:
        backbone: gives the score ``∇ₓ Σ log_prob`` (nats) at ``(x, t, class_labels)``.
        scheduler: the SDE; only its stateless steps and ``timesteps`` grid are used.
        num_inference_steps: predictor steps from ``t_start`` to 0 (one of them the Tweedie step, if chosen).
        correct_steps: Langevin corrector steps per time (0 = predictor only); ``snr`` sets their step size.
        probability_flow: use the probability-flow ODE as predictor instead of the reverse SDE.
        denoise: ``True``: return the last predictor step's mean (no noise added in the final step); ``False``:
            the last sample as is; ``"tweedie"``: the last step is Tweedie's ``E[x_0 | x_t]`` instead.
        spacing: the time grid, ``"uniform"`` in ``t`` or ``"log"`` (log-spaced, for small ``t_start``).
        guidance_scale: ``w > 0`` refines with the guided score ``(1+w)·∇log p_t(x | y) − w·∇log p_t(x)``
            (:meth:`ARBackbone.guided_score`; two network evaluations each). It is the score of the tilted density
            ``∝ p_t(x | y)^(1+w) / p_t(x)^w`` at each ``t``, which the noising SDE does not map one into another, so
            the refinement is guided sampling in the usual (approximate) classifier-free sense, not an exact
            sampler of the tilted ``t = 0`` density.
        impose_known: inpainting; called after every corrector and predictor step with the time the sample is
            now at, it re-imposes the known pixels noised to that time (at ``t = 0``: the clean values).
        on_step_end: called after every predictor step; a returned tensor replaces the sample.
        progress_bar: ``progress_bar(iterable, total=..., desc=...)`` wrapping the time loop.
    """
    check_denoise(denoise)
    grid = scheduler.timesteps(num_inference_steps, t_start, spacing=spacing).tolist()  # float64, ends at 0.0
    nfe = 0

    def score(x, t):
        nonlocal nfe
        if guidance_scale:
            nfe += 2
            return backbone.guided_score(x, t, class_labels, guidance_scale).to(x.dtype)
        nfe += 1
        return backbone.score(x, t, class_labels).to(x.dtype)

    def known(x, t):
        return x if impose_known is None else impose_known(x, t)

    steps = list(zip(grid[:-1], grid[1:]))
    if progress_bar is not None:
        steps = progress_bar(steps, total=len(steps), desc="Score-based refinement")
    x_mean = x
    for i, (t, t_next) in enumerate(steps):
        for _ in range(correct_steps):  # Langevin corrector at fixed t (Alg. 4)
            x = scheduler.step_correct(score(x, t), t, x, snr=snr, generator=generator).prev_sample
            x = known(x, t)
        if denoise == "tweedie" and t_next == 0:  # the last step: Tweedie's posterior mean of x_0
            x = x_mean = scheduler.denoise(score(x, t), t, x)
        else:
            if probability_flow:  # predictor: Euler step of the probability-flow ODE
                out = scheduler.step_ode(score(x, t), t, t_next, x)
            else:  # predictor: Euler–Maruyama step of the reverse SDE (Alg. 2)
                out = scheduler.step(score(x, t), t, t_next, x, generator=generator)
            x, x_mean = known(out.prev_sample, t_next), out.prev_sample_mean
        if on_step_end is not None:
            replaced = on_step_end(i, t, x)
            if replaced is not None:
                x = x_mean = replaced
    # final denoise: the last predictor step without its noise term; known pixels (t = 0: exact) on top
    return RefinementOutput(sample=known(x if denoise is False else x_mean, 0.0), nfe=nfe)
