"""Logistic mixtures: normalisation, stability, and sampling == likelihood, on hand-made parameters."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from ncml.models.distributions import MIN_LOG_SCALE, LogisticMixture, num_params


def random_params(num_channels, num_mixtures, n, *, spread=1.0, seed=0):
    """``(1, P, n)`` parameters with well-separated components (means ±spread, log-scales in [-2, 0])."""
    g = torch.Generator().manual_seed(seed)
    m, c = num_mixtures, num_channels
    logits = torch.randn(1, m, n, generator=g, dtype=torch.float64)
    means = spread * (2 * torch.rand(1, c * m, n, generator=g, dtype=torch.float64) - 1)
    log_scales = -2 * torch.rand(1, c * m, n, generator=g, dtype=torch.float64)
    parts = [logits, means, log_scales]
    if c == 3:
        parts.append(2 * torch.randn(1, 3 * m, n, generator=g, dtype=torch.float64))
    return torch.cat(parts, dim=1)


def grid_values(num_bits, dtype=torch.float64):
    return torch.arange(2**num_bits, dtype=dtype) * (2 / (2**num_bits - 1)) - 1


@pytest.mark.parametrize("num_bits", [1, 2, 5, 8])
def test_discrete_channel_masses_sum_to_one(num_bits):
    """Every per-channel conditional (R, then G | R, then B | R, G) sums to 1 over the grid, for any num_bits."""
    mix = LogisticMixture(random_params(3, 4, 1, spread=1.5).expand(2**num_bits, -1, -1), 3, num_bits)
    v = grid_values(num_bits)
    g = torch.Generator().manual_seed(1)
    for c in range(3):
        x = (2 * torch.randint(0, 2**num_bits, (1, 3, 1), generator=g) / (2**num_bits - 1) - 1).double()
        x = x.repeat(len(v), 1, 1)
        x[:, c, 0] = v  # vary channel c; channels before it are a fixed context
        lp = mix.log_prob(x, True)[:, c, 0]
        assert abs(torch.logsumexp(lp, 0).exp().item() - 1) < 1e-10, c


def test_joint_pixel_mass_sums_to_one_and_equals_mixture():
    """Σ over all 2^(3·2) RGB values of the joint = 1, and the per-channel conditionals sum to the joint mixture."""
    mix = LogisticMixture(random_params(3, 3, 1).expand(64, -1, -1), 3, 2)
    v = grid_values(2)
    x = torch.tensor(list(itertools.product(v.tolist(), repeat=3)), dtype=torch.float64)[:, :, None]  # (64, 3, 1)
    lp = mix.log_prob(x, True).sum(1)[:, 0]
    assert abs(torch.logsumexp(lp, 0).exp().item() - 1) < 1e-10
    # direct PixelCNN++ form: LSE_k(log π_k + Σ_c ℓ_c,k)
    direct = torch.logsumexp(F.log_softmax(mix.logits, 1) + mix.component_log_probs(x, True).sum(1), dim=1)[:, 0]
    assert torch.allclose(lp, direct, atol=1e-12)


def test_bin_mass_matches_naive_formula_and_stays_finite_in_the_tails():
    mean = torch.tensor([0.0, 0.3, -0.9])[:, None]
    log_scale = torch.tensor([-1.0, -3.0, -0.5])[:, None]
    x = grid_values(8)[None, :].expand(3, -1)
    from ncml.models.distributions import _discretized_logistic_log_mass
    lp = _discretized_logistic_log_mass(x.double(), mean.double(), log_scale.double(), 8)
    d = 1 / 255
    inv = torch.exp(-log_scale.double())
    cdf_hi = torch.sigmoid(inv * (x + d - mean)).double()
    cdf_lo = torch.sigmoid(inv * (x - d - mean)).double()
    naive = torch.log(torch.where(x < -0.999, cdf_hi, torch.where(x > 0.999, 1 - cdf_lo, cdf_hi - cdf_lo)))
    ok = naive > -30  # where the naive form is still accurate
    assert torch.allclose(lp[ok], naive[ok], rtol=1e-8, atol=1e-10)
    # far tails: the smallest scale, values 2 away from the mean, float32: finite values and gradients
    mean32 = torch.tensor([-1.0], requires_grad=True)
    ls32 = torch.tensor([-20.0], requires_grad=True)
    lp32 = _discretized_logistic_log_mass(x[0].float(), mean32, ls32.clamp(min=MIN_LOG_SCALE), 8)
    assert torch.isfinite(lp32).all() and lp32[-1] < -1000
    lp32.sum().backward()
    assert torch.isfinite(mean32.grad).all()
    # a bin tiny against the scale (1 − e^{−(a − b)} underflows in float32): the mass is the density × Δ
    wide = torch.tensor([100.0], requires_grad=True)
    lp_wide = _discretized_logistic_log_mass(x[0, 100:101].float(), x[0, 100:101].float(), wide, 8)
    assert torch.allclose(lp_wide, math.log(2 / 255) - wide - 2 * math.log(2.0))
    lp_wide.sum().backward()
    assert torch.isfinite(wide.grad).all()


def test_log_scales_are_clamped():
    params = random_params(1, 2, 1)
    params[:, 4:6] = -50.0
    assert (LogisticMixture(params, 1, 8).log_scales >= MIN_LOG_SCALE).all()


@pytest.mark.parametrize("num_channels", [1, 3])
def test_continuous_conditionals_integrate_to_one(num_channels):
    mix = LogisticMixture(random_params(num_channels, 3, 1, spread=2).expand(20001, -1, -1), num_channels, 8)
    grid = torch.linspace(-25, 25, 20001, dtype=torch.float64)
    context = torch.randn(1, num_channels, 1, dtype=torch.float64)
    for c in range(num_channels):
        x = context.repeat(len(grid), 1, 1)
        x[:, c, 0] = grid
        pdf = mix.log_prob(x, False)[:, c, 0].exp()
        assert abs(torch.trapezoid(pdf, grid).item() - 1) < 1e-6, c


@pytest.mark.parametrize("dtype, scale", [(torch.float64, 40), (torch.float32, 1e6)])
def test_mixed_batch_has_finite_gradients(dtype, scale):
    """Discrete and continuous samples in one batch: both branches run on every sample, each on inputs where it is
    finite, so the dropped branch sends no inf·0 NaNs into the gradients of the parameters or of ``x``."""
    params = random_params(3, 2, 4).to(dtype).expand(4, -1, -1).clone().requires_grad_(True)
    x = grid_values(8, dtype)[torch.tensor([0, 255, 100, 7])].reshape(4, 1, 1).repeat(1, 3, 4).clone()
    x[2:] = x[2:] * scale + 5  # far outside [-1, 1] for the continuous ones
    x.requires_grad_(True)
    discrete = torch.tensor([True, True, False, False])
    lp = LogisticMixture(params, 3, 8).log_prob(x, discrete)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(params.grad).all() and torch.isfinite(x.grad).all()
    # and each branch equals the branch computed alone
    assert torch.allclose(lp[:2], LogisticMixture(params[:2], 3, 8).log_prob(x[:2], True))
    assert torch.allclose(lp[2:], LogisticMixture(params[2:], 3, 8).log_prob(x[2:], False))


def test_discrete_samples_match_joint_mass():
    """RGB, 1 bit, n draws at n positions with identical parameters: chi-square over the 8 joint values."""
    n = 20000
    mix = LogisticMixture(random_params(3, 3, 1, spread=1.0, seed=3).expand(-1, -1, n), 3, 1)
    draws = mix.sample(True, generator=torch.Generator().manual_seed(0))  # (1, 3, n)
    assert ((draws == -1) | (draws == 1)).all()
    v = grid_values(1)
    x = torch.tensor(list(itertools.product(v.tolist(), repeat=3)), dtype=torch.float64)[:, :, None]
    one = LogisticMixture(random_params(3, 3, 1, spread=1.0, seed=3).expand(8, -1, -1), 3, 1)
    p = one.log_prob(x, True).sum(1)[:, 0].exp().numpy()
    code = (((draws[0] + 1) / 2).round().long() * torch.tensor([[4], [2], [1]])).sum(0).numpy()
    assert stats.chisquare(np.bincount(code, minlength=8), p * n).pvalue > 1e-3


def test_sampling_with_known_channel_uses_the_component_posterior():
    """With R known, G ~ p(G | R) (posterior over components), not the prior mixture's G."""
    n = 20000
    params = torch.zeros(1, num_params(3, 2), 1, dtype=torch.float64)
    params[0, :2] = 0.0  # equal weights
    params[0, 2:8, 0] = torch.tensor([-0.8, 0.8, -0.8, 0.8, 0.0, 0.0])  # R means, G means, B means
    params[0, 8:14, 0] = -2.5  # narrow components
    mix = LogisticMixture(params.expand(-1, -1, n), 3, 8)
    known = torch.full((1, 3, n), 0.8, dtype=torch.float64)  # R = 0.8 points at component 1
    mask = torch.zeros(1, 3, n, dtype=torch.bool)
    mask[:, 0] = True
    draws = mix.sample(False, known=known, known_mask=mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws[:, 0], known[:, 0])
    # exact conditional P(G > 0 | R = 0.8), by quadrature of the model's own conditional density
    grid = torch.linspace(-10, 10, 40001, dtype=torch.float64)
    x = torch.zeros(len(grid), 3, 1, dtype=torch.float64)
    x[:, 0], x[:, 1] = 0.8, grid[:, None]
    pdf = LogisticMixture(params.expand(len(grid), -1, -1), 3, 8).log_prob(x, False)[:, 1, 0].exp()
    p_pos = torch.trapezoid(pdf * (grid > 0), grid).item()
    assert p_pos > 0.9  # the posterior strongly favours component 1 (prior would give 0.5)
    frac = (draws[0, 1] > 0).double().mean().item()
    assert abs(frac - p_pos) < 4 * math.sqrt(p_pos * (1 - p_pos) / n)


def test_continuous_samples_match_cdf():
    n = 5000
    base = random_params(1, 3, 1, spread=2, seed=5)
    draws = LogisticMixture(base.expand(-1, -1, n), 1, 8).sample(False, generator=torch.Generator().manual_seed(1))
    mix = LogisticMixture(base, 1, 8)
    w = mix.logits.softmax(1)[0, :, 0].numpy()
    mu, s = mix.means[0, 0, :, 0].numpy(), np.exp(mix.log_scales[0, 0, :, 0].numpy())

    def cdf(v):
        return (w * (1 / (1 + np.exp(-(np.asarray(v)[..., None] - mu) / s)))).sum(-1)

    assert stats.kstest(draws[0, 0].numpy(), cdf).pvalue > 1e-3


def test_sample_determinism_and_per_sample_generators():
    params = random_params(3, 2, 5).expand(3, -1, -1)
    mix = LogisticMixture(params, 3, 8)
    discrete = torch.tensor([True, False, True])
    a = mix.sample(discrete, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, mix.sample(discrete, generator=torch.Generator().manual_seed(0)))
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    b = mix.sample(discrete, generator=gens)
    c = LogisticMixture(params[2:], 3, 8).sample(discrete[2:], generator=[torch.Generator().manual_seed(3)])
    assert torch.equal(b[2:], c)
    on_grid = torch.isclose((a + 1) * 127.5, ((a + 1) * 127.5).round())
    assert on_grid[0].all() and on_grid[2].all() and not on_grid[1].all()


def test_bad_params_shape():
    with pytest.raises(ValueError, match="params"):
        LogisticMixture(torch.zeros(1, 11, 1), 3, 8)
    with pytest.raises(ValueError, match="num_channels"):
        num_params(2, 3)
