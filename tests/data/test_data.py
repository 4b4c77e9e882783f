"""ncml.data: bundled datasets with fixed splits, ImageFolder, and the one uint8 <-> [-1, 1] conversion."""

import numpy as np
import pytest
import torch
from PIL import Image

from ncml.data import DATASETS, ImageFolder, load_dataset, to_model_space, to_uint8


@pytest.mark.parametrize("name, shape, n_train, n_test", [("digits", (8, 8, 1), 1497, 300),
                                                         ("mnist5k", (28, 28, 1), 4500, 500)])
def test_bundled_datasets_have_fixed_disjoint_stratified_splits(name, shape, n_train, n_test):
    tr_x, tr_y = load_dataset(name, "train")
    te_x, te_y = load_dataset(name, split="test")
    assert tr_x.dtype == np.uint8 and tr_y.dtype == np.int64 and tr_x.shape == (n_train, *shape)
    assert te_x.shape == (n_test, *shape) and len(te_y) == n_test
    assert np.bincount(te_y).tolist() == [n_test // 10] * 10
    assert tr_x.max() == 255 and tr_x.min() == 0  # full 8-bit range
    # disjoint: no test image is a training image (as raw bytes), and the split is the same on every call
    train_rows = {r.tobytes() for r in tr_x}
    assert sum(r.tobytes() in train_rows for r in te_x) <= n_test // 50  # only true duplicates in the source
    again, _ = load_dataset(name, "test")
    assert np.array_equal(again, te_x)


def test_digits_keep_their_17_levels():
    x, _ = load_dataset("digits")
    assert len(np.unique(x)) == 17 and set(np.unique(x)) <= {round(v * 255 / 16) for v in range(17)}


@pytest.mark.parametrize("num_bits", [8, 5, 1])
def test_to_model_space_and_to_uint8_round_trip(num_bits):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 2**num_bits, size=(3, 5, 4, 3), dtype=np.uint8)
    x = to_model_space(images, num_bits=num_bits)
    assert x.dtype == torch.float32 and x.shape == (3, 3, 5, 4)
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x, num_bits=num_bits), images)
    assert torch.equal(to_model_space(torch.from_numpy(images), num_bits=num_bits), x)
    # grid: x = 2k/(2^bits − 1) − 1
    k = torch.from_numpy(images).permute(0, 3, 1, 2).double()
    torch.testing.assert_close(x.double(), 2 * k / (2**num_bits - 1) - 1, rtol=0, atol=1e-6)


def test_to_uint8_quantises_and_clips_continuous_samples():
    x = torch.tensor([-1.7, -1.0, -0.999, 0.0, 0.004, 1.0, 3.0]).reshape(1, 1, 1, 7)
    assert to_uint8(x).ravel().tolist() == [0, 0, 0, 128, 128, 255, 255]


def test_conversion_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        to_model_space(np.zeros((1, 2, 2, 1), dtype=np.float32))
    with pytest.raises(TypeError, match="images"):
        to_model_space([[1, 2]])
    with pytest.raises(ValueError, match="shape"):
        to_model_space(np.zeros((2, 2, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="num_bits"):
        to_model_space(np.full((1, 1, 1, 1), 200, dtype=np.uint8), num_bits=5)
    with pytest.raises(TypeError):
        to_uint8(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        to_uint8(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="name"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="split"):
        load_dataset(DATASETS[0], "val")
    with pytest.raises(ValueError, match="exclude_validation"):
        load_dataset(DATASETS[0], "test", exclude_validation=True)


@pytest.mark.parametrize("name,per_class", [("mnist5k", 50), ("digits", 15)])
def test_validation_split_is_carved_from_train(name, per_class):
    train, _ = load_dataset(name, "train")
    val, val_labels = load_dataset(name, "validation")
    rest, _ = load_dataset(name, "train", exclude_validation=True)
    test, _ = load_dataset(name, "test")
    assert np.bincount(val_labels).tolist() == [per_class] * 10  # stratified
    assert len(val) + len(rest) == len(train)
    as_set = lambda a: {im.tobytes() for im in a}  # noqa: E731
    assert as_set(val) | as_set(rest) == as_set(train) and not as_set(val) & as_set(rest)
    assert not as_set(val) & as_set(test)


def write_images(folder, arrays, mode):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a, mode=mode).save(folder / f"{i:02d}.png")


def test_image_folder_round_trip_and_labels(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8)
    write_images(tmp_path / "cat", a[:2], "RGB")
    write_images(tmp_path / "dog", a[2:], "RGB")
    folder = ImageFolder(tmp_path, labels="folders", channels=3)
    assert len(folder) == 4 and folder.classes == ["cat", "dog"]
    assert np.array_equal(folder.images, a) and folder.labels.tolist() == [0, 0, 1, 1]
    image, label = folder[3]
    assert np.array_equal(image, a[3]) and label == 1
    grey = rng.integers(0, 256, size=(2, 6, 6), dtype=np.uint8)
    write_images(tmp_path / "grey", grey, "L")
    g = ImageFolder(tmp_path / "grey")
    assert g.images.shape == (2, 6, 6, 1) and np.array_equal(g.images[..., 0], grey)
    assert g.labels.tolist() == [0, 0]


def test_image_folder_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no"):
        ImageFolder(tmp_path / "empty")
    write_images(tmp_path / "mixed", [np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)], "L")
    with pytest.raises(ValueError, match="mixed sizes"):
        ImageFolder(tmp_path / "mixed")
    write_images(tmp_path / "rgb", [np.zeros((4, 4, 3), np.uint8)], "RGB")
    with pytest.raises(ValueError, match="channels=1"):
        ImageFolder(tmp_path / "rgb", channels=1)
    with pytest.raises(ValueError, match="labels"):
        ImageFolder(tmp_path / "rgb", labels="filenames")
    with pytest.raises(ValueError, match="class subfolder"):
        ImageFolder(tmp_path / "rgb", labels="folders")
    write_images(tmp_path / "rgba", [np.zeros((4, 4, 4), np.uint8)], "RGBA")
    with pytest.raises(ValueError, match="mode"):
        ImageFolder(tmp_path / "rgba")
