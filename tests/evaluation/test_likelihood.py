import math

import numpy as np
import pytest
import torch

from evaluation.toy_backbones import TableARBackbone, ToyBackboneConfig, UniformBackbone, all_images
from ncml.data import to_model_space
from ncml.evaluation import bits_per_dim
from ncml.models.autoregressive import bits_per_dim_from_log_prob
from ncml.schedulers import VPSDEScheduler


def random_images(n, cfg, seed=0):
    g = np.random.default_rng(seed)
    return g.integers(0, 2**cfg.num_bits, size=(n, cfg.sample_size, cfg.sample_size, cfg.in_channels), dtype=np.uint8)


@pytest.mark.parametrize("num_bits", [8, 5, 2])
@pytest.mark.parametrize("t", [0.0, 0.03])
def test_uniform_model_gives_num_bits(num_bits, t):
    cfg = ToyBackboneConfig(sample_size=3, in_channels=3, num_bits=num_bits)
    res = bits_per_dim(UniformBackbone(cfg), random_images(7, cfg), t, batch_size=3, progress=False)
    assert res.per_image.shape == (7,)
    np.testing.assert_allclose(res.per_image, num_bits, rtol=0, atol=1e-6)
    assert res.mean == pytest.approx(num_bits, abs=1e-6)


def test_matches_backbone_log_prob_and_is_batch_invariant():
    cfg = ToyBackboneConfig()
    model = TableARBackbone(cfg)
    images = random_images(11, cfg)
    expected = bits_per_dim_from_log_prob(model.log_prob(to_model_space(images, num_bits=2), 0.0)).detach()
    direct = -model.log_prob(to_model_space(images, num_bits=2), 0.0).detach().mean() / math.log(2)
    for bs in (1, 4, 64):
        res = bits_per_dim(model, images, batch_size=bs, progress=False)
        np.testing.assert_allclose(res.per_image, expected.double().numpy(), rtol=1e-6)
        assert res.mean == pytest.approx(direct.item(), rel=1e-6)
    assert not res.noised and res.t == 0.0


def test_exact_mass_over_all_images():
    cfg = ToyBackboneConfig()
    res = bits_per_dim(TableARBackbone(cfg), all_images(cfg), progress=False)
    d = cfg.in_channels * cfg.sample_size**2
    assert np.exp2(-res.per_image * d).sum() == pytest.approx(1.0, abs=1e-5)


def test_noised_uses_the_marginal_and_the_generator():
    cfg = ToyBackboneConfig(sample_size=3)
    model, sched, t = TableARBackbone(cfg), VPSDEScheduler(), 0.05
    images = random_images(6, cfg)
    res = bits_per_dim(model, images, t, noised=True, scheduler=sched, batch_size=4,
                       generator=torch.Generator().manual_seed(3), progress=False)
    x0 = to_model_space(images, num_bits=2)
    gen = torch.Generator().manual_seed(3)
    noise = torch.cat([torch.randn((4, 1, 3, 3), generator=gen), torch.randn((2, 1, 3, 3), generator=gen)])
    expected = bits_per_dim_from_log_prob(model.log_prob(sched.add_noise(x0, noise, t), t)).detach().double()
    np.testing.assert_allclose(res.per_image, expected.numpy(), rtol=1e-5)
    clean = bits_per_dim(model, images, t, progress=False)
    assert not np.allclose(clean.per_image, res.per_image)
    # per-image generators: values do not depend on the batch size
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(6)]  # noqa: E731
    a = bits_per_dim(model, images, t, noised=True, scheduler=sched, batch_size=2, generator=gens(), progress=False)
    b = bits_per_dim(model, images, t, noised=True, scheduler=sched, batch_size=5, generator=gens(), progress=False)
    np.testing.assert_allclose(a.per_image, b.per_image, rtol=1e-6)


def test_restores_training_mode():
    model = TableARBackbone(ToyBackboneConfig()).train()
    bits_per_dim(model, random_images(2, model.config), progress=False)
    assert model.training


def test_bad_input():
    cfg = ToyBackboneConfig()
    model = UniformBackbone(cfg)
    good = random_images(3, cfg)
    with pytest.raises(TypeError, match="uint8"):
        bits_per_dim(model, good.astype(np.float32), progress=False)
    with pytest.raises(ValueError, match="shape"):
        bits_per_dim(model, random_images(3, ToyBackboneConfig(sample_size=3)), progress=False)
    with pytest.raises(ValueError, match="empty"):
        bits_per_dim(model, good[:0], progress=False)
    with pytest.raises(ValueError, match="num_bits"):
        bits_per_dim(model, good + 4, progress=False)
    with pytest.raises(ValueError, match="t must"):
        bits_per_dim(model, good, -0.1, progress=False)
    with pytest.raises(ValueError, match="scheduler"):
        bits_per_dim(model, good, 0.01, noised=True, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        bits_per_dim(model, good, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="class_labels"):
        bits_per_dim(model, good, class_labels=[0, 1], progress=False)


@pytest.mark.parametrize("t", [0.0, 0.02])
def test_matches_ncpn_log_prob(t):
    ncpn = pytest.importorskip("ncml.models.ncpn")
    model = ncpn.NCPNModel(ncpn.NCPNConfig(sample_size=4, in_channels=3, nr_resnet=1, nr_filters=8,
                                           nr_logistic_mix=2, attention_heads=0, dropout=0.0, embedding_dim=16))
    images = np.random.default_rng(0).integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8)
    with torch.no_grad():
        lp = model.log_prob(to_model_space(images), t)
    res = bits_per_dim(model, images, t, batch_size=2, progress=False)
    assert res.mean == pytest.approx((-lp.double().mean() / math.log(2)).item(), rel=1e-5)
