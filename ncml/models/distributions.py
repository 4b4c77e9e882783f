"""Logistic mixtures over pixels: the likelihood head of every ncml backbone (PixelCNN++, Salimans et al. 2017).

A pixel with ``C`` channels (1 or 3) is modelled by ``M`` logistic components that share one mixture index
``k`` across the channels of the pixel. For three channels the component means are coupled linearly in
R→G→B order (PixelCNN++):

    μ_G,k = m_G,k + α_k · x_R          μ_B,k = m_B,k + β_k · x_R + γ_k · x_G        (α, β, γ = tanh(·))

so the joint density of a pixel is ``Σ_k π_k · L(x_R; μ_R,k, s_R,k) · L(x_G; μ_G,k, s_G,k) · L(x_B; μ_B,k, s_B,k)``.
``log_prob`` returns it **per channel** as the exact conditionals ``log p(x_c | x_<c)`` of that joint,

    log p(x_c | x_<c) = LSE_k[log π_k + Σ_{c' ≤ c} ℓ_c',k] − LSE_k[log π_k + Σ_{c' < c} ℓ_c',k],

which sum over the channels to the joint (so per-dimension bits/dim read as usual) and are what the
autoregressive order R→G→B needs. ``ℓ_c,k`` is, per sample,

* ``discrete`` (``t == 0``): the log mass of the data bin of width ``Δ = 2/(2^bits − 1)`` centred on the grid
  value ``x``; the bins at −1 and +1 are open (they extend to ∓∞), so the ``2^bits`` masses sum to 1;
* continuous (``t > 0``): the log density of ``x``; the caller adds ``log Δ`` to report it in the same units.

Parameter layout (``params`` of shape ``(B, P, *spatial)``, ``P = num_params(C, M)``), along dim 1:
``M`` mixture logits, then ``C·M`` means, ``C·M`` log-scales, and for ``C = 3`` another ``3·M`` raw coupling
coefficients (before ``tanh``), each block channel-major (index ``c·M + k``).
Log-scales are clamped at ``MIN_LOG_SCALE`` (PixelCNN++'s −7).
"""

from __future__ import annotations

import functools
import math
import types

import torch
import torch.nn.functional as F

from .. import utils

MIN_LOG_SCALE = -7.0
# Uniform draws are kept this far from 0 and 1 so that logistic/inverse-CDF draws stay finite.
_U_EPS = 1e-7
# Guided draws at t > 0 (LogisticMixture.guided_sample): cells of the numerical normalisation, and how many scales
# around each component mean they span (a logistic has mass e^-30 ≈ 1e-13 beyond 30 scales).
GUIDANCE_GRID_SIZE = 2048
GUIDANCE_GRID_HALF_WIDTH = 30.0


def num_params(num_channels: int, num_mixtures: int) -> int:
    """Parameters per pixel: logits + means + log-scales (+ 3 coupling coefficients for RGB), times ``M``."""
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
    return num_mixtures * (1 + 2 * num_channels + (3 if num_channels == 3 else 0))


class LogisticMixture:
    """A per-pixel mixture of ``M`` logistics over ``C`` channels (see module docstring).

    Args:
        params: ``(B, P, *spatial)`` raw network outputs, ``P = num_params(num_channels, num_mixtures)``.
        num_channels: ``C`` (1 or 3).
        num_bits: the data grid of the discrete (``t == 0``) branch: ``2^num_bits`` levels in ``[-1, 1]``.
    """

    def __init__(self, params: torch.Tensor, num_channels: int, num_bits: int):
        if params.ndim < 2:
            raise ValueError(f"params must have shape (B, P, ...), got {tuple(params.shape)}")
        per_channel = 2 + (1 if num_channels == 3 else 0)
        if params.shape[1] % (1 + per_channel * num_channels) != 0:
            raise ValueError(f"params has {params.shape[1]} channels, not a multiple of "
                             f"{1 + per_channel * num_channels} (for {num_channels} image channels)")
        m = params.shape[1] // (1 + per_channel * num_channels)
        if params.shape[1] != num_params(num_channels, m):
            raise ValueError(f"params has {params.shape[1]} channels, expected {num_params(num_channels, m)}")
        self.num_channels = num_channels
        self.num_mixtures = m
        self.num_bits = num_bits
        self.bin_width = 2.0 / (2**num_bits - 1)
        c = num_channels
        # views of params (B, 1 + 2C (+ 3), M, *S): logits (B, M, *S); means, log-scales, coefficients (B, C, M, *S)
        logits, self.means, log_scales, *coeffs = params.unflatten(1, (-1, m)).split([1, c, c] + [3] * (c == 3), 1)
        self.logits = logits.squeeze(1)
        self.log_scales = log_scales.clamp(min=MIN_LOG_SCALE)
        self.coeffs = torch.tanh(coeffs[0]) if c == 3 else None

    # ---- structure -------------------------------------------------------------------------------
    def coupled_means(self, x: torch.Tensor) -> torch.Tensor:
        """Component means ``(B, C, M, *S)`` given the pixel values ``x`` ``(B, C, *S)`` of earlier channels."""
        if self.num_channels == 1:
            return self.means
        return torch.stack([self.coupled_mean(x, ch) for ch in range(3)], dim=1)

    def coupled_mean(self, x: torch.Tensor, channel: int) -> torch.Tensor:
        """Component means ``(B, M, *S)`` of one ``channel`` given ``x`` ``(B, C', *S)`` holding at least the channels
        before it: ``coupled_means(x)[:, channel]`` (the same values), computed for that channel alone."""
        if channel == 0:
            return self.means[:, 0]
        xr = x[:, 0:1]  # (B, 1, *S): broadcast over the M components
        if channel == 1:
            return self.means[:, 1] + self.coeffs[:, 0] * xr
        return self.means[:, 2] + self.coeffs[:, 1] * xr + self.coeffs[:, 2] * x[:, 1:2]

    def component_log_probs(self, x: torch.Tensor, discrete: torch.Tensor | bool) -> torch.Tensor:
        """``ℓ_c,k`` of shape ``(B, C, M, *S)``: log bin mass where ``discrete`` (per sample), else log density.

        A mixed batch computes both branches for every sample and selects per sample, with no data-dependent control
        flow (nothing synchronises with the device; it compiles). ``where`` sends zero gradients into the branch it
        drops, and ``0 · inf = NaN``, so that branch must stay finite with finite gradients: the bin mass is meant
        for grid values, so where a sample is continuous (its ``x`` any real) it is taken at the stand-in grid value
        ``−1``; the density needs none (finite, with finite gradients, at every finite ``x``, grid values included).
        """
        return self._log_probs(x.unsqueeze(2), self.coupled_means(x), self.log_scales, discrete)

    def _log_probs(self, xk: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                   discrete: torch.Tensor | bool, inv_s: torch.Tensor | None = None,
                   softplus=F.softplus) -> torch.Tensor:
        """:meth:`component_log_probs` of values ``xk`` (sample axis first, broadcast against the components) under
        components of ``means`` and ``log_scales``; ``inv_s`` is ``exp(−log_scales)`` where the caller has it, and
        ``softplus`` the density's (see :func:`_softplus_in`)."""
        if isinstance(discrete, bool):
            if discrete:
                return _discretized_logistic_log_mass(xk, means, log_scales, self.num_bits, inv_s=inv_s)
            return _logistic_log_pdf(xk, means, log_scales, inv_s=inv_s, softplus=softplus)
        discrete = _as_batch_mask(discrete, xk.shape[0], xk.device).view(-1, *[1] * (xk.ndim - 1))
        inv_s = torch.exp(-log_scales) if inv_s is None else inv_s  # shared by both branches
        mass = _discretized_logistic_log_mass(torch.where(discrete, xk, -1.0), means, log_scales, self.num_bits,
                                              inv_s=inv_s)
        return torch.where(discrete, mass, _logistic_log_pdf(xk, means, log_scales, inv_s=inv_s, softplus=softplus))

    # ---- likelihood ------------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, discrete: torch.Tensor | bool) -> torch.Tensor:
        """Per-channel conditionals ``log p(x_c | x_<c)`` in nats, ``(B, C, *S)``.

        Where ``discrete`` (per sample) these are log probability masses of the bins holding ``x`` (``x`` must be
        on the grid); elsewhere log densities (add ``log Δ`` to compare with masses).
        """
        log_pi = F.log_softmax(self.logits, dim=1)  # (B, M, *S)
        comp = self.component_log_probs(x, discrete)  # (B, C, M, *S)
        if self.num_channels == 1:  # the general case with C = 1, without its identity cumsum and zero prefix
            return torch.logsumexp(log_pi.unsqueeze(1) + comp, dim=2)
        joint = log_pi.unsqueeze(1) + comp.cumsum(dim=1)  # log π_k + Σ_{c' ≤ c} ℓ_c',k
        log_prefix = torch.logsumexp(joint, dim=2)  # log p(x_≤c), (B, C, *S)
        previous = torch.cat([torch.zeros_like(log_prefix[:, :1]), log_prefix[:, :-1]], dim=1)
        return log_prefix - previous

    # ---- sampling --------------------------------------------------------------------------------
    def sample(self, discrete: torch.Tensor | bool, *, known: torch.Tensor | None = None,
               known_mask: torch.Tensor | None = None, generator: utils.Generator = None) -> torch.Tensor:
        """Draw ``x`` ``(B, C, *S)`` channel by channel (R→G→B) from the exact conditionals.

        For channel ``c`` the component is drawn from its posterior ``∝ π_k Π_{c'<c} p(x_c' | k, x_<c')`` and the
        value from that logistic (inverse CDF); where ``discrete`` it is rounded to the nearest grid value with the
        edge bins open, which is exactly the discretized mass. Channels with ``known_mask`` true (``(B, C, *S)``)
        keep ``known``. Every spatial position is drawn independently (the caller owns the raster order).

        Each channel uses two uniforms of shape ``(B, *S)``, the component's and then the value's, channel after
        channel. The draw runs once per pixel in the autoregressive samplers, where a torch call costs more than its
        arithmetic, so it is written for few calls: only channel ``c``'s means and log-probabilities are computed at
        step ``c``; what does not depend on ``x`` is computed once (``s``, ``1/s``, the logistic noise of every
        channel, the likelihood terms of :meth:`_sample_log_probs`); the value is computed under every component and
        the drawn one gathered; numbers enter binary ops as cached tensors (:func:`_constants`), not Python scalars.
        """
        b, c, m = self.means.shape[:3]
        spatial = self.means.shape[3:]
        dtype, device = self.means.dtype, self.means.device
        const = _constants(dtype, device, self.num_bits, len(spatial))
        if not isinstance(discrete, bool):
            discrete = _as_batch_mask(discrete, b, device)
        on_grid = None if isinstance(discrete, bool) else discrete.view(b, 1, *const.ones)  # against (B, 1, *S)
        if known is not None:
            known = known.to(dtype)
        u_k, u = _uniforms(c, b, spatial, generator, device, dtype).unbind(1)  # (C, B, 1, *S) each
        u = u.clamp(_U_EPS, 1 - _U_EPS)
        u_k, noise = u_k.unbind(0), (torch.log(u) - torch.log1p(-u)).unbind(0)  # standard logistic inverse CDF
        scales = self.log_scales.exp()  # (B, C, M, *S)
        log_w = F.log_softmax(self.logits, dim=1)  # (B, M, *S): posterior over k given channels drawn so far
        log_probs = self._sample_log_probs(discrete, scales, const) if c > 1 else None
        means, scales = self.means.unbind(1), scales.unbind(1)  # each (B, M, *S)
        coeffs = self.coeffs.unbind(1) if c == 3 else None
        values = []  # each (B, 1, *S)
        for ch in range(c):
            cdf = torch.softmax(log_w, dim=1).cumsum(dim=1)  # the component by inverse CDF: #{k: cdf_k < u·cdf_M}
            threshold = u_k[ch] * cdf[:, -1:]
            if spatial:
                k = (cdf < threshold).sum(dim=1, keepdim=True)  # (B, 1, *S), at most M − 1 (u < 1)
            else:  # the same count (cdf is sorted); M for NaN weights, where the count gives 0: clamped
                k = torch.searchsorted(cdf, threshold).clamp_(max=m - 1)
            if ch == 0:  # coupled_mean(x, ch), from the values drawn so far
                mu = means[0]
            elif ch == 1:
                mu = means[1] + coeffs[0] * values[0]
            else:
                mu = means[2] + coeffs[1] * values[0] + coeffs[2] * values[1]
            value = (mu + scales[ch] * noise[ch]).gather(1, k)  # the value under every component, the drawn one kept
            if discrete is True:
                value = _quantize(value, const)
            elif on_grid is not None:
                value = torch.where(on_grid, _quantize(value, const), value)
            if known is not None:
                value = torch.where(known_mask[:, ch:ch + 1], known[:, ch:ch + 1], value)
            values.append(value)
            if ch + 1 < c:  # ℓ_ch,k at the drawn value, under the same means (they do not depend on x_ch)
                log_w = log_w + log_probs(ch, value, mu)
        return values[0] if c == 1 else torch.cat(values, dim=1)

    def _sample_log_probs(self, discrete: torch.Tensor | bool, scales: torch.Tensor, const):
        """``f(ch, value, means) -> ℓ_ch,k`` ``(B, M, *S)`` for :meth:`sample`: the log bin mass where ``discrete``,
        else the log density, of ``value`` ``(B, 1, *S)`` under channel ``ch``'s components with coupled ``means``
        ``(B, M, *S)``; the quantities of :meth:`_log_probs` up to float rounding. Both are

            logσ(a) + logσ(−b) + T,     a = (x⁺ − μ)/s,  b = (x⁻ − μ)/s,

        for a bin mass (``log(σ(a) − σ(b))``) with ``x^± = x ± Δ/2`` and ``T = log(1 − e^{−Δ/s})``, or ``x⁻ = −∞``,
        ``T = 0`` in the lower edge bin and ``x⁺ = +∞``, ``T = 0`` in the upper one; for a density
        (``logσ(u) + logσ(−u) − log s``, ``u = (x − μ)/s``) with ``x^± = x`` and ``T = −log s``. ``a`` and ``−b`` are
        computed as one pair. What does not depend on ``x`` (``1/s``, ``T``, the per-sample offsets and edge
        thresholds) is computed here, once per pixel, for every channel but the last; ``scales`` is
        ``exp(log_scales)``."""
        c = self.num_channels
        log_s = self.log_scales[:, :c - 1]  # (B, C − 1, M, *S)
        inv_s = scales[:, :c - 1].reciprocal()
        inv_s2 = (inv_s.unsqueeze(2) * const.sign).unbind(1)  # each (B, 2, M, *S): 1/s, −1/s
        if discrete is not False:  # log(−expm1(−Δ/s)), or log(Δ/s) where it underflows (_discretized_logistic_…)
            width = torch.expm1(inv_s * const.minus_delta).neg_()
            log_width = torch.where(width > const.tiny, torch.log(width.clamp(min=const.tiny)),
                                    const.log_delta - log_s)
        if isinstance(discrete, bool):
            terms = (log_width if discrete else -log_s).unbind(1)
            offsets, threshold = (const.half, const.edge) if discrete else (None, None)
        else:
            on_grid = discrete.view(-1, 1, 1, *const.ones)  # (B, 1, 1, *1)
            terms = torch.where(on_grid, log_width, -log_s).unbind(1)
            offsets = torch.where(on_grid, const.half, const.zero)  # (B, 2, 1, *1): ±Δ/2 or 0
            threshold = torch.where(on_grid, const.edge, const.inf)  # edge bins: beyond ±(1 − Δ/2)

        def log_probs(ch: int, value: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
            x = value.unsqueeze(1)  # (B, 1, 1, *S)
            if offsets is None:  # densities only
                return F.logsigmoid((x - means.unsqueeze(1)) * inv_s2[ch]).sum(dim=1) + terms[ch]
            edge = x * const.sign > threshold  # (B, 2, 1, *S): x in the upper edge bin, x in the lower edge bin
            bounds = torch.where(edge, const.infs, x + offsets)  # x⁺, x⁻
            ab = F.logsigmoid((bounds - means.unsqueeze(1)) * inv_s2[ch]).sum(dim=1)  # logσ(a) + logσ(−b)
            return ab + torch.where(edge.any(dim=1), const.zero, terms[ch])

        return log_probs

    # ---- guidance --------------------------------------------------------------------------------
    def channel_log_probs(self, x: torch.Tensor, channel: int, values: torch.Tensor,
                          discrete: torch.Tensor | bool) -> torch.Tensor:
        """``log p(x_c = v | x_<c)`` ``(B, L)`` for the ``L`` candidate ``values`` ``(B, L)`` of channel ``c`` of one
        pixel per sample (``params`` of shape ``(B, P)``), given that pixel's earlier channels in ``x`` ``(B, C)``.
        Log masses where ``discrete`` (values on the grid), log densities elsewhere.

        The same values as ``log_prob`` of ``x`` with channel ``c`` set to each candidate, taken at channel ``c``; only
        the channels up to ``c`` are evaluated (the conditional of ``c`` does not depend on later ones)."""
        if self.means.ndim != 3:
            raise ValueError("channel_log_probs needs the mixture of one pixel per sample: params of shape (B, P)")
        n = values.shape[1]
        wide = object.__new__(LogisticMixture)  # the same mixture, repeated over a trailing axis of L candidates
        wide.num_channels, wide.num_mixtures, wide.num_bits, wide.bin_width = \
            self.num_channels, self.num_mixtures, self.num_bits, self.bin_width
        for name in ("logits", "means", "log_scales", "coeffs"):
            v = getattr(self, name)
            setattr(wide, name, None if v is None else v.unsqueeze(-1).expand(*v.shape, n))
        xs = x[:, :channel + 1].unsqueeze(-1).expand(-1, -1, n).clone()  # (B, c + 1, L)
        xs[:, channel] = values.to(xs.dtype)
        inv_s = torch.exp(-self.log_scales).unsqueeze(-1).expand(*self.log_scales.shape, n)  # once per pixel, not per L
        shape = wide.log_scales.shape  # (B, C, M, L): the densities' softplus runs in its channel's slot, as log_prob's
        comp = []  # ℓ_c',k for c' ≤ c, each (B, M, L)
        for ch in range(channel + 1):
            softplus = functools.partial(_softplus_in, shape, ch) if self.num_channels > 1 else F.softplus
            comp.append(wide._log_probs(xs[:, ch].unsqueeze(1), wide.coupled_mean(xs, ch), wide.log_scales[:, ch],
                                        discrete, inv_s[:, ch], softplus))
        log_pi = F.log_softmax(wide.logits, dim=1)  # (B, M, L)
        if channel == 0:
            return torch.logsumexp(log_pi + comp[0], dim=1)
        joint = log_pi.unsqueeze(1) + torch.stack(comp, dim=1).cumsum(dim=1)[:, -2:]  # Σ_{c' < c} ℓ and Σ_{c' ≤ c} ℓ
        log_prefix = torch.logsumexp(joint, dim=2)  # log p(x_<c), log p(x_≤c): (B, 2, L)
        return log_prefix[:, 1] - log_prefix[:, 0]

    def guided_sample(self, unconditional: "LogisticMixture", guidance_scale: float, discrete: torch.Tensor | bool, *,
                      known: torch.Tensor | None = None, known_mask: torch.Tensor | None = None,
                      generator: utils.Generator = None, grid_size: int = GUIDANCE_GRID_SIZE) -> torch.Tensor:
        """Draw one pixel ``x`` ``(B, C)`` channel by channel from the guided conditionals

            p_w(x_c | x_<c) ∝ p(x_c | x_<c, y)^(1+w) / p(x_c | x_<c)^w,

        ``self`` being the conditional mixture (``params`` ``(B, P)``), ``unconditional`` the model's mixture
        without the label, ``w = guidance_scale >= 0``. Where ``discrete`` this is exact: both models give a mass to
        every one of the ``2^bits`` levels, so the guided weights are normalised over the levels and drawn by
        inverse CDF. Elsewhere (``t > 0``) the guided density is normalised numerically on ``grid_size`` equal cells
        spanning every component's mean ± :data:`GUIDANCE_GRID_HALF_WIDTH` scales (under both models), a cell drawn
        from the densities at the cell centres, and the value drawn uniformly in the cell: an approximation whose
        error shrinks with the cell width (for ``w = 0`` it is the conditional up to that discretisation).
        ``known``/``known_mask`` ``(B, C)`` keep given channels, as in :meth:`sample`.
        """
        b, c = self.means.shape[:2]
        device, dtype = self.means.device, self.means.dtype
        discrete = _as_batch_mask(discrete, b, device)
        levels = torch.arange(2**self.num_bits, device=device, dtype=dtype) * self.bin_width - 1
        x = torch.zeros((b, c), dtype=dtype, device=device)
        if known is not None:
            x = torch.where(known_mask, known.to(dtype), x)
        w = float(guidance_scale)
        for ch in range(c):
            u = utils.rand((b, 2), generator=generator, device=device, dtype=dtype)  # (B, 2): cell, position in it
            value = torch.empty((b,), dtype=dtype, device=device)
            if discrete.any():
                cand = levels.expand(b, -1)
                log_w = (1 + w) * self.channel_log_probs(x, ch, cand, True) \
                    - w * unconditional.channel_log_probs(x, ch, cand, True)
                value = torch.where(discrete, levels[_categorical(log_w, u[:, 0])], value)
            if not discrete.all():
                lo, hi = _support(self, x, ch), _support(unconditional, x, ch)
                lo, hi = torch.minimum(lo[0], hi[0]), torch.maximum(lo[1], hi[1])  # (B,)
                width = (hi - lo) / grid_size
                centres = lo[:, None] + width[:, None] * (torch.arange(grid_size, device=device, dtype=dtype) + 0.5)
                log_w = (1 + w) * self.channel_log_probs(x, ch, centres, False) \
                    - w * unconditional.channel_log_probs(x, ch, centres, False)
                cell = _categorical(log_w, u[:, 0])
                value = torch.where(discrete, value, lo + width * (cell.to(dtype) + u[:, 1]))
            if known is not None:
                value = torch.where(known_mask[:, ch], x[:, ch], value)
            x[:, ch] = value
        return x

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest grid value ``2k/(2^bits − 1) − 1``, ``k`` clipped to the open edge bins."""
        k = torch.round((x + 1) / self.bin_width).clamp(0, 2**self.num_bits - 1)
        return k * self.bin_width - 1


# ---- elementwise log-likelihoods --------------------------------------------------------------------
def _logistic_log_pdf(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, *,
                      inv_s: torch.Tensor | None = None, softplus=F.softplus) -> torch.Tensor:
    """``log L(x; μ, s) = −u − log s − 2·softplus(−u)``, ``u = (x − μ)/s`` (symmetric, overflow-free); ``inv_s``
    is ``exp(−log_scale)`` where the caller has it already; ``softplus`` another evaluation of ``F.softplus``."""
    u = (x - mean) * (torch.exp(-log_scale) if inv_s is None else inv_s)
    return -u - log_scale - 2 * softplus(-u)


def _softplus_in(shape: torch.Size, index: int, v: torch.Tensor) -> torch.Tensor:
    """``F.softplus(v)`` for ``v`` ``(B, *rest)`` computed in slot ``index`` (dim 1) of a contiguous tensor of
    ``shape`` ``(B, C, *rest)`` (zeros elsewhere): rounded exactly as ``F.softplus`` over a full tensor of that shape
    rounds those elements.

    PyTorch's CPU softplus rounds the tail of each loop (under two SIMD vectors of elements) with its scalar code,
    which can differ from its vector code in the last bit, so an element's rounding depends on its place in the tensor
    (the other functions used here round alike in both). Computing one channel in its slot of the all-channel layout
    keeps ``channel_log_probs`` bit-identical to the all-channel computation of ``log_prob``, at the cost of a
    copy. (``LogisticMixture.sample`` does not use it: its log-probabilities are another expression, see
    ``_sample_log_probs``.)
    """
    slots = v.new_zeros(shape)
    slots[:, index] = v
    return F.softplus(slots)[:, index]


def _discretized_logistic_log_mass(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, num_bits: int, *,
                                   inv_s: torch.Tensor | None = None) -> torch.Tensor:
    """``log P(bin of x)`` for a logistic, bins ``[x − Δ/2, x + Δ/2]`` with open edge bins at ±1 (``x`` on the grid).

    Interior bins use ``log(σ(a) − σ(b)) = logσ(a) + logσ(−b) + log(−expm1(−(a − b)))`` (exact, no cancellation),
    ``a, b = (x ± Δ/2 − μ)/s``. Should ``−expm1`` underflow (a bin tiny against the scale), its log is replaced by
    ``log(a − b) = log Δ − log s``, which it equals to full precision there (the density at the centre times ``Δ``).
    Both candidates are finite, so selecting with ``where`` is gradient-safe here. ``inv_s`` as in
    :func:`_logistic_log_pdf`.
    """
    levels = 2**num_bits - 1
    delta = 2.0 / levels
    inv_s = torch.exp(-log_scale) if inv_s is None else inv_s
    centered = x - mean
    a = inv_s * (centered + delta / 2)  # upper edge, standardised
    b = inv_s * (centered - delta / 2)  # lower edge
    below_upper = F.logsigmoid(a)  # log P(X < x + Δ/2): the whole mass of the lower edge bin
    above_lower = F.logsigmoid(-b)  # log P(X > x − Δ/2): the whole mass of the upper edge bin
    width = -torch.expm1(-(a - b))
    tiny = torch.finfo(width.dtype).tiny
    log_width = torch.where(width > tiny, torch.log(width.clamp(min=tiny)), math.log(delta) - log_scale)
    interior = below_upper + above_lower + log_width
    return torch.where(x < delta / 2 - 1, below_upper, torch.where(x > 1 - delta / 2, above_lower, interior))


def _categorical(log_w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index ``k`` ``(B, *S)`` drawn from unnormalised log-weights ``(B, M, *S)`` by inverse CDF on ``u``."""
    cdf = torch.softmax(log_w, dim=1).cumsum(dim=1)
    k = (cdf < u.unsqueeze(1) * cdf[:, -1:]).sum(dim=1)
    return k.clamp(max=log_w.shape[1] - 1)


def _uniforms(c: int, b: int, spatial: torch.Size, generator: utils.Generator, device, dtype) -> torch.Tensor:
    """``(C, 2, B, 1, *S)`` uniforms for :meth:`LogisticMixture.sample`: the numbers of ``2C`` draws of shape
    ``(B, *S)`` in the order (channel, component or value). A CPU generator draws serially, so one draw of all of
    them gives the same numbers as the ``2C`` draws (per generator where there is one per sample); other devices'
    generators may not, so there they are drawn one by one."""
    gen_device = torch.device(device) if generator is None else \
        (generator[0] if isinstance(generator, list) else generator).device
    if gen_device.type == "cpu":
        if isinstance(generator, list):  # sample i draws (C, 2, *S) from generator[i]
            u = utils.rand((b, c, 2, *spatial), generator=generator, device=device, dtype=dtype).movedim(0, 2)
        else:
            u = utils.rand((c, 2, b, *spatial), generator=generator, device=device, dtype=dtype)
    else:
        u = torch.stack([utils.rand((b, *spatial), generator=generator, device=device, dtype=dtype)
                         for _ in range(2 * c)]).view(c, 2, b, *spatial)
    return u.unsqueeze(3)


def _quantize(x: torch.Tensor, const) -> torch.Tensor:
    """:meth:`LogisticMixture.quantize` (the same operations and rounding; ``x`` is left as it is) with the numbers of
    :func:`_constants`, in place on a new tensor."""
    return x.add(const.one).div_(const.bin_width).round_().clamp_(const.zero, const.levels).mul_(const.bin_width) \
        .sub_(const.one)


@functools.lru_cache(maxsize=64)
def _constants(dtype: torch.dtype, device: torch.device, num_bits: int, spatial_dims: int) -> types.SimpleNamespace:
    """The numbers :meth:`LogisticMixture.sample` uses, as tensors of ``dtype`` on ``device`` (never written to): a
    Python number in a binary op becomes a new tensor at every call, which costs more than the op at these sizes.
    0-dim: ``one``, ``zero``, ``bin_width`` (Δ), ``levels`` (``2^bits − 1``), ``minus_delta``, ``log_delta``,
    ``tiny``, ``edge`` (``1 − Δ/2``), ``inf``; ``(2, 1, *[1] * spatial_dims)``, for the pair (upper bin edge, lower
    bin edge): ``sign`` (±1), ``half`` (±Δ/2), ``infs`` (±∞); ``ones``: ``(1,) * spatial_dims``."""
    levels = 2**num_bits - 1
    delta = 2.0 / levels
    shape = (2, 1, *[1] * spatial_dims)
    with torch.inference_mode(False):  # plain tensors even if first asked for under inference_mode
        scalars = torch.tensor([1.0, 0.0, delta, float(levels), -delta, math.log(delta), torch.finfo(dtype).tiny,
                                1 - delta / 2, math.inf], dtype=dtype, device=device)
        pairs = torch.tensor([[1.0, -1.0], [delta / 2, -delta / 2], [math.inf, -math.inf]], dtype=dtype,
                             device=device)
        names = ("one", "zero", "bin_width", "levels", "minus_delta", "log_delta", "tiny", "edge", "inf")
        return types.SimpleNamespace(**dict(zip(names, scalars.unbind(0))), sign=pairs[0].view(shape),
                                     half=pairs[1].view(shape), infs=pairs[2].view(shape), ones=(1,) * spatial_dims)


def _support(mixture: LogisticMixture, x: torch.Tensor, channel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` ``(B,)``: the components' means ∓ GUIDANCE_GRID_HALF_WIDTH scales of one pixel's ``channel``
    given its earlier channels in ``x`` ``(B, C)``."""
    means = mixture.coupled_mean(x, channel)  # (B, M)
    reach = GUIDANCE_GRID_HALF_WIDTH * mixture.log_scales[:, channel].exp()
    return (means - reach).amin(dim=1), (means + reach).amax(dim=1)


def _as_batch_mask(discrete, batch_size: int, device) -> torch.Tensor:
    if isinstance(discrete, bool):
        return torch.full((batch_size,), discrete, dtype=torch.bool, device=device)
    return discrete.to(device=device, dtype=torch.bool)
