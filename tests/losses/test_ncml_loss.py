"""NCMLLoss: MLE as the special case clean_fraction=1, t ~ μ, x_t from the scheduler, gradients, bad input."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ncml.data import load_dataset, to_model_space
from ncml.losses import NCMLLoss, NCMLLossConfig, NCMLLossOutput
from ncml.models.autoregressive import ARBackbone
from ncml.schedulers import SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler

from losses.tiny_backbone import TinyARConfig, TinyARModel

SCHEDULERS = [VPSDEScheduler(), VESDEScheduler(), SubVPSDEScheduler()]


def digits_batch(n=16, size=8):
    images, labels = load_dataset("digits", "test")
    return to_model_space(images[:n, :size, :size]), torch.from_numpy(labels[:n])


def reference_discretized_nll_bits(x, mean, log_scale, bits=8):
    """Vanilla PixelCNN++ discretized-logistic NLL in bits/dim, float64, from CDF differences (B,)."""
    x, mean, s = x.double(), mean.double(), torch.exp(log_scale.double())
    delta = 2.0 / (2**bits - 1)
    cdf = lambda v: torch.sigmoid((v - mean) / s)  # noqa: E731
    upper = torch.where(x > 1 - delta / 2, torch.ones_like(x), cdf(x + delta / 2))
    lower = torch.where(x < -1 + delta / 2, torch.zeros_like(x), cdf(x - delta / 2))
    return -torch.log(upper - lower).flatten(1).mean(1) / math.log(2.0)


def test_tiny_backbone_normalises_over_the_bins():
    model = TinyARModel(TinyARConfig(sample_size=2))
    levels = torch.arange(256, dtype=torch.float32) * (2 / 255) - 1
    x = levels.reshape(256, 1, 1, 1).expand(256, 1, 2, 2).contiguous()  # first pixel takes every level
    mass = model.log_prob(x, 0.0)[:, 0, 0, 0].double().exp().sum()
    assert mass.item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: type(s).__name__)
def test_clean_fraction_one_is_the_discretized_nll(scheduler):
    torch.manual_seed(1)
    model = TinyARModel(TinyARConfig(sample_size=8))
    x0, _ = digits_batch()
    out = NCMLLoss(NCMLLossConfig(clean_fraction=1.0))(model, scheduler, x0, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, NCMLLossOutput)
    assert torch.equal(out.t, torch.zeros(16, dtype=torch.float64))
    # exactly the model's own t = 0 likelihood (MLE), bit for bit …
    direct = -model.log_prob(x0, 0.0).flatten(1).mean(1) / math.log(2.0)
    assert torch.equal(out.nll_per_dim, direct)
    assert torch.equal(out.loss, direct.mean())
    # … which is the vanilla discretized-logistic NLL computed independently
    params = model(x0, 0.0).params
    ref = reference_discretized_nll_bits(x0, params[:, 0], params[:, 1])
    torch.testing.assert_close(out.nll_per_dim.double(), ref, rtol=1e-5, atol=1e-5)


def test_nll_per_dim_is_the_per_example_loss_at_the_sampled_t():
    model = TinyARModel(TinyARConfig(sample_size=8))
    sched = VPSDEScheduler()
    x0, _ = digits_batch()
    g = torch.Generator().manual_seed(3)
    out = NCMLLoss()(model, sched, x0, generator=g)
    assert out.nll_per_dim.shape == (16,) and out.t.shape == (16,) and out.loss.shape == ()
    assert torch.equal(out.loss, out.nll_per_dim.mean())
    assert ((out.t == 0) | ((out.t > 0) & (out.t <= sched.t_max))).all()
    assert 0 < (out.t == 0).sum() < 16  # both branches present with this seed


class RecordingBackbone(ARBackbone):
    """Wraps a backbone and records the inputs it was called with."""

    config_class = TinyARConfig

    def __init__(self, config):
        super().__init__(config)
        self.inner = TinyARModel(config)
        self.calls = []

    def forward(self, x, t, class_labels=None):
        self.calls.append((x.detach().clone(), torch.as_tensor(t).clone(), class_labels))
        return self.inner(x, t, class_labels)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: type(s).__name__)
def test_x_t_is_x0_when_clean_and_the_scheduler_marginal_otherwise(scheduler):
    model = RecordingBackbone(TinyARConfig(sample_size=8, num_classes=10))
    x0, labels = digits_batch()
    out = NCMLLoss()(model, scheduler, x0, labels, generator=torch.Generator().manual_seed(5))
    (x_t, t, seen_labels), = model.calls
    assert torch.equal(t, out.t) and torch.equal(seen_labels, labels)
    clean = out.t == 0
    assert torch.equal(x_t[clean], x0[clean])
    # replay the draws: rand (B, 2) for t, then randn for ε, from the same generator
    g = torch.Generator().manual_seed(5)
    torch.rand((16, 2), generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g)
    expected = scheduler.add_noise(x0, noise, out.t)
    assert torch.equal(x_t[~clean], expected[~clean])
    assert not torch.equal(x_t[~clean], x0[~clean])


def test_draws_use_only_the_generator_and_per_example_generators_ignore_the_batch():
    model = TinyARModel(TinyARConfig(sample_size=8))
    sched = VESDEScheduler()
    x0, _ = digits_batch(8)
    loss = NCMLLoss()
    a = loss(model, sched, x0, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(123)  # the global RNG must not matter
    b = loss(model, sched, x0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.t, b.t) and torch.equal(a.nll_per_dim, b.nll_per_dim)
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(8)]  # noqa: E731
    full = loss(model, sched, x0, generator=gens())
    half = loss(model, sched, x0[4:], generator=gens()[4:])
    assert torch.equal(full.t[4:], half.t)
    torch.testing.assert_close(full.nll_per_dim[4:], half.nll_per_dim)


# ---- t ~ μ -----------------------------------------------------------------------------------
N = 20_000


@pytest.mark.parametrize("clean_fraction", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("t_max", [0.025, 0.1, 0.5])
def test_sampled_t_follow_mu_continuous(clean_fraction, t_max):
    t = NCMLLoss(NCMLLossConfig(clean_fraction=clean_fraction)).sample_t(
        N, t_max, generator=torch.Generator().manual_seed(7)).numpy()
    assert t.dtype == np.float64 and (t >= 0).all() and (t <= t_max).all()
    n_clean = int((t == 0).sum())
    if clean_fraction in (0.0, 1.0):
        assert n_clean == N * clean_fraction
        if clean_fraction == 1.0:
            return
    else:
        assert stats.binomtest(n_clean, N, clean_fraction).pvalue > 1e-3
    noisy = t[t > 0]
    assert stats.kstest(noisy, stats.uniform(loc=0, scale=t_max).cdf).pvalue > 1e-3


def test_sampled_t_follow_mu_with_t_min():
    t = NCMLLoss(NCMLLossConfig(clean_fraction=0.1, t_min=0.02)).sample_t(
        N, 0.1, generator=torch.Generator().manual_seed(8)).numpy()
    noisy = t[t > 0]
    assert noisy.min() > 0.02 and noisy.max() <= 0.1
    assert stats.kstest(noisy, stats.uniform(loc=0.02, scale=0.08).cdf).pvalue > 1e-3


@pytest.mark.parametrize("k", [1, 5, 19])
def test_sampled_t_follow_mu_on_a_grid(k):
    t_max = 0.5
    t = NCMLLoss(NCMLLossConfig(clean_fraction=1 / (k + 1), num_noise_levels=k)).sample_t(
        N, t_max, generator=torch.Generator().manual_seed(9)).numpy()
    grid = np.concatenate([[0.0], np.arange(1, k + 1) * (t_max / k)])
    idx = np.argmin(np.abs(t[:, None] - grid[None]), axis=1)
    assert np.allclose(t, grid[idx], rtol=0, atol=1e-12) and t.max() <= t_max
    counts = np.bincount(idx, minlength=k + 1)
    assert stats.chisquare(counts).pvalue > 1e-3  # the paper's μ: uniform over {0} ∪ grid


@pytest.mark.parametrize("t_min,t_max", [(1e-4, 0.1), (1e-3, 0.02), (0.01, 0.5)])
def test_sampled_t_follow_mu_log_uniform(t_min, t_max):
    t = NCMLLoss(NCMLLossConfig(clean_fraction=0.5, noise_distribution="log_uniform", t_min=t_min)).sample_t(
        N, t_max, generator=torch.Generator().manual_seed(10)).numpy()
    noisy = t[t > 0]
    assert stats.binomtest(int((t == 0).sum()), N, 0.5).pvalue > 1e-3
    assert noisy.min() >= t_min and noisy.max() <= t_max
    # log t is uniform on [log t_min, log T]: every decade gets the same share, e.g. below 10·t_min
    assert stats.kstest(np.log(noisy), stats.uniform(loc=np.log(t_min), scale=np.log(t_max / t_min)).cdf).pvalue > 1e-3
    share = (noisy < 10 * t_min).mean()
    expected = np.log(10) / np.log(t_max / t_min)
    assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / len(noisy))


def test_log_uniform_puts_more_examples_at_small_t_than_uniform():
    """The reason log-uniform exists: t ≤ T/10 gets 1/10 of uniform's noisy examples, (1/3 per decade) here 1/3."""
    draws = {d: NCMLLoss(NCMLLossConfig(clean_fraction=0.0, noise_distribution=d, t_min=1e-4 if d != "uniform" else 0))
             .sample_t(N, 0.1, generator=torch.Generator().manual_seed(11)).numpy() for d in ("uniform", "log_uniform")}
    assert abs((draws["uniform"] <= 0.01).mean() - 0.1) < 0.01
    assert abs((draws["log_uniform"] <= 0.01).mean() - 2 / 3) < 0.015


@pytest.mark.parametrize("k", [1, 4, 10])
def test_sampled_t_follow_mu_on_a_log_grid(k):
    t_min, t_max = 1e-3, 0.1
    t = NCMLLoss(NCMLLossConfig(clean_fraction=0.0, noise_distribution="log_uniform", t_min=t_min,
                                num_noise_levels=k)).sample_t(N, t_max, generator=torch.Generator().manual_seed(12))
    grid = np.geomspace(t_min, t_max, k) if k > 1 else np.array([t_max])
    idx = np.argmin(np.abs(np.log(t.numpy())[:, None] - np.log(grid)[None]), axis=1)
    assert np.allclose(t.numpy(), grid[idx], rtol=1e-12, atol=0) and t.max() <= t_max
    assert stats.chisquare(np.bincount(idx, minlength=k)).pvalue > 1e-3 if k > 1 else (idx == 0).all()


def test_the_ks_check_rejects_a_wrong_mu():
    # the KS check above is not vacuous: it rejects a wrong μ (here t² / T, not uniform)
    t = NCMLLoss(NCMLLossConfig(clean_fraction=0.0)).sample_t(N, 0.1, generator=torch.Generator().manual_seed(7))
    assert stats.kstest((t**2 / 0.1).numpy(), stats.uniform(loc=0, scale=0.1).cdf).pvalue < 1e-6


# ---- gradients ------------------------------------------------------------------------------
def test_gradients_reach_every_parameter():
    model = TinyARModel(TinyARConfig(sample_size=8, num_classes=10))
    x0, labels = digits_batch()
    out = NCMLLoss(NCMLLossConfig(clean_fraction=0.5))(model, VPSDEScheduler(), x0, labels,
                                                       generator=torch.Generator().manual_seed(3))
    assert 0 < (out.t == 0).sum() < 16
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradients_reach_every_ncpn_parameter():
    ncpn = pytest.importorskip("ncml.models.ncpn")
    torch.manual_seed(0)
    model = ncpn.NCPNModel(ncpn.NCPNConfig(sample_size=8, in_channels=1, nr_resnet=1, nr_filters=8,
                                           nr_logistic_mix=2, attention_heads=2, dropout=0.0, num_classes=10))
    x0, labels = digits_batch(8)
    loss = NCMLLoss(NCMLLossConfig(clean_fraction=0.5))
    out = loss(model, VPSDEScheduler(), x0, labels, generator=torch.Generator().manual_seed(3))
    assert 0 < (out.t == 0).sum() < 8
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not (p.grad.abs().sum() > 0)]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # and clean_fraction=1 is the model's own discretized NLL (eval mode: no dropout)
    model.eval()
    mle = NCMLLoss(NCMLLossConfig(clean_fraction=1.0))(model, VPSDEScheduler(), x0, labels)
    direct = -model.log_prob(x0, 0.0, labels).flatten(1).mean(1) / math.log(2.0)
    assert torch.equal(mle.nll_per_dim, direct)


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(clean_fraction=1.5), "clean_fraction"),
    (dict(clean_fraction=-0.1), "clean_fraction"),
    (dict(clean_fraction="half"), "clean_fraction"),
    (dict(num_noise_levels=0), "num_noise_levels"),
    (dict(num_noise_levels=2.0), "num_noise_levels"),
    (dict(t_min=-1.0), "t_min"),
    (dict(t_min=float("nan")), "t_min"),
    (dict(t_min=0.01, num_noise_levels=4), "t_min"),
    (dict(noise_distribution="log_uniform"), "t_min"),
    (dict(noise_distribution="cosine"), "noise_distribution"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NCMLLossConfig(**kwargs)


def test_bad_call_arguments():
    model = TinyARModel(TinyARConfig(sample_size=8))
    x0, _ = digits_batch(4)
    loss = NCMLLoss()
    with pytest.raises(TypeError, match="config"):
        NCMLLoss({"clean_fraction": 0.5})
    with pytest.raises(TypeError, match="x0"):
        loss(model, VPSDEScheduler(), (x0 * 127.5 + 127.5).to(torch.uint8))
    with pytest.raises(TypeError, match="scheduler"):
        loss(model, "vp", x0)
    with pytest.raises(ValueError, match="generator"):
        loss(model, VPSDEScheduler(), x0, generator=[torch.Generator()] * 3)
    with pytest.raises(ValueError, match="t_min"):
        NCMLLoss(NCMLLossConfig(t_min=0.2))(model, VPSDEScheduler(), x0)  # VP's T = 0.1
    with pytest.raises(ValueError, match="grid"):  # off-grid clean data is caught by the backbone
        NCMLLoss(NCMLLossConfig(clean_fraction=1.0))(model, VPSDEScheduler(), x0 * 0.999)
