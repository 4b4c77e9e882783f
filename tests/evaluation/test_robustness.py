import sys

import numpy as np
import pytest
import torch

from evaluation.toy_backbones import TableARBackbone, ToyBackboneConfig, UniformBackbone, all_images
from ncml.evaluation import bits_per_dim, default_times, lsb_flip, noise_robustness, plot_robustness


def images_8bit(n=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 5, 5, 3), dtype=np.uint8)


def test_pi_zero_is_identity_and_pi_one_flips_every_lsb():
    x = images_8bit()
    np.testing.assert_array_equal(lsb_flip(x, 0.0), x)
    y = lsb_flip(x, 1.0)
    assert y.dtype == np.uint8 and y.shape == x.shape
    np.testing.assert_array_equal(y ^ x, np.ones_like(x))
    np.testing.assert_array_equal(y >> 1, x >> 1)
    # torch in, torch out
    xt = torch.from_numpy(x)
    assert torch.equal(lsb_flip(xt, 1.0), xt ^ 1)


def test_pi_half_flips_a_binomial_fraction_and_never_higher_bits():
    x = images_8bit(200)
    y = lsb_flip(x, 0.5, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(y >> 1, x >> 1)  # higher bits untouched
    assert set(np.unique(x ^ y)) <= {0, 1}
    n, k = x.size, int((x ^ y).sum())
    assert abs(k - 0.5 * n) < 4 * np.sqrt(n * 0.25)  # within 4 sd of Binomial(n, 1/2)
    y3 = lsb_flip(x, 0.1, generator=torch.Generator().manual_seed(1))
    assert abs(int((x ^ y3).sum()) - 0.1 * n) < 4 * np.sqrt(n * 0.09)
    # reproducible with a generator
    np.testing.assert_array_equal(y, lsb_flip(x, 0.5, generator=torch.Generator().manual_seed(0)))


def test_lsb_flip_stays_in_k_bits():
    x = np.random.default_rng(0).integers(0, 4, size=(10, 2, 2, 1), dtype=np.uint8)
    assert lsb_flip(x, 1.0, bits=2).max() <= 3


def test_lemma_3_2_on_an_enumerable_model():
    """E_{x~p_1/2}[q(x)] = 2^-D · E_{x~p_data}[q(top k−1 bits of x)] (section 3.1, Lemma 3.2), to 1e-6.

    Left: the exact p_1/2 over the whole image space (the product of the per-value flip kernels).
    Right: the marginal of the top k−1 bits, summed from the whole space grouped by ``x >> 1``.
    """
    cfg = ToyBackboneConfig(sample_size=2, num_bits=2)
    model = TableARBackbone(cfg)
    space = all_images(cfg).numpy()  # (L^D, 2, 2, 1)
    d = space[0].size
    q = np.exp2(-bits_per_dim(model, space, progress=False).per_image * d)  # q(x) for every x
    assert q.sum() == pytest.approx(1.0, abs=1e-6)
    data = space[np.random.default_rng(1).choice(len(space), size=5, replace=False)]  # p_data: 5 images, uniform
    flat, data_flat = space.reshape(len(space), d), data.reshape(len(data), d)

    same_top = (flat[None] >> 1) == (data_flat[:, None] >> 1)  # (5, L^D, D)
    p_half = (same_top.all(-1) * 0.5**d).mean(0)  # p_1/2(x) = E_x0 Π_i ½·[x_i ∈ {x0_i, x0_i ⊕ 1}]
    assert p_half.sum() == pytest.approx(1.0, abs=1e-12)
    lhs = (p_half * q).sum()

    top_keys = [tuple(r) for r in (flat >> 1)]
    marginal = {}
    for key, qx in zip(top_keys, q):
        marginal[key] = marginal.get(key, 0.0) + qx
    rhs = 2.0**-d * np.mean([marginal[tuple(r)] for r in (data_flat >> 1)])
    assert abs(lhs - rhs) < 1e-6 * max(1.0, abs(rhs)) and abs(lhs - rhs) / rhs < 1e-6

    # and lsb_flip draws from that p_1/2: a Monte Carlo average of q approaches the left side
    gen = torch.Generator().manual_seed(0)
    draws = np.concatenate([lsb_flip(data, 0.5, bits=2, generator=gen) for _ in range(400)])
    index = {tuple(r): i for i, r in enumerate(flat)}
    mc = np.mean([q[index[tuple(r)]] for r in draws.reshape(len(draws), d)])
    assert mc == pytest.approx(lhs, rel=0.05)


def test_noise_robustness_table():
    cfg = ToyBackboneConfig(sample_size=3, num_bits=2)
    model = TableARBackbone(cfg)
    images = np.random.default_rng(0).integers(0, 4, size=(9, 3, 3, 1), dtype=np.uint8)
    ts = (0.0, 0.01, 0.1)
    res = noise_robustness(model, images, pis=(0.5, 1.0), ts=ts, batch_size=4,
                           generator=torch.Generator().manual_seed(0), progress=False)
    assert res.pis == (0.0, 0.5, 1.0) and res.ts == ts
    assert res.nll.shape == (3, 3) and res.delta.shape == (3, 3) and res.per_image.shape == (3, 3, 9)
    np.testing.assert_array_equal(res.delta[:, 0], 0.0)
    np.testing.assert_allclose(res.delta, np.abs(res.nll - res.nll[:, :1]))
    for i, t in enumerate(ts):
        clean = bits_per_dim(model, images, t, batch_size=4, progress=False).mean
        assert res.nll[i, 0] == pytest.approx(clean, rel=1e-9)
        flipped = bits_per_dim(model, lsb_flip(images, 1.0, bits=2), t, batch_size=4, progress=False).mean
        assert res.nll[i, 2] == pytest.approx(flipped, rel=1e-9)
    assert res.delta[0, 2] > 0
    assert "Δlog p" in res.table() and len(res.table().splitlines()) == 2 + len(ts)


def test_uniform_model_is_perfectly_robust(tmp_path):
    cfg = ToyBackboneConfig(sample_size=4, in_channels=3, num_bits=8)
    res = noise_robustness(UniformBackbone(cfg), images_8bit(5)[:, :4, :4], ts=default_times(0.1, 4), progress=False)
    np.testing.assert_allclose(res.delta, 0.0, atol=1e-9)
    path = plot_robustness(res, tmp_path / "fig" / "robustness.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    baseline = noise_robustness(UniformBackbone(cfg), images_8bit(5)[:, :4, :4], progress=False)  # t = 0 only
    path = plot_robustness(res, tmp_path / "with_baseline.png", baselines={"MLE": baseline})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    without_t0 = noise_robustness(UniformBackbone(cfg), images_8bit(5)[:, :4, :4], ts=(0.05,), progress=False)
    with pytest.raises(ValueError, match="baselines\\['MLE'\\] must hold t = 0"):
        plot_robustness(res, tmp_path / "x.png", baselines={"MLE": without_t0})


def test_default_times():
    ts = default_times(0.1, 5)
    assert ts[0] == 0.0 and len(ts) == 5 and ts[-1] == pytest.approx(0.1) and ts[1] == pytest.approx(1e-4)
    assert all(a < b for a, b in zip(ts, ts[1:]))


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    cfg = ToyBackboneConfig()
    res = noise_robustness(UniformBackbone(cfg), np.zeros((2, 2, 2, 1), np.uint8), progress=False)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="ncml\\[plots\\]"):
        plot_robustness(res, tmp_path / "x.png")


@pytest.mark.parametrize("pi", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_pi(pi):
    with pytest.raises(ValueError, match="pi"):
        lsb_flip(images_8bit(2), pi)


def test_bad_images():
    with pytest.raises(TypeError, match="uint8"):
        lsb_flip(images_8bit(2).astype(np.int64), 0.5)
    with pytest.raises(ValueError, match="empty"):
        lsb_flip(images_8bit(2)[:0], 0.5)
    with pytest.raises(ValueError, match="shape"):
        lsb_flip(images_8bit(2)[0], 0.5)
    with pytest.raises(ValueError, match="num_bits"):
        lsb_flip(images_8bit(2), 0.5, bits=5)
    with pytest.raises(ValueError, match="pi"):
        noise_robustness(UniformBackbone(ToyBackboneConfig()), np.zeros((2, 2, 2, 1), np.uint8), pis=(2.0,))
