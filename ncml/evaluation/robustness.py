"""The LSB sanity test (section 3.1) and noise-robustness curves Δlog p(t) (section 4.1, Fig. 4).

``p_π`` is ``p_data`` with the least significant bit of every value flipped independently with
probability ``π`` (Eq. 5): imperceptible, yet it costs standard likelihood models many bits/dim. The
measure of robustness at time ``t`` is (Eq. 9)

    Δlog p(t) = | NLL_t(p_data) − NLL_t(p_π) |      (bits/dim, clean images scored by p_θ,t)

Lemma 3.2: at ``π = 1/2``, ``E_{x∼p_1/2}[q(x)] = 2^{−D} · E_{x∼p_data}[q(top k−1 bits of x)]`` (D values per
image; the paper's statement leaves out the ``2^{−D}``, the mass spread uniformly over the 2^D LSB patterns),
so the π = 1/2 likelihood only measures how well the top k−1 bits are modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import check_images
from ..utils import Generator, check_generator, rand
from .likelihood import bits_per_dim, check_times
from .reporting import format_table

__all__ = ["lsb_flip", "noise_robustness", "RobustnessResult", "default_times"]


def _check_pi(pi) -> float:
    if isinstance(pi, bool) or not isinstance(pi, (int, float)) or not (0.0 <= pi <= 1.0):
        raise ValueError(f"pi must be a probability in [0, 1], got {pi!r}")
    return float(pi)


def lsb_flip(images_uint8, pi: float, *, bits: int = 8, generator: Generator = None):
    """A draw from ``p_π``: flip the least significant bit of each value with probability ``pi``.

    Args:
        images_uint8: uint8 ``(N, H, W, C)`` (numpy or torch) with values below ``2^bits``.
        pi: flip probability in ``[0, 1]`` (0: identity; 1: every LSB flipped).
        bits: bit depth ``k`` of the data (values must lie in ``0 … 2^k − 1``; flipping bit 0 keeps them there).
        generator: ``torch.Generator`` or a list of ``N`` (one per image).

    Returns the same type as the input (numpy array or tensor), uint8, same shape. Higher bits never change.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an int in [1, 8], got {bits!r}")
    pi = _check_pi(pi)
    was_numpy = isinstance(images_uint8, np.ndarray)
    images = check_images(images_uint8, "images_uint8", num_bits=bits)
    check_generator(generator, images.shape[0])
    if pi == 0.0:
        flips = torch.zeros(images.shape, dtype=torch.uint8)
    elif pi == 1.0:
        flips = torch.ones(images.shape, dtype=torch.uint8)
    else:
        flips = (rand(images.shape, generator=generator, dtype=torch.float64) < pi).to(torch.uint8)
    out = images ^ flips.to(images.device)
    return out.numpy() if was_numpy else out


def default_times(t_max: float, num: int = 8, *, t_min_ratio: float = 1e-3) -> tuple[float, ...]:
    """``(0, t_1, …, t_{num−1})``: 0 plus ``num − 1`` log-spaced times from ``t_max·t_min_ratio`` to ``t_max``.

    Log spacing because robustness changes over orders of magnitude of ``t`` (Fig. 4, right).
    """
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    return (0.0, *(float(v) for v in np.geomspace(t_max * t_min_ratio, t_max, num - 1)))


@dataclass(frozen=True)
class RobustnessResult:
    ts: tuple[float, ...]  # (T,) times the model was conditioned on
    pis: tuple[float, ...]  # (P,) flip probabilities; pis[0] == 0 (p_data itself)
    nll: np.ndarray  # (T, P) mean NLL in bits/dim of p_π images under p_θ,t
    delta: np.ndarray  # (T, P) Δlog p = |nll[:, 0] − nll[:, j]| in bits/dim (Eq. 9); column 0 is 0
    per_image: np.ndarray  # (T, P, N) NLL in bits/dim of each image

    def table(self) -> str:
        """A plain-text table: one row per ``t``; NLL and Δlog p per π."""
        head = ["t"] + [f"NLL π={p:g}" for p in self.pis] + [f"Δlog p π={p:g}" for p in self.pis[1:]]
        rows = [[f"{t:.4g}"] + [f"{v:.4f}" for v in self.nll[i]] + [f"{v:.4f}" for v in self.delta[i, 1:]]
                for i, t in enumerate(self.ts)]
        return format_table(head, rows)


def noise_robustness(model, images, pis=(0.0, 0.5, 1.0), ts=(0.0,), *, class_labels=None, batch_size: int = 64,
                     generator: Generator = None, progress: bool = True) -> RobustnessResult:
    """The sanity test at several times: NLL of ``p_π`` images under ``p_θ,t`` and Δlog p per ``t``.

    One ``p_π`` draw per π (from ``lsb_flip``) is shared by every ``t``, so curves differ only through ``t``.
    Images are scored clean (``noised=False``), as in Fig. 4. ``0`` is added to ``pis`` if missing: it is
    the reference ``p_data``.

    Args:
        model: an ``ARBackbone``.
        images: uint8 ``(N, H, W, C)`` real images (the ``p_data`` sample).
        pis: flip probabilities in ``[0, 1]``.
        ts: times in ``[0, T]``; see :func:`default_times`.
        generator: draws the bit flips.

    Returns a :class:`RobustnessResult` (bits/dim); plot it with ``ncml.evaluation.plot_robustness``.
    """
    pis = tuple(_check_pi(p) for p in pis)
    if not pis:
        raise ValueError("pis is empty")
    pis = (0.0, *(p for p in dict.fromkeys(pis) if p != 0.0))  # p_data first, duplicates dropped
    ts = check_times(ts)
    bits = model.config.num_bits
    images = check_images(images, "images", num_bits=bits)
    flipped = [lsb_flip(images, p, bits=bits, generator=generator) for p in pis]
    per_image = np.stack([
        np.stack([bits_per_dim(model, x, float(t), class_labels=class_labels, batch_size=batch_size,
                               progress=progress, desc=f"sanity test t={t:g} π={p:g}").per_image
                  for p, x in zip(pis, flipped)])
        for t in ts])  # (T, P, N)
    nll = per_image.mean(axis=2)
    delta = np.abs(nll - nll[:, :1])
    return RobustnessResult(ts=tuple(float(t) for t in ts), pis=pis, nll=nll, delta=delta, per_image=per_image)

