"""Out-of-distribution image sets that install with packages (no downloads), sized for a digit model.

Each set is real data shipped inside a PyPI wheel, returned as uint8 ``(N, size, size, channels)``:

- ``"fashion-mnist"``: the 20 Fashion-MNIST test images shipped with ``foolbox`` (28×28 grey).
- ``"cifar10"``: the 20 CIFAR-10 test images shipped with ``foolbox`` (32×32 RGB).
- ``"lfw-faces"``: scikit-image's 200 Labeled-Faces-in-the-Wild crops (25×25 grey, ``skimage.data.lfw_subset``).
- ``"photo-crops"``: seeded random 56×56 crops of scikit-image's bundled photographs (camera, coins, moon,
  text, page, clock, cell, and grey versions of astronaut, chelsea, coffee, rocket), 200 by default.

Images are resized to ``size`` with PIL's bilinear filter and converted to ``channels`` (ITU-R 601-2
luma for RGB → grey; grey repeated for → RGB). The foolbox images are read from its package folder
without importing foolbox (which would pull in its attack framework).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .images import check_uint8_images

__all__ = ["OOD_DATASETS", "load_ood_dataset", "resize_images"]

OOD_DATASETS = ("fashion-mnist", "cifar10", "lfw-faces", "photo-crops")
_PHOTOS_GREY = ("camera", "coins", "moon", "text", "page", "clock", "cell")
_PHOTOS_RGB = ("astronaut", "chelsea", "coffee", "rocket")
_CROP = 56


def resize_images(images: np.ndarray, size: int, *, channels: int | None = None) -> np.ndarray:
    """Resize uint8 ``(N, H, W, C)`` images to ``(N, size, size, channels)`` (PIL bilinear; grey ↔ RGB).

    ``channels=None`` keeps the images' channels. Images already of the requested shape are returned as is.
    """
    from PIL import Image

    images = check_uint8_images(images, "images").numpy()
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if images.shape[3] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[3]}")
    channels = images.shape[3] if channels is None else channels
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if images.shape[1:] == (size, size, channels):
        return images
    mode = "L" if channels == 1 else "RGB"
    out = []
    for im in images:
        pil = Image.fromarray(im[..., 0] if im.shape[2] == 1 else im)
        pil = pil.convert(mode) if pil.mode != mode else pil
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BILINEAR)
        out.append(np.asarray(pil, dtype=np.uint8))
    out = np.stack(out)
    return np.ascontiguousarray(out[..., None] if out.ndim == 3 else out)


def _package_dir(package: str, extra: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"this OOD dataset needs {package}: pip install 'ncml[{extra}]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _foolbox_images(prefix: str) -> np.ndarray:
    from PIL import Image

    files = sorted((_package_dir("foolbox", "ood") / "data").glob(f"{prefix}_*.png"))
    if not files:
        raise FileNotFoundError(f"foolbox's package data holds no {prefix}_*.png images; reinstall foolbox")
    arrays = []
    for f in files:
        with Image.open(f) as im:
            a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[..., None] if a.ndim == 2 else a)
    return np.stack(arrays)


def _skimage_data():
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError("this OOD dataset needs scikit-image: pip install 'ncml[ood]'") from e
    return skimage.data


def _photo_crops(num_images: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    data = _skimage_data()
    photos = [getattr(data, n)() for n in _PHOTOS_GREY]
    photos += [np.asarray(Image.fromarray(getattr(data, n)()).convert("L")) for n in _PHOTOS_RGB]
    crops = []
    for i in range(num_images):
        p = photos[i % len(photos)]  # every photo contributes about equally
        y = int(rng.integers(0, p.shape[0] - _CROP + 1))
        x = int(rng.integers(0, p.shape[1] - _CROP + 1))
        crops.append(p[y:y + _CROP, x:x + _CROP])
    return np.stack(crops).astype(np.uint8)[..., None]


def load_ood_dataset(name: str, *, size: int = 28, channels: int = 1, num_images: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """uint8 ``(N, size, size, channels)`` images of an out-of-distribution set (see the module docstring).

    Args:
        name: one of :data:`OOD_DATASETS`.
        size, channels: the shape to return (bilinear resize; grey ↔ RGB).
        num_images: for ``"photo-crops"`` the number of crops (default 200); for the fixed sets a seeded
            random subset (``None`` = all).
        seed: the crop positions / subset.
    """
    if name not in OOD_DATASETS:
        raise ValueError(f"name must be one of {OOD_DATASETS}, got {name!r}")
    if num_images is not None and (isinstance(num_images, bool) or not isinstance(num_images, int)
                                   or num_images < 1):
        raise ValueError(f"num_images must be None or an int >= 1, got {num_images!r}")
    rng = np.random.default_rng(seed)
    if name == "photo-crops":
        images = _photo_crops(200 if num_images is None else num_images, rng)
    else:
        if name == "fashion-mnist":
            images = _foolbox_images("fashionMNIST")
        elif name == "cifar10":
            images = _foolbox_images("cifar10")
        else:
            faces = _skimage_data().lfw_subset()  # (200, 25, 25) float in [0, 1]
            images = np.rint(faces * 255).astype(np.uint8)[..., None]
        if num_images is not None and num_images > len(images):
            raise ValueError(f"num_images={num_images}: {name!r} has only {len(images)} images")
        if num_images is not None and num_images < len(images):
            images = images[np.sort(rng.choice(len(images), size=num_images, replace=False))]
    return resize_images(images, size, channels=channels)
