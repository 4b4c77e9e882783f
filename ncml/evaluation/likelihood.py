"""Negative log-likelihood in bits/dim of uint8 images under an ``ARBackbone`` ``p_θ,t``.

Two quantities, both ``−log₂ p / D`` per image (``D = C·H·W``):

- ``noised=False`` (Fig. 4, Table 1): the **clean** image ``x_0`` scored by the model conditioned on ``t``,
  ``−log p_θ,t(x_0)``. At ``t = 0`` it is an exact probability mass over the ``2^bits`` bins; at ``t > 0``
  the backbone reports the continuous density as ``log pdf + log Δ``, so the two read alike.
- ``noised=True`` (section 4, Eq. 7 at one ``t``): ``x_t = m(t)·x_0 + s(t)·ε`` is drawn from the SDE's
  marginal ``p_t(·|x_0)`` (``scheduler`` required) and scored by ``p_θ,t``: the NCML objective at ``t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import check_images, to_model_space
from ..utils import Generator, check_generator, randn

__all__ = ["BitsPerDim", "bits_per_dim", "bits_per_dim_from_log_prob", "check_images"]  # check_images: ncml.data


@dataclass(frozen=True)
class BitsPerDim:
    mean: float  # bits/dim averaged over the images
    per_image: np.ndarray  # (N,) float64 bits/dim of each image
    t: float  # the time the model was conditioned on
    noised: bool  # True: scored x_t ~ p_t(·|x_0); False: scored the clean x_0


def bits_per_dim_from_log_prob(log_prob: torch.Tensor) -> torch.Tensor:
    """Per-example bits/dim ``−mean(log_prob) / ln 2`` ``(B,)`` of per-dimension log-likelihoods in nats
    ``(B, …)``, the mean taken over all but the batch dimension."""
    return -log_prob.flatten(1).mean(1) / math.log(2.0)


def check_times(ts) -> tuple[float, ...]:
    """``ts`` as a non-empty tuple of finite floats ``>= 0`` (SDE times); raises ``ValueError`` naming ``ts``."""
    ts = tuple(ts)
    if not ts:
        raise ValueError("ts is empty")
    for t in ts:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"ts must hold finite floats >= 0, got {t!r}")
    return ts


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_labels(class_labels, n: int) -> torch.Tensor | None:
    if class_labels is None:
        return None
    labels = torch.as_tensor(np.asarray(class_labels) if not isinstance(class_labels, torch.Tensor) else class_labels)
    if labels.shape != (n,):
        raise ValueError(f"class_labels must have shape ({n},) (one per image), got {tuple(labels.shape)}")
    return labels


@torch.no_grad()
def bits_per_dim(model, images_uint8, t: float = 0.0, *, noised: bool = False, scheduler=None,
                 class_labels=None, batch_size: int = 64, generator: Generator = None,
                 progress: bool = True, desc: str | None = None) -> BitsPerDim:
    """NLL in bits/dim of ``images_uint8`` under ``model`` conditioned on ``t``.

    Args:
        model: an ``ARBackbone`` (``model.log_prob(x, t, class_labels) -> (B, C, H, W)`` nats).
        images_uint8: uint8 ``(N, H, W, C)`` matching ``model.image_shape``.
        t: SDE time in ``[0, T]`` (a float; every image gets the same ``t``).
        noised: score ``x_t ~ p_t(·|x_0)`` instead of the clean ``x_0`` (needs ``scheduler``).
        scheduler: the ``SDEScheduler`` whose marginal defines ``p_t(·|x_0)`` (only with ``noised=True``).
        class_labels: ``(N,)`` integer labels for class-conditional models, else ``None``.
        batch_size: images per forward pass.
        generator: ``torch.Generator`` (or a list of ``N``, one per image) for the noise of ``noised=True``.

    Returns:
        ``BitsPerDim(mean, per_image (N,), t, noised)``; ``per_image[i] = −Σ log_prob / (D·ln 2)``.
        The model is put in eval mode for the pass and restored afterwards.
    """
    cfg = model.config
    images = check_images(images_uint8, "images_uint8", num_bits=cfg.num_bits,
                          image_shape=(cfg.in_channels, cfg.sample_size, cfg.sample_size))
    n = images.shape[0]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ValueError(f"t must be a finite float >= 0, got {t!r}")
    t = float(t)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if noised and scheduler is None:
        raise ValueError("scheduler is required with noised=True (it defines p_t(x_t | x_0))")
    if not noised and scheduler is not None:
        raise ValueError("scheduler is only used with noised=True; pass noised=True or drop scheduler")
    if noised:
        scheduler.check_time(t, 1)
        check_generator(generator, n)
    labels = _check_labels(class_labels, n)

    device = _model_device(model)
    was_training = model.training
    model.eval()
    per_image = []
    try:
        for start in tqdm(range(0, n, batch_size), desc=desc or f"bits/dim at t={t:g}", disable=not progress,
                          leave=False):
            stop = min(start + batch_size, n)
            x = to_model_space(images[start:stop], num_bits=cfg.num_bits).to(device)
            if noised and t > 0:
                g = generator[start:stop] if isinstance(generator, list) else generator
                x = scheduler.add_noise(x, randn(x.shape, generator=g, device=device, dtype=x.dtype), t)
            y = None if labels is None else labels[start:stop].to(device)
            log_prob = model.log_prob(x, t, y)  # (B, C, H, W) nats
            per_image.append(bits_per_dim_from_log_prob(log_prob.double()).cpu())
    finally:
        model.train(was_training)
    values = torch.cat(per_image).numpy()
    return BitsPerDim(mean=float(values.mean()), per_image=values, t=t, noised=bool(noised))
