"""Cached NCPN sampling (``ncml.models.ncpn_cache``) reproduces the naive full-forward loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ncml.models.ncpn import NCPNConfig, NCPNModel
from ncml.models.ncpn_cache import NCPNCache


def make_model(dtype=torch.float32, **overrides) -> NCPNModel:
    config = dict(sample_size=6, in_channels=1, num_bits=8, nr_resnet=1, nr_filters=8, nr_logistic_mix=3,
                  attention_heads=2, dropout=0.0, num_classes=None, fourier_scale=1.0, embedding_dim=16)
    torch.manual_seed(0)
    model = NCPNModel(NCPNConfig(**{**config, **overrides})).to(dtype).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # perturb every parameter so that no layer is a no-op at initialisation
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def sample_both(model, batch_size, t, class_labels=None, *, seed=0, per_sample_generators=False, **kwargs):
    def generator():
        if per_sample_generators:
            return [torch.Generator().manual_seed(seed + k) for k in range(batch_size)]
        return torch.Generator().manual_seed(seed)

    cached = model.sample(batch_size, t, class_labels, generator=generator(), use_cache=True, progress=False,
                          **kwargs)
    naive = model.sample(batch_size, t, class_labels, generator=generator(), use_cache=False, progress=False,
                         **kwargs)
    return cached, naive


def assert_same_samples(cached, naive, t):
    clean = t == 0
    assert torch.equal(cached[clean], naive[clean]), "t = 0 samples differ"  # identical grid values
    torch.testing.assert_close(cached[~clean], naive[~clean], rtol=0, atol=1e-5)


# ---- the incremental network equals the full one ------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    dict(sample_size=8, in_channels=1, nr_resnet=1, attention_heads=2),
    dict(sample_size=7, in_channels=3, nr_resnet=2, attention_heads=2, num_classes=3),  # 7 → 4 → 2: crops
    dict(sample_size=9, in_channels=1, nr_resnet=1, attention_heads=4, nr_filters=8),  # 9 → 5 → 3: odd at 2 levels
    dict(sample_size=5, in_channels=3, nr_resnet=2, attention_heads=0),
    dict(sample_size=1, in_channels=1, nr_resnet=1, attention_heads=2),
])
def test_params_at_every_position_match_the_full_network(overrides):
    """Teacher-forced: with the whole canvas given, the cache reproduces ``network`` at every pixel (float64).

    The returned parameters are kept until the end: each must be a tensor of its own, not a view of a buffer that
    later positions overwrite.
    """
    model = make_model(torch.float64, **overrides)
    c, s = model.config.in_channels, model.config.sample_size
    x = torch.randn(3, c, s, s, dtype=torch.float64)
    t = torch.tensor([0.0, 0.01, 0.07])
    labels = torch.tensor([0, 2, 1]) if model.config.num_classes else None
    with torch.no_grad():
        h = F.silu(model.embedding(t, labels)).to(x.dtype)
        full = model.network(x, h)  # (B, P, H, W)
        cache = NCPNCache(model, x, h)
        returned = []
        for i in range(s):
            cache.start_row(i)
            for j in range(s):
                returned.append(cache.params_at(i, j))
    cached = torch.stack(returned, dim=-1).unflatten(-1, (s, s))
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-10)


def test_cache_in_float32_and_batch_of_one():
    """float32 (the sampling dtype) and a batch of one: the strided per-position views keep their shapes."""
    model = make_model(sample_size=6, in_channels=3, nr_resnet=2, attention_heads=2)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        h = F.silu(model.embedding(torch.tensor([0.03]))).to(x.dtype)
        full = model.network(x, h)
        cache = NCPNCache(model, x, h)
        for i in range(6):
            cache.start_row(i)
            for j in range(6):
                torch.testing.assert_close(cache.params_at(i, j), full[:, :, i, j], rtol=1e-4, atol=1e-5)


def test_cache_reads_no_pixel_before_it_is_set():
    """The canvas may hold anything (here NaN) where pixels have not been set yet."""
    model = make_model(torch.float64, sample_size=5, in_channels=3, nr_resnet=2)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        h = F.silu(model.embedding(torch.tensor([0.0, 0.05]))).to(x.dtype)
        full = model.network(x, h)
        cache = NCPNCache(model, torch.full_like(x, float("nan")), h)
        for i in range(5):
            cache.start_row(i)
            for j in range(5):
                torch.testing.assert_close(cache.params_at(i, j), full[:, :, i, j], rtol=0, atol=1e-10)
                cache.set_pixel(i, j, x[:, :, i, j])


# ---- samples: cached == naive, same generator --------------------------------------------------------------
# every pair of (channels, attention, nr_resnet) values once: the full grid costs twice the naive passes
@pytest.mark.parametrize("in_channels, attention_heads, nr_resnet", [(1, 2, 1), (3, 2, 2), (1, 0, 2), (3, 0, 1)])
def test_cached_sampling_equals_naive(in_channels, attention_heads, nr_resnet):
    model = make_model(in_channels=in_channels, attention_heads=attention_heads, nr_resnet=nr_resnet)
    t = torch.tensor([0.0, 0.02, 0.0])
    cached, naive = sample_both(model, 3, t, seed=3)
    assert_same_samples(cached, naive, t)
    assert cached.dtype == torch.float32 and not cached.requires_grad


@pytest.mark.parametrize("in_channels", [1, 3])
def test_cached_sampling_equals_naive_with_labels_and_known_pixels(in_channels):
    """Inpainting (some pixels fully known, so skipped, others known in some channels or samples) + labels."""
    model = make_model(sample_size=5, in_channels=in_channels, nr_resnet=2, num_classes=3)
    b, shape = 4, model.image_shape
    t = torch.tensor([0.0, 0.03, 0.0, 0.01])
    g = torch.Generator().manual_seed(5)
    grid = torch.randint(0, 256, (b, *shape), generator=g) * model.bin_width - 1
    known = torch.where((t == 0)[:, None, None, None], grid, torch.randn(b, *shape, generator=g)).float()
    mask = (torch.rand(b, *shape, generator=g) < 0.3).float()
    mask[:, :, :2, :] = 1  # the top two rows are known everywhere: no draws there
    mask[:, :, 3, 1] = 1
    cached, naive = sample_both(model, b, t, [0, 2, 1, 2], seed=11, per_sample_generators=True, known=known,
                                known_mask=mask)
    assert_same_samples(cached, naive, t)
    assert torch.equal(cached[mask.bool()], known[mask.bool()])


def test_sampling_in_train_mode_has_no_dropout():
    """Both samplers switch dropout off (samples depend on the generator only), so they agree in ``train()`` too."""
    model = make_model(dropout=0.5, sample_size=4)
    t = torch.tensor([0.0, 0.05])
    reference, _ = sample_both(model, 2, t, seed=2)
    model.train()
    rng_state = torch.get_rng_state()
    cached, naive = sample_both(model, 2, t, seed=2)
    assert torch.equal(torch.get_rng_state(), rng_state) and model.training
    assert_same_samples(cached, naive, t)
    assert torch.equal(cached, reference)
