"""The exact Bayes classifier of a class-conditional likelihood model.

An autoregressive model gives ``log p_θ,t(x | y)`` exactly, so Bayes' rule gives the class posterior

    log p(y | x) = log p_θ,t(x | y) + log p(y) − log Σ_y' p_θ,t(x | y') p(y')

with one batched forward pass per class and no approximation beyond the model itself. Because NCML models are
conditioned on the noise level ``t``, the same network classifies noisy images: an image ``x_0 + σ·ε`` (Gaussian
noise of std ``σ`` in model space) scaled by ``m(t)`` is exactly a draw of the SDE marginal ``x_t`` at the time
``t`` where ``s(t)/m(t) = σ`` (:func:`matched_time`), so ``p_θ,t(· | y)`` is the model of exactly those images.

The same fact gives a classifier of *clean* images that no t = 0 likelihood offers: add noise of std ``σ`` yourself and
classify the noisy copies at the matched ``t`` (:func:`smoothed_class_posterior`). Measured with the bundled
``ncpn-mnist5k-vp-cond`` on 250 MNIST-5k validation digits (four noisy copies each): 74.0 % at t = 0, 91.6 % with
σ = 4 grey levels, 94.4 % with 16, 98.0 % with 32 (docs/RESULTS.md, section 8, has the test figure). On all 500
validation digits with σ = 32: 95.0 % with four copies, 95.6 % with eight (``ncml classify --split validation
--num-images 500 --smoothing-std 32 --num-draws 4`` or ``8``); another set of draws gave 95.8 % and 96.4 %, and
σ = 24 or 40, or the three averaged, did no better. A likely reason for the gain: the t = 0 likelihood is dominated
by pixel-level detail (stroke edges, the exact grey levels) that says little about the digit, and noise of a few grey
levels washes that detail out of every class's likelihood alike.

Images that arrive noisy (known noise std ``σ_in``) can be smoothed the same way: each copy tops their noise up to
the chosen std (``input_noise_std``). On the 500 validation digits with 8 and 16 grey levels of noise, the Bayes
classifier at the matched ``t`` is right on 90.6 % and 91.2 %; topped up to 32 grey levels in four copies, on
95.4 % and 94.0 % (``ncml classify --split validation --num-images 500 --noise-std 0 8 16 32 40`` with and without
``--smoothing-std 32``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.images import check_images, to_model_space

__all__ = ["class_posterior", "matched_time", "noisy_marginal_draw", "smoothed_class_posterior"]


def _check_prior(prior, num_classes: int) -> torch.Tensor:
    """``prior`` as float64 log-probabilities ``(K,)``; ``None`` = uniform."""
    if prior is None:
        return torch.full((num_classes,), -math.log(num_classes), dtype=torch.float64)
    p = torch.as_tensor(np.asarray(prior.cpu() if isinstance(prior, torch.Tensor) else prior), dtype=torch.float64)
    if p.shape != (num_classes,):
        raise ValueError(f"prior must have shape ({num_classes},) (one probability per class), got {tuple(p.shape)}")
    if not torch.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"prior must hold finite probabilities >= 0, got {p.tolist()}")
    if abs(p.sum().item() - 1) > 1e-6:
        raise ValueError(f"prior must sum to 1, got {p.sum().item():.6g}")
    return p.log()


def class_posterior(model, images, t: float = 0.0, *, prior=None, batch_size: int = 64,
                    progress: bool = True) -> torch.Tensor:
    """``log p(y | x)`` ``(N, K)`` float64 on the CPU under a class-conditional ``model`` at SDE time ``t``.

    Args:
        model: a class-conditional ``ARBackbone`` (``config.num_classes = K``); a null class, if any, is not one of
            the ``K`` classes.
        images: uint8 ``(N, H, W, C)`` clean images on the model's grid (then ``t`` is usually 0), or a float tensor
            ``(N, C, H, W)`` in model space, e.g. a draw of ``x_t`` (see :func:`matched_time` for noisy images).
        t: the time the likelihoods are evaluated at (``0``: exact masses on the data grid).
        prior: class probabilities ``(K,)`` summing to 1; ``None`` = uniform.
        batch_size: images per forward pass (each pass holds ``batch_size`` images × ``K`` labels at most).

    Rows are normalised (``logsumexp`` over classes is 0); ``argmax`` is the Bayes decision. The model is put in
    eval mode for the pass and restored afterwards.
    """
    cfg = model.config
    num_classes = getattr(cfg, "num_classes", None)
    if num_classes is None:
        raise ValueError("model must be class-conditional (config.num_classes set) to give p(x | y); this one is "
                         "unconditional")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ValueError(f"t must be a finite float >= 0, got {t!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    if isinstance(images, torch.Tensor) and images.dtype.is_floating_point:
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(f"images: a float tensor must be model-space x of shape (N, {', '.join(map(str, shape))}),"
                             f" got {tuple(images.shape)}")
        x_all = images
    else:
        x_all = to_model_space(check_images(images, "images", num_bits=cfg.num_bits, image_shape=shape),
                               num_bits=cfg.num_bits)
    log_prior = _check_prior(prior, num_classes)
    n = x_all.shape[0]
    weight = next(model.parameters())
    device, dtype = weight.device, weight.dtype
    per_chunk = max(1, batch_size // num_classes)  # images per chunk; a chunk is split into passes of batch_size
    labels = torch.arange(num_classes, device=device)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in tqdm(range(0, n, per_chunk), desc=f"p(y | x) at t={t:g}", disable=not progress,
                              leave=False):
                x = x_all[start:start + per_chunk].to(device=device, dtype=dtype)
                b = x.shape[0]
                xs = x.repeat_interleave(num_classes, dim=0)  # image-major: (b·K, C, H, W)
                ys = labels.repeat(b)
                log_px = torch.cat([model.log_prob(xs[i:i + batch_size], t, ys[i:i + batch_size]).double()
                                    .flatten(1).sum(1) for i in range(0, xs.shape[0], batch_size)])
                out.append(log_px.view(b, num_classes).cpu())
    finally:
        model.train(was_training)
    joint = torch.cat(out) + log_prior  # log p(x | y) + log p(y)
    return joint - torch.logsumexp(joint, dim=1, keepdim=True)


def matched_time(scheduler, noise_std: float) -> float:
    """The SDE time ``t`` with ``s(t)/m(t) = noise_std``: ``m(t)·(x_0 + noise_std·ε)`` is then exactly distributed
    as the marginal ``x_t`` of ``scheduler`` (``x_t = m(t)·x_0 + s(t)·ε``). ``noise_std`` is in model space (a std of
    ``k`` 8-bit grey levels is ``2k/255``); found by bisection (``s/m`` increases with ``t``) to float64 precision.
    Raises if it exceeds the ratio at the scheduler's ``t_max``."""
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not math.isfinite(noise_std) \
            or noise_std < 0:
        raise ValueError(f"noise_std must be a finite float >= 0, got {noise_std!r}")
    if noise_std == 0:
        return 0.0

    def ratio(t: float) -> float:
        tt = torch.tensor([t], dtype=torch.float64)
        return (scheduler.marginal_std(tt) / scheduler.marginal_mean_coeff(tt)).item()

    lo, hi = 0.0, float(scheduler.t_max)
    if ratio(hi) < noise_std:
        raise ValueError(f"noise_std={noise_std:g} exceeds s(T)/m(T)={ratio(hi):.4g} of the scheduler "
                         f"(t_max={hi:g}): the model has not seen that much noise")
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if ratio(mid) < noise_std else (lo, mid)
    return hi


def noisy_marginal_draw(scheduler, images, noise_std: float, *, num_bits: int = 8,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """``(x_t, t)``: clean uint8 ``images`` ``(N, H, W, C)`` in model space plus Gaussian noise of std ``noise_std``
    (model space; ``k`` grey levels of 8 bits is ``2k/255``), scaled by ``m(t)`` at ``t = matched_time(scheduler,
    noise_std)``, so ``x_t`` (float64 ``(N, C, H, W)``) is a draw of the SDE marginal at ``t``. ``noise_std = 0``
    gives the clean images and ``t = 0``."""
    t = matched_time(scheduler, noise_std)
    x0 = to_model_space(check_images(images, "images", num_bits=num_bits), num_bits=num_bits).double()
    if noise_std == 0:
        return x0, 0.0
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    return scheduler.marginal_mean_coeff(torch.tensor(t, dtype=torch.float64)) * (x0 + noise_std * noise), t


def _noisy_input(model, images, input_noise_std: float) -> torch.Tensor:
    """``images`` as float64 model-space ``x_0 + input_noise_std·ε`` ``(N, C, H, W)`` on the CPU: clean uint8
    ``(N, H, W, C)`` images (then ``input_noise_std`` must be 0) or a float tensor already in model space."""
    cfg = model.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    if isinstance(images, torch.Tensor) and images.dtype.is_floating_point:
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(f"images: a float tensor must be model-space x_0 + input_noise_std·ε of shape "
                             f"(N, {', '.join(map(str, shape))}), got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("images must be finite (the float tensor holds NaN or inf)")
        return images.detach().cpu().double()
    if input_noise_std > 0:
        raise ValueError(f"input_noise_std={input_noise_std:g} > 0: images must be the noisy images as a float "
                         "tensor (N, C, H, W) in model space, not uint8")
    return to_model_space(check_images(images, "images", num_bits=cfg.num_bits, image_shape=shape),
                          num_bits=cfg.num_bits).double()


def smoothed_class_posterior(model, scheduler, images, noise_std: float, *, num_draws: int = 4,
                             input_noise_std: float = 0.0, prior=None, generator: torch.Generator | None = None,
                             batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """``log p̃(y | x)`` ``(N, K)``: the Bayes rule with the likelihood replaced by the geometric mean of
    ``p_θ,t(x̃_k | y)`` over ``num_draws`` noisy copies ``x̃_k`` of each image, i.e.
    ``log p(y) + (1/num_draws)·Σ_k log p_θ,t(x̃_k | y)``, normalised over classes.

    Each copy is the image plus Gaussian noise bringing its total noise std to ``noise_std`` (model space; ``k``
    grey levels of 8 bits is ``2k/255``), scaled by ``m(t)`` at ``t = matched_time(scheduler, noise_std)``, so it is
    a draw of the SDE marginal ``x_t``:

    * clean images: uint8 ``(N, H, W, C)`` (or model-space floats) with ``input_noise_std = 0``; each copy adds
      noise of std ``noise_std`` (:func:`noisy_marginal_draw`). This is a classifier of clean images built from
      the noisy-data likelihoods only an NCML model has; it is not the posterior of any generative model of the
      clean ``x``. ``noise_std = 0`` is :func:`class_posterior` at ``t = 0``.
    * noisy images: a float tensor ``(N, C, H, W)`` holding ``x_0 + input_noise_std·ε`` in model space (not
      scaled by ``m``); each copy adds independent noise of std ``sqrt(noise_std² − input_noise_std²)``, which is
      again exactly a marginal draw. ``noise_std = input_noise_std`` is one evaluation at the matched ``t`` (the
      copies would all be equal).

    Choose ``noise_std`` on held-out data. Draws come from ``generator`` (``torch.randn`` on the CPU, float64)."""
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be an int >= 1, got {num_draws!r}")
    for name, value in (("noise_std", noise_std), ("input_noise_std", input_noise_std)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
    if noise_std < input_noise_std:
        raise ValueError(f"noise_std={noise_std:g} must be >= input_noise_std={input_noise_std:g}: noise can be "
                         "added to the images, not taken away")
    x = _noisy_input(model, images, input_noise_std)
    kwargs = dict(prior=prior, batch_size=batch_size, progress=progress)
    if noise_std == 0:
        return class_posterior(model, images if not isinstance(images, torch.Tensor) else x, 0.0, **kwargs)
    t = matched_time(scheduler, noise_std)
    m = scheduler.marginal_mean_coeff(torch.tensor(t, dtype=torch.float64))
    if noise_std == input_noise_std:
        return class_posterior(model, m * x, t, **kwargs)
    extra = math.sqrt(noise_std**2 - input_noise_std**2) if input_noise_std else noise_std
    total = 0
    for _ in range(num_draws):
        x_t = m * (x + extra * torch.randn(x.shape, generator=generator, dtype=torch.float64))
        total = total + class_posterior(model, x_t, t, **kwargs)
    mean = total / num_draws  # each draw's normaliser is the same for every class, so this keeps log p(y) once
    return mean - torch.logsumexp(mean, dim=1, keepdim=True)
