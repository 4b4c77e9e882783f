"""``NCMLInpaintPipeline``: image completion with two-part sampling (paper section 5, "Image Completion").

Phase 1 samples the unknown pixels autoregressively at ``t_start`` with the known pixels, noised to ``t_start``,
as context. Phase 2 refines everything down to ``t = 0`` and, after every step, replaces the known pixels by a
fresh draw of ``p_t(x | x_known) = N(m(t)·x_known, s(t)²·I)`` at the time the sample has reached (the
inpainting rule of Song et al. 2021, App. I.2). At ``t = 0`` that draw is ``x_known`` itself, so the returned
images keep the known pixels bit-exactly. With a raster-order model, the known top half (the paper's setting)
is pure context for phase 1; any other mask is handled the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import utils
from ..data import to_model_space
from .pipeline_ncml import NCMLPipeline, StepEndCallback
from .pipeline_utils import NCMLPipelineOutput, as_uint8_images


class NCMLInpaintPipeline(NCMLPipeline):
    """``NCMLInpaintPipeline(backbone, scheduler)``; the backbone may be unconditional or class-conditional."""

    class_conditional = None

    @torch.no_grad()
    def __call__(self, batch_size: int | None = None, *, image, mask, class_labels=None,
                 t_start: float | None = None, num_inference_steps: int | None = None, correct_steps: int | None = None,
                 snr: float | None = None, probability_flow: bool | None = None,
                 denoise: bool | str | None = None, spacing: str | None = None,
                 generator: utils.Generator = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end: StepEndCallback | None = None) -> NCMLPipelineOutput | tuple:
        """Complete ``image`` where ``mask`` is 0.

        Args:
            batch_size: number of completions ``B``; ``None`` = one per image. A single image with a
                ``batch_size`` is completed ``B`` times; otherwise ``B`` must equal the number of images.
            image: uint8 (or integer-valued) numpy array or tensor ``(N, H, W, C)``, values in ``[0, 2^bits − 1]``.
            mask: 1 / ``True`` = keep the pixel of ``image``, 0 = sample it; bool or integer, shape ``(H, W)``
                (every image and channel) or ``(N, H, W, C)``.
            class_labels: required iff the backbone is class-conditional (as in the class-conditional pipeline).

        The other arguments and the output are those of :meth:`NCMLPipeline.__call__`.
        """
        config = self.backbone.config
        images = as_uint8_images(image, argname="image", num_bits=config.num_bits)
        channels, height, width = self.backbone.image_shape
        if images.shape[1:] != (height, width, channels):
            raise ValueError(f"image must have shape (N, {height}, {width}, {channels}) for this backbone, "
                             f"got {images.shape}")
        keep = _check_mask(mask, images.shape)
        n = images.shape[0]
        if batch_size is None:
            batch_size = n
        elif isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size != n:
            if n != 1:
                raise ValueError(f"batch_size={batch_size} does not match the {n} images given; pass one image "
                                 "to complete it batch_size times, or batch_size=None")
            if batch_size >= 1:
                images, keep = images.repeat(batch_size, 0), keep.repeat(batch_size, 0)
        known = to_model_space(images, num_bits=config.num_bits)  # (B, C, H, W)
        known_mask = torch.from_numpy(keep).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W) bool
        return self._generate(batch_size, class_labels=class_labels, guidance_scale=0.0, known=known, known_mask=known_mask,
                              t_start=t_start, num_inference_steps=num_inference_steps,
                              correct_steps=correct_steps, snr=snr, probability_flow=probability_flow,
                              denoise=denoise, spacing=spacing, generator=generator, output_type=output_type,
                              return_dict=return_dict, callback_on_step_end=callback_on_step_end)


def _check_mask(mask, image_shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` as bool ``(N, H, W, C)``: bool or integer 0/1, shaped ``(H, W)`` or like the image."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy array or tensor, got {type(mask).__name__}")
    if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer)):
        raise TypeError(f"mask must be bool or integer (1 = keep, 0 = sample), got dtype {mask.dtype}")
    n, h, w, c = image_shape
    if mask.shape == (h, w):
        mask = np.broadcast_to(mask[None, :, :, None], image_shape)
    elif mask.shape != image_shape:
        raise ValueError(f"mask must have shape ({h}, {w}) or the image's shape {image_shape}, got {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("mask must hold only 0 and 1 (1 = keep, 0 = sample)")
    return np.ascontiguousarray(mask.astype(bool))
