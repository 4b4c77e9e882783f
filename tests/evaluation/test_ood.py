import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from evaluation.toy_backbones import TableARBackbone, ToyBackboneConfig
from ncml.evaluation import auroc, bits_per_dim, ood_auroc, plot_ood_histograms


def sklearn_auroc(s_in, s_out):
    return roc_auc_score(np.r_[np.zeros(len(s_in)), np.ones(len(s_out))], np.r_[s_in, s_out])


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_random(seed):
    g = np.random.default_rng(seed)
    s_in, s_out = g.normal(size=g.integers(1, 60)), g.normal(0.5, size=g.integers(1, 60))
    assert auroc(s_in, s_out) == pytest.approx(sklearn_auroc(s_in, s_out), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed):
    g = np.random.default_rng(seed)
    s_in, s_out = g.integers(0, 3, size=40), g.integers(1, 4, size=25)
    assert auroc(s_in, s_out) == pytest.approx(sklearn_auroc(s_in, s_out), abs=1e-12)
    s_in, s_out = np.round(g.normal(size=50), 1), np.round(g.normal(size=30), 1)
    assert auroc(s_in, s_out) == pytest.approx(sklearn_auroc(s_in, s_out), abs=1e-12)


def test_auroc_edge_values():
    assert auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
    assert auroc([0, 1, 2], [3, 4]) == 1.0
    assert auroc([3, 4], [0, 1, 2]) == 0.0


def test_auroc_bad_input():
    with pytest.raises(ValueError, match="scores_in is empty"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="scores_out is empty"):
        auroc([1.0], [])
    with pytest.raises(ValueError, match="NaN"):
        auroc([np.nan], [1.0])
    with pytest.raises(ValueError, match="1-D"):
        auroc(np.zeros((2, 2)), [1.0])
    with pytest.raises(TypeError):
        auroc(["a"], [1.0])


def test_ood_auroc_on_a_toy_model(tmp_path):
    cfg = ToyBackboneConfig(sample_size=2, num_bits=2)
    model = TableARBackbone(cfg)
    g = np.random.default_rng(0)
    in_images = g.integers(0, 4, size=(30, 2, 2, 1), dtype=np.uint8)
    out_images = g.integers(0, 2, size=(20, 2, 2, 1), dtype=np.uint8) * 3  # only extreme levels
    ts = (0.0, 0.02, 0.08)
    res = ood_auroc(model, in_images, out_images, ts=ts, progress=False)
    assert res.statistic == "nll_mean" and res.ts == ts
    assert res.nll_in.shape == (30, 3) and res.nll_out.shape == (20, 3)
    np.testing.assert_allclose(res.nll_in[:, 1], bits_per_dim(model, in_images, 0.02, progress=False).per_image)
    np.testing.assert_allclose(res.scores_in, res.nll_in.mean(1))
    assert res.auroc == pytest.approx(sklearn_auroc(res.scores_in, res.scores_out), abs=1e-12)
    for i in range(3):
        assert res.auroc_per_t[i] == pytest.approx(sklearn_auroc(res.nll_in[:, i], res.nll_out[:, i]), abs=1e-12)
    single = ood_auroc(model, in_images, out_images, "nll", ts=(0.0,), progress=False)
    mean_single = ood_auroc(model, in_images, out_images, "nll_mean", ts=(0.0,), progress=False)
    assert single.auroc == mean_single.auroc == res.auroc_per_t[0]
    custom = ood_auroc(model, in_images, out_images, lambda nll: nll.max(1), ts=ts, progress=False)
    np.testing.assert_allclose(custom.scores_out, res.nll_out.max(1))
    assert "AUROC" in res.table()
    assert plot_ood_histograms(res, tmp_path / "ood.png").stat().st_size > 0


def test_ood_auroc_bad_input():
    model = TableARBackbone(ToyBackboneConfig())
    x = np.zeros((3, 2, 2, 1), np.uint8)
    with pytest.raises(ValueError, match="out_images must have shape"):
        ood_auroc(model, x, np.zeros((3, 3, 3, 1), np.uint8), progress=False)
    with pytest.raises(ValueError, match="in_images is empty"):
        ood_auroc(model, x[:0], x, progress=False)
    with pytest.raises(TypeError, match="uint8"):
        ood_auroc(model, x, x.astype(float), progress=False)
    with pytest.raises(ValueError, match="statistic"):
        ood_auroc(model, x, x, "likelihood", progress=False)
    with pytest.raises(ValueError, match="statistic must map"):
        ood_auroc(model, x, x, lambda nll: nll, ts=(0.0, 0.1), progress=False)
