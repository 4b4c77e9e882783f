"""From images as they come to a model's uint8 grid: mode conversion, resizing and cropping, and the per-example
random crop and horizontal flip of training.

Arrays here are uint8 ``(H, W, C)`` (one image) or ``(N, H, W, C)`` (a stack), with ``C`` 1 (grey) or 3 (RGB).

Mode conversion (:func:`convert_image`, PIL images of any mode, or arrays):

- **transparency is composited on white**: RGBA, LA, PA, premultiplied RGBa / La, and palette, grey or RGB
  images with a transparent colour. A transparent pixel becomes white, a half-transparent one half its colour
  and half white. Alpha is never simply dropped, which would show whatever colour the transparent pixels happen
  to store (often black).
- palette (P) → its RGB colours; bilevel (1) → 0 / 255; 16-bit grey (I;16, I;16B, I) → the top 8 bits of the
  16-bit value; CMYK, YCbCr, LAB and HSV → RGB by PIL's conversions. Floating-point images (F) are refused.
- then to the wanted channels: RGB → grey by ITU-R 601-2 luma (``L = 299/1000·R + 587/1000·G + 114/1000·B``,
  PIL's ``convert("L")``), grey → RGB by repeating it.
- a photo's EXIF orientation is applied first (as 🤗 datasets does when it decodes an image).

Resizing and cropping follow 🤗 diffusers' training scripts (``transforms.Resize(resolution)`` then
``CenterCrop`` or ``RandomCrop``): :func:`resize_shorter_side` scales an image (bilinear, antialiased when
shrinking) so that its shorter side is ``resolution``, the longer ``int(resolution · long / short)``;
:func:`center_crop` takes the central ``resolution × resolution`` square (offsets rounded like torchvision's).

:func:`augment_batch` draws a training batch's random crops and flips from ``(seed, global example number)``
only, so a run is reproducible from its seed and resumes exactly from any step, whatever the number of
processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["convert_image", "resize_shorter_side", "center_crop", "prepare_images", "augment_batch",
           "stack_images"]

_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_AUGMENT_STREAM = 1  # draws of crops and flips: SeedSequence([seed, example number, 1]); the loss uses [seed, n]


def convert_image(image, channels: int, *, name: str = "image") -> np.ndarray:
    """One image (a PIL image of any mode, or a uint8 array ``(H, W)`` / ``(H, W, 1|3|4)``) as uint8
    ``(H, W, channels)``, by the rules in the module docstring. Raises ``ValueError`` starting with ``name``."""
    from PIL import Image, ImageOps

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(_as_uint8_array(image, name))
    elif not isinstance(image, Image.Image):
        raise ValueError(f"{name}: expected an image (PIL image or uint8 array), got {type(image).__name__}")
    try:
        image = ImageOps.exif_transpose(image)
        mode = image.mode
        if mode == "F":
            raise ValueError("floating-point image (mode 'F'); save it as 8-bit (L or RGB)")
        if mode in _SIXTEEN_BIT_MODES:  # 16-bit grey: the top 8 bits
            image = Image.fromarray((np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8))
        elif mode in ("RGBa", "La"):  # premultiplied alpha: undo it, then composite like the others
            image = image.convert("RGBA")
        elif mode in ("P", "PA", "L", "RGB", "1") and "transparency" in image.info:
            image = image.convert("RGBA")  # a transparent colour or palette entry
        if image.mode in _TRANSPARENT_MODES:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        target = "L" if channels == 1 else "RGB"
        if image.mode != target:
            # grey → RGB repeats; RGB → grey is ITU-R 601-2 luma; P, 1, CMYK, YCbCr, LAB, HSV through RGB
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            image = image.convert(target)
        array = np.asarray(image, dtype=np.uint8)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e
    except (OSError, SyntaxError) as e:  # PIL: unreadable, truncated or corrupt image data
        raise ValueError(f"{name}: cannot read the image ({type(e).__name__}: {e})") from e
    return np.ascontiguousarray(array[..., None] if array.ndim == 2 else array)


def _as_uint8_array(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: an array of {array.dtype}; give uint8 (integer levels 0 … 255)")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{name}: values from {array.min()} to {array.max()}; expected 0 … 255")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"{name}: an array of shape {array.shape}; expected (H, W) or (H, W, 1|3|4)")
    return np.ascontiguousarray(array.astype(np.uint8))


def resize_shorter_side(image: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 ``(H, W, C)`` scaled (PIL bilinear) so that its shorter side is ``resolution``; the longer becomes
    ``int(resolution · long / short)``, as torchvision's ``Resize(resolution)``. Returned as is when it already
    fits."""
    from PIL import Image

    h, w = image.shape[:2]
    short, long = min(h, w), max(h, w)
    if short == resolution:
        return image
    other = int(resolution * long / short)
    size = (resolution, other) if h <= w else (other, resolution)  # (H, W)
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    out = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)
    return np.ascontiguousarray(out[..., None] if out.ndim == 2 else out)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size × size`` square of uint8 ``(H, W, C)`` (``H, W >= size``; offsets
    ``round((H − size) / 2)``, as torchvision's ``CenterCrop``)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}×{size} from an image of {h}×{w}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[top:top + size, left:left + size]


_center_crop = center_crop  # prepare_images has a flag of that name


def prepare_images(images: Iterable, *, channels: int, resolution: int | None = None, center_crop: bool = True,
                   names: Iterable[str] | None = None) -> np.ndarray | list[np.ndarray]:
    """Images of any size and mode (PIL images or arrays) → the model's channels and size.

    - ``resolution=None``: converted only; all must then have one size, returned as uint8 ``(N, H, W, C)``.
    - ``resolution`` given: each is resized so that its shorter side is ``resolution``; with ``center_crop`` the
      central square is kept and the result is uint8 ``(N, resolution, resolution, C)``; without, the images are
      returned as a list of ``(H, W, C)`` arrays (one side ``resolution``, the other at least that) for
      :func:`augment_batch`'s random crops.

    ``names`` (one per image, e.g. file names) start the error messages; default ``"image <i>"``.
    """
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or resolution < 1):
        raise ValueError(f"resolution must be an int >= 1, got {resolution!r}")
    names = iter(names) if names is not None else None
    out, sizes = [], {}
    for i, image in enumerate(images):
        name = next(names) if names is not None else f"image {i}"
        array = convert_image(image, channels, name=name)
        if resolution is not None:
            array = resize_shorter_side(array, resolution)
            if center_crop:
                array = _center_crop(array, resolution)
        sizes.setdefault(array.shape, name)
        out.append(array)
    if not out:
        raise ValueError("no images")
    if resolution is None and len(sizes) > 1:
        examples = ", ".join(f"{h}×{w} ({name})" for (h, w, _), name in list(sizes.items())[:4])
        raise ValueError(f"images of mixed sizes: {examples}; give a resolution to resize and crop them")
    return np.stack(out) if len(sizes) == 1 else out


def stack_images(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """Images as uint8 ``(N, size, size, C)``: a stack as it is, a list of larger images centre-cropped."""
    if isinstance(images, np.ndarray) and images.shape[1:3] == (size, size):
        return images
    return np.stack([center_crop(a, size) for a in images])


def augment_batch(images: np.ndarray | Sequence[np.ndarray], indices: np.ndarray, example_numbers: np.ndarray, *,
                  seed: int, size: int, random_flip: bool = False) -> np.ndarray:
    """A training batch, uint8 ``(B, size, size, C)``: ``images[indices]`` randomly cropped to ``size × size``
    (where an image is larger: a list from :func:`prepare_images` without ``center_crop``) and, with
    ``random_flip``, mirrored left–right with probability 1/2.

    Example ``b``'s draws come from ``SeedSequence([seed, example_numbers[b], 1])`` alone: the same example
    number gets the same crop and flip in every run, on any process, after any resume. A stack of
    ``size × size`` images without ``random_flip`` is returned as ``images[indices]`` (no draws).
    """
    indices = np.asarray(indices)
    if isinstance(images, np.ndarray) and images.shape[1:3] == (size, size) and not random_flip:
        return images[indices]
    if len(indices) != len(example_numbers):
        raise ValueError(f"{len(indices)} indices but {len(example_numbers)} example numbers")
    out = []
    for i, n in zip(indices.tolist(), np.asarray(example_numbers).tolist()):
        image = images[i]
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(n), _AUGMENT_STREAM]))
        flip, u_top, u_left = rng.random(3)  # always three draws: a crop never changes the flip, nor vice versa
        h, w = image.shape[:2]
        if h < size or w < size:
            raise ValueError(f"image {i} is {h}×{w}, smaller than the crop {size}×{size}")
        top, left = int(u_top * (h - size + 1)), int(u_left * (w - size + 1))
        crop = image[top:top + size, left:left + size]
        out.append(crop[:, ::-1] if random_flip and flip < 0.5 else crop)
    return np.ascontiguousarray(np.stack(out))

