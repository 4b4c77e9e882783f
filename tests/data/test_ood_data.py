"""The offline out-of-distribution image sets: real package data, fixed sizes, seeded, resized correctly."""

import numpy as np
import pytest

from ncml.data import OOD_DATASETS, load_dataset, load_ood_dataset, resize_images

EXPECTED = {"fashion-mnist": 20, "cifar10": 20, "lfw-faces": 200, "photo-crops": 200}


@pytest.mark.parametrize("name", OOD_DATASETS)
def test_ood_sets_are_real_uint8_images_of_the_requested_shape(name):
    x = load_ood_dataset(name)
    assert x.dtype == np.uint8 and x.shape == (EXPECTED[name], 28, 28, 1)
    assert x.std() > 20  # real content, not a constant or an empty image
    assert len({im.tobytes() for im in x}) == len(x)  # no duplicates
    rgb = load_ood_dataset(name, size=32, channels=3, num_images=5)
    assert rgb.shape == (5, 32, 32, 3)
    if name == "cifar10":  # CIFAR-10 is RGB: asked for 3 channels it keeps its colours
        assert not np.array_equal(rgb[..., 0], rgb[..., 2])
    else:  # grey repeated to RGB
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_ood_sets_are_seeded_and_differ_from_mnist():
    a = load_ood_dataset("photo-crops", num_images=30, seed=1)
    np.testing.assert_array_equal(a, load_ood_dataset("photo-crops", num_images=30, seed=1))
    assert not np.array_equal(a, load_ood_dataset("photo-crops", num_images=30, seed=2))
    mnist, _ = load_dataset("mnist5k", "test")
    fashion = load_ood_dataset("fashion-mnist")
    # Fashion-MNIST items cover far more of the frame than digits do
    assert (fashion > 0).mean() > (mnist > 0).mean() + 0.1


def test_resize_images_matches_pil_and_keeps_exact_shapes():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
    assert resize_images(x, 8) is not None and np.array_equal(resize_images(x, 8), x)
    y = resize_images(x, 16)
    assert y.shape == (3, 16, 16, 1) and y.dtype == np.uint8
    # a constant image stays constant under bilinear resizing
    np.testing.assert_array_equal(resize_images(np.full((1, 5, 5, 1), 77, np.uint8), 9), 77)
    rgb = rng.integers(0, 256, size=(2, 4, 4, 3), dtype=np.uint8)
    grey = resize_images(rgb, 4, channels=1)
    c = rgb.astype(np.int64)
    luma = np.rint((c[..., 0] * 299 + c[..., 1] * 587 + c[..., 2] * 114) / 1000)
    assert np.abs(grey[..., 0].astype(int) - luma).max() <= 1  # ITU-R 601-2 luma


def test_ood_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        load_ood_dataset("svhn")
    with pytest.raises(ValueError, match="num_images"):
        load_ood_dataset("fashion-mnist", num_images=0)
    with pytest.raises(ValueError, match="has only 20 images"):
        load_ood_dataset("cifar10", num_images=21)
    with pytest.raises(ValueError, match="channels"):
        load_ood_dataset("cifar10", channels=2)
    with pytest.raises(ValueError, match="size"):
        resize_images(np.zeros((1, 4, 4, 1), np.uint8), 0)
    with pytest.raises(TypeError, match="uint8"):
        resize_images(np.zeros((1, 4, 4, 1), np.float32), 4)
