"""ncml.data.hf_datasets: 🤗 datasets built here and saved with save_to_disk (offline)."""

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from ncml.data import hf_images, hf_labels, load_hf_splits, train_and_eval_splits  # noqa: E402


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    modes = ("RGBA", "L", "RGB", "P")
    out = []
    for i in range(n):
        a = rng.integers(0, 256, (int(rng.integers(6, 12)), int(rng.integers(6, 12)), 3), dtype=np.uint8)
        image = Image.fromarray(a)
        mode = modes[i % len(modes)]
        out.append(image.convert(mode))
    return out


@pytest.fixture
def saved(tmp_path):
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                                  "name": datasets.Value("string")})
    train = datasets.Dataset.from_dict({"img": images(6), "label": [0, 1, 2, 0, 1, 2],
                                        "name": list("uvwxyz")}, features=features)
    test = datasets.Dataset.from_dict({"img": images(2, 1), "label": [2, 1], "name": ["u", "z"]}, features=features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "dict")
    train.save_to_disk(tmp_path / "single")
    return tmp_path


def test_a_saved_dataset_dict_and_a_saved_dataset(saved):
    splits = load_hf_splits(saved / "dict")
    assert sorted(splits) == ["test", "train"] and train_and_eval_splits(splits) == ("train", "test")
    single = load_hf_splits(saved / "single")
    assert list(single) == ["train"] and train_and_eval_splits(single) == ("train", None)
    x = hf_images(splits["train"], "img", channels=3, resolution=8, center_crop=True)
    assert x.shape == (6, 8, 8, 3) and x.dtype == np.uint8
    ragged = hf_images(splits["train"], "img", channels=1, resolution=6, center_crop=False)
    assert len(ragged) == 6 and all(min(a.shape[:2]) == 6 and a.shape[2] == 1 for a in ragged)
    labels, names = hf_labels(splits["train"], "label")
    assert labels.tolist() == [0, 1, 2, 0, 1, 2] and labels.dtype == np.int64 and names == ["a", "b", "c"]
    # string classes: numbered in sorted order, and a held-out split numbered like the training split
    labels, names = hf_labels(splits["train"], "name")
    assert labels.tolist() == [0, 1, 2, 3, 4, 5] and names == list("uvwxyz")
    assert hf_labels(splits["test"], "name", list("uvwxyz"))[0].tolist() == [0, 5]


def test_arrays_and_undecoded_images(tmp_path):
    rng = np.random.default_rng(0)
    arrays = datasets.Dataset.from_dict({"pixels": [rng.integers(0, 256, (8, 8)).tolist() for _ in range(3)]})
    assert hf_images(arrays, "pixels", channels=1).shape == (3, 8, 8, 1)
    raw = datasets.Dataset.from_dict({"image": images(2)}).cast_column("image", datasets.Image(decode=False))
    assert hf_images(raw, channels=3, resolution=4).shape == (2, 4, 4, 3)


def test_errors_name_the_column_and_row(saved, tmp_path):
    train = load_hf_splits(saved / "dict")["train"]
    with pytest.raises(ValueError, match=r"no image column 'image'; the columns are \['img', 'label', 'name'\]"):
        hf_images(train, "image", channels=3)
    with pytest.raises(ValueError, match="no class column 'class'"):
        hf_labels(train, "class")
    with pytest.raises(ValueError, match=r"images of mixed sizes: \d+×\d+ \(column 'img', row 0\)"):
        hf_images(train, "img", channels=3)  # no resolution: sizes must agree
    bad = datasets.Dataset.from_dict({"image": [np.zeros((4, 4)).tolist(), [[0.5, 0.5], [0.5, 0.5]]],
                                      "label": [1, -1]})
    with pytest.raises(ValueError, match="column 'image', row 0: an array of float64"):
        hf_images(bad, channels=1)
    with pytest.raises(ValueError, match=r"column 'label', row 1: class -1"):
        hf_labels(bad, "label")
    with pytest.raises(ValueError, match="row 1: class 'q' is not among"):
        hf_labels(datasets.Dataset.from_dict({"c": ["u", "q"]}), "c", ["u", "v"])
    with pytest.raises(ValueError, match="cannot load the dataset"):
        load_hf_splits(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="save_to_disk"):
        load_hf_splits(saved / "single", "some-config")
    with pytest.raises(ValueError, match="no 'train' split"):
        train_and_eval_splits({"a": None, "b": None})
