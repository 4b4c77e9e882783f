"""``NCMLPipeline``: two-part sampling from a noise conditional autoregressive model (paper section 4.2).

Phase 1 draws ``x_{t_start} ~ p_θ,t_start`` autoregressively (one pixel at a time, ``backbone.sample``).
Phase 2 refines it down to ``t = 0`` with the model's own score (:func:`ncml.pipelines.refinement.refine`).
The result is quantised to ``uint8`` once. ``t_start = 0`` skips phase 2: plain AR sampling of ``p_θ,0``.

The class-conditional and inpainting pipelines reuse :meth:`NCMLPipeline._generate`; only their arguments differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from .. import utils
from ..models.autoregressive import ARBackbone
from ..schedulers.scheduling_utils import SDEScheduler
from .pipeline_utils import (NCMLPipelineOutput, Pipeline, check_int, check_output_type, check_t_start,
                             postprocess)
from .refinement import refine

# callback_on_step_end(pipeline, step_index, t, {"sample": x}) -> None or a dict whose "sample" replaces x
StepEndCallback = Callable[["Pipeline", int, float, dict], "dict | None"]


class NCMLPipeline(Pipeline):
    """Unconditional two-part sampling: ``NCMLPipeline(backbone, scheduler)``.

    ``backbone`` is an :class:`~ncml.models.autoregressive.ARBackbone` trained with NCML under the SDE of
    ``scheduler`` (an :class:`~ncml.schedulers.SDEScheduler`). A backbone loaded from a pipeline folder remembers
    the scheduler it was saved with; a scheduler of another class or ``t_max`` raises ``ValueError`` unless
    ``allow_scheduler_mismatch=True`` (which also allows later ``pipe.scheduler = ...`` swaps).
    """

    # whether the backbone must be class-conditional (True), unconditional (False) or either (None)
    class_conditional: ClassVar[bool | None] = False

    def __init__(self, backbone: ARBackbone, scheduler: SDEScheduler, *, allow_scheduler_mismatch: bool = False):
        if not isinstance(allow_scheduler_mismatch, bool):
            raise TypeError(f"allow_scheduler_mismatch must be a bool, got {type(allow_scheduler_mismatch).__name__}")
        self._allow_scheduler_mismatch = allow_scheduler_mismatch
        self.register_components(backbone=backbone, scheduler=scheduler)
        num_classes = backbone.config.num_classes
        if self.class_conditional is False and num_classes is not None:
            raise ValueError(f"backbone is class-conditional (num_classes={num_classes}); "
                             "use NCMLClassConditionalPipeline")
        if self.class_conditional is True and num_classes is None:
            raise ValueError("backbone is unconditional (config.num_classes=None); use NCMLPipeline")

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, *, t_start: float | None = None, num_inference_steps: int | None = None,
                 correct_steps: int | None = None, snr: float | None = None, probability_flow: bool | None = None,
                 denoise: bool | str | None = None, spacing: str | None = None,
                 generator: utils.Generator = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end: StepEndCallback | None = None) -> NCMLPipelineOutput | tuple:
        """Draw ``batch_size`` images.

        Every sampler argument left as ``None`` takes its value from ``self.sampling_config`` (the pipeline
        folder's ``sampling_config.json``: the best setting measured for this model, where one was measured).

        Args:
            batch_size: number of images ``B``.
            t_start: SDE time of the AR phase, in ``[0, scheduler.t_max]``; ``0`` = plain AR sampling (no
                refinement); ``t_max / 2`` where neither the call nor the sampling config gives one.
            num_inference_steps: predictor steps from ``t_start`` to 0.
            correct_steps: Langevin corrector steps before each predictor step (0 = none).
            snr: signal-to-noise ratio that sets the corrector's step size (Song et al. 2021).
            probability_flow: refine with the probability-flow ODE instead of the reverse SDE.
            denoise: ``True``: end on the last predictor step's mean (no noise added in the final step);
                ``False``: on its noisy sample; ``"tweedie"``: the last step is Tweedie's ``E[x_0 | x_t]``.
            spacing: the refinement time grid, ``"uniform"`` in ``t`` or ``"log"`` (for small ``t_start``).
            generator: a ``torch.Generator`` or one per image; the global RNG is never used when given.
            output_type: ``"pil"`` (list of PIL images), ``"np"`` (uint8 ``(B, H, W, C)``) or ``"pt"``
                (float ``(B, C, H, W)`` in ``[-1, 1]``).
            return_dict: return :class:`NCMLPipelineOutput`, else the tuple ``(images, nfe, noisy_samples)``.
            callback_on_step_end: ``f(pipeline, step_index, t, {"sample": x})`` after every refinement step;
                it may return ``{"sample": new_x}``.
        """
        return self._generate(batch_size, class_labels=None, guidance_scale=0.0, known=None, known_mask=None,
                              t_start=t_start,
                              num_inference_steps=num_inference_steps, correct_steps=correct_steps, snr=snr,
                              probability_flow=probability_flow, denoise=denoise, spacing=spacing, generator=generator,
                              output_type=output_type, return_dict=return_dict,
                              callback_on_step_end=callback_on_step_end)

    # ---- the two phases, shared by every NCML pipeline ------------------------------------------
    def _generate(self, batch_size, *, class_labels, guidance_scale, known: torch.Tensor | None,
                  known_mask: torch.Tensor | None,
                  t_start, num_inference_steps, correct_steps, snr, probability_flow, denoise, spacing, generator,
                  output_type, return_dict, callback_on_step_end) -> NCMLPipelineOutput | tuple:
        """Two-part sampling; ``known`` ``(B, C, H, W)`` clean model-space values where ``known_mask`` is True."""
        backbone, scheduler = self.backbone, self.scheduler
        if torch.is_inference_mode_enabled():
            raise RuntimeError("NCML pipelines take the score by autograd, which torch.inference_mode() forbids; "
                               "call the pipeline outside inference_mode (it runs under torch.no_grad itself)")
        batch_size = check_int("batch_size", batch_size, 1)
        defaults = self.sampling_config
        t_start = check_t_start(defaults.t_start if t_start is None else t_start, scheduler)
        try:  # the sampling config's own checks, naming the argument
            settings = defaults.replace(num_inference_steps=num_inference_steps, correct_steps=correct_steps, snr=snr,
                                        probability_flow=probability_flow, denoise=denoise, spacing=spacing)
        except (TypeError, ValueError) as e:
            raise type(e)(str(e).replace("SamplingConfig.", "")) from None
        if not isinstance(return_dict, bool):
            raise TypeError(f"return_dict must be a bool, got {type(return_dict).__name__}")
        check_output_type(output_type)
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")
        utils.check_generator(generator, batch_size)
        device, dtype = backbone.device, backbone.dtype
        class_labels = backbone.check_class_labels(class_labels, batch_size, device=device)
        guidance_scale = backbone.check_guidance(guidance_scale, class_labels)
        if known is not None:
            known, known_mask = known.to(device=device, dtype=dtype), known_mask.to(device=device)

        def impose_known(x: torch.Tensor, t: float) -> torch.Tensor:
            """Known pixels as a fresh draw of ``p_t(x | x_known) = N(m(t)·x_known, s(t)²)`` (exact at t = 0)."""
            if t == 0:
                return torch.where(known_mask, known, x)
            noise = utils.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return torch.where(known_mask, scheduler.add_noise(known, noise, t), x)

        # phase 1: x_{t_start} ~ p_θ,t_start autoregressively, conditioned on the noised known pixels
        network_calls = backbone.num_sampling_evaluations(known_mask, guided=bool(guidance_scale))
        context = None if known is None else impose_known(torch.zeros_like(known), t_start)
        guided = {"guidance_scale": guidance_scale} if guidance_scale else {}  # only guided calls pass it
        noisy = backbone.sample(batch_size, t_start, class_labels, known=context, known_mask=known_mask,
                                generator=generator, progress=not self.progress_bar_disabled, **guided)

        # phase 2: score-based refinement from t_start to 0
        if t_start == 0:
            sample, nfe = noisy, network_calls
        else:
            def on_step_end(i, t, x):  # passed to refine only when the user gave a callback
                returned = callback_on_step_end(self, i, t, {"sample": x})
                if returned is None:
                    return None
                name = getattr(callback_on_step_end, "__qualname__", repr(callback_on_step_end))
                if not isinstance(returned, dict):
                    raise TypeError(f"callback_on_step_end ({name}) must return None or a dict, got "
                                    f"{type(returned).__name__}")
                sample = returned.get("sample")
                if sample is None:
                    return None
                if not isinstance(sample, torch.Tensor) or not sample.dtype.is_floating_point:
                    raise TypeError(f"callback_on_step_end ({name}) returned a 'sample' that is not a float tensor "
                                    f"(got {type(sample).__name__}"
                                    f"{'' if not isinstance(sample, torch.Tensor) else ' ' + str(sample.dtype)}); "
                                    "return the model-space sample it was given, modified")
                if sample.shape != x.shape:
                    raise ValueError(f"callback_on_step_end ({name}) returned a sample of shape "
                                     f"{tuple(sample.shape)}; the sample has shape {tuple(x.shape)}")
                if not torch.isfinite(sample).all():
                    raise ValueError(f"callback_on_step_end ({name}) returned a sample with NaN or inf values")
                return sample.to(device=x.device, dtype=x.dtype)

            refined = refine(backbone, scheduler, noisy, t_start=t_start,
                             num_inference_steps=settings.num_inference_steps, correct_steps=settings.correct_steps,
                             snr=settings.snr, probability_flow=settings.probability_flow, denoise=settings.denoise,
                             spacing=settings.spacing, class_labels=class_labels, guidance_scale=guidance_scale,
                             generator=generator,
                             impose_known=None if known is None else impose_known,
                             on_step_end=None if callback_on_step_end is None else on_step_end,
                             progress_bar=self.progress_bar)
            sample, nfe = refined.sample, network_calls + refined.nfe

        out = NCMLPipelineOutput(images=postprocess(sample, output_type, num_bits=backbone.config.num_bits),
                                 nfe=nfe, noisy_samples=noisy)
        return out if return_dict else out.to_tuple()
