"""uint8 images ↔ model space, and the checks of image arrays.

Model space: ``x = 2k/(2^bits − 1) − 1`` for integer level ``k``; images on disk and here are ``uint8``
``(N, H, W, C)``; tensors for models are float ``(B, C, H, W)``. ``to_model_space`` and ``to_uint8`` are the one
conversion in each direction (clipping and rounding happen in ``to_uint8`` only).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_uint8_images", "check_images", "to_model_space", "to_uint8"]


def check_uint8_images(images, name: str = "images", *, num_bits: int = 8) -> torch.Tensor:
    """Validate uint8 images ``(N, H, W, C)`` (numpy or torch) whose values fit in ``num_bits`` bits; return a tensor."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a uint8 numpy array or tensor (N, H, W, C), got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"{name} must have dtype uint8 (N, H, W, C), got {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (N, H, W, C), got {tuple(images.shape)}")
    if num_bits < 8 and images.numel() and int(images.max()) >= 2**num_bits:
        raise ValueError(f"{name} hold values up to {int(images.max())}; num_bits={num_bits} allows at most "
                         f"{2**num_bits - 1}")
    return images


def check_images(images, name: str = "images", *, num_bits: int = 8, image_shape=None) -> torch.Tensor:
    """Validate uint8 images ``(N, H, W, C)`` (numpy or torch) and return them as a CPU uint8 tensor.

    ``image_shape`` is a backbone's ``(C, H, W)``; values must fit in ``num_bits`` bits.
    """
    images = check_uint8_images(images, name, num_bits=num_bits)
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(images.shape)}); at least one image is needed")
    if image_shape is not None:
        c, h, w = image_shape
        if tuple(images.shape[1:]) != (h, w, c):
            raise ValueError(f"{name} must have shape (N, {h}, {w}, {c}) to match the model, "
                             f"got {tuple(images.shape)}")
    return images.cpu()


def to_model_space(images: np.ndarray | torch.Tensor, *, num_bits: int = 8) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` images → float32 ``(N, C, H, W)`` in ``[-1, 1]``.

    With ``num_bits < 8`` the values must already be levels ``0 … 2^bits − 1``.
    """
    images = check_uint8_images(images, num_bits=num_bits)
    levels = 2**num_bits - 1
    return images.permute(0, 3, 1, 2).float().mul(2.0 / levels).sub(1.0).contiguous()


def to_uint8(x: torch.Tensor, *, num_bits: int = 8) -> np.ndarray:
    """Model-space float ``(N, C, H, W)`` → uint8 ``(N, H, W, C)``: clip to ``[-1, 1]``, round to the grid.

    Clipping happens here and only here: sampler outputs (continuous after refinement) are quantised.
    """
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError("x must be a floating-point tensor (N, C, H, W)")
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError("x contains NaN")
    levels = 2**num_bits - 1
    k = ((x.detach().float().clamp(-1, 1) + 1) * (levels / 2)).round()
    return k.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
