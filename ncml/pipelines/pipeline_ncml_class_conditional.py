"""``NCMLClassConditionalPipeline``: two-part sampling from a class-conditional NCML model (paper section 5).

The class labels condition both phases: the AR draw of ``x_{t_start} ~ p_θ,t_start(x | y)`` and the score
``∇ₓ log p_θ,t(x | y)`` used in refinement.

Guidance (``guidance_scale = w > 0``, for models trained with label dropout, ``config.null_class``) sharpens
the class: the AR phase draws every channel from ``p(x_c | x_<c, y)^(1+w) / p(x_c | x_<c)^w``, normalised over
the ``2^bits`` levels (exact for ``t_start = 0``: plain AR sampling of that per-channel tilt; numerically on a fine
grid for ``t_start > 0``), and refinement follows the score ``(1+w)·∇log p_t(x | y) − w·∇log p_t(x)``. What it
does not guarantee: the tilt is applied per conditional, so the joint of the draws is not ``p(x | y)^(1+w) /
p(x)^w`` normalised over whole images, and the refinement's tilted scores at ``t > 0`` are not the scores of one
diffused density; both are the usual classifier-free approximations. Every guided step costs two network
evaluations (the conditional and the null-label batch, run together).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .. import utils
from .pipeline_ncml import NCMLPipeline, StepEndCallback
from .pipeline_utils import NCMLPipelineOutput


class NCMLClassConditionalPipeline(NCMLPipeline):
    """``NCMLClassConditionalPipeline(backbone, scheduler)`` with a backbone whose ``config.num_classes`` is set."""

    class_conditional: ClassVar[bool | None] = True

    @torch.no_grad()
    def __call__(self, batch_size: int | None = None, *, class_labels: int | list[int] | torch.Tensor,
                 guidance_scale: float = 0.0, t_start: float | None = None, num_inference_steps: int | None = None, correct_steps: int | None = None,
                 snr: float | None = None, probability_flow: bool | None = None,
                 denoise: bool | str | None = None, spacing: str | None = None,
                 generator: utils.Generator = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end: StepEndCallback | None = None) -> NCMLPipelineOutput | tuple:
        """Draw one image per label.

        Args:
            batch_size: number of images ``B``; ``None`` = one per label (1 for an ``int`` label). An ``int``
                label with a ``batch_size`` is used for every image; a list or tensor must have ``B`` entries.
            class_labels: required; ints in ``[0, num_classes)``: an ``int``, a list, or an integer tensor ``(B,)``.
            guidance_scale: ``w >= 0``, 0 = off (see the module docstring); needs a model with a null class.

        The other arguments and the output are those of :meth:`NCMLPipeline.__call__`.
        """
        if batch_size is None:
            is_int = isinstance(class_labels, int) and not isinstance(class_labels, bool)
            is_scalar_tensor = isinstance(class_labels, torch.Tensor) and class_labels.ndim == 0
            if is_int or is_scalar_tensor or class_labels is None:
                batch_size = 1
            elif isinstance(class_labels, (list, tuple, torch.Tensor)):
                batch_size = len(class_labels)
            else:
                raise TypeError(f"class_labels must be an int, a list of ints or an integer tensor, "
                                f"got {type(class_labels).__name__}")
        if isinstance(class_labels, torch.Tensor) and class_labels.ndim == 0:
            class_labels = class_labels.item() if not class_labels.dtype.is_floating_point else class_labels
        return self._generate(batch_size, class_labels=class_labels, guidance_scale=guidance_scale, known=None, known_mask=None,
                              t_start=t_start, num_inference_steps=num_inference_steps,
                              correct_steps=correct_steps, snr=snr, probability_flow=probability_flow,
                              denoise=denoise, spacing=spacing, generator=generator, output_type=output_type,
                              return_dict=return_dict, callback_on_step_end=callback_on_step_end)
