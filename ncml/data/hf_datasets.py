"""Images and class labels from 🤗 datasets (``pip install 'ncml[data]'``).

:func:`load_hf_splits` opens a dataset by Hub name (``datasets.load_dataset``, the Hub cache and offline mode as
usual), a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``datasets.load_from_disk``),
or a local data folder that ``datasets.load_dataset`` reads (an image folder, CSV or Parquet files).
:func:`hf_images` turns an image column into uint8 arrays at a model's channels and size
(:func:`ncml.data.transforms.prepare_images`), :func:`hf_labels` a class column into int64 labels.

An image column may hold ``datasets.Image`` values (PIL images once decoded, or ``{"bytes", "path"}`` dicts), or
integer arrays ``(H, W)`` / ``(H, W, C)`` with values 0 … 255. Errors name the column and the row.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .transforms import prepare_images

__all__ = ["load_hf_splits", "train_and_eval_splits", "hf_images", "hf_labels"]

EVAL_SPLITS = ("validation", "test")  # the held-out split, in this order of preference
_CHUNK = 256  # rows decoded at a time


def load_hf_splits(name_or_path: str | os.PathLike, config_name: str | None = None) -> dict:
    """Every split of a dataset as ``{split name: datasets.Dataset}``. Raises ``ImportError`` without ``datasets``
    and ``ValueError`` (with the cause) when the dataset cannot be loaded."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("Hugging Face datasets need the datasets package: pip install 'ncml[data]'") from e

    path = Path(name_or_path)
    saved = path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json"))
    try:
        if saved:
            if config_name is not None:
                raise ValueError(f"config name {config_name!r} given, but {str(path)!r} is a dataset saved with "
                                 "save_to_disk (it has no configs)")
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(name_or_path), config_name)
    except ValueError:
        raise
    except Exception as e:  # the loader's errors (not found, offline, bad files) vary: one line with the cause
        raise ValueError(f"cannot load the dataset ({type(e).__name__}: {' '.join(str(e).split())})") from e
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    if isinstance(loaded, datasets.DatasetDict):
        return dict(loaded)
    raise ValueError(f"expected a Dataset or DatasetDict, got {type(loaded).__name__}")


def train_and_eval_splits(splits: dict) -> tuple[str, str | None]:
    """The training split (``"train"``, or the only split) and the held-out one (``"validation"``, else ``"test"``,
    else None)."""
    if "train" in splits:
        train = "train"
    elif len(splits) == 1:
        train = next(iter(splits))
    else:
        raise ValueError(f"no 'train' split among {sorted(splits)}")
    held_out = next((s for s in EVAL_SPLITS if s in splits and s != train), None)
    return train, held_out


def _check_column(dataset, column: str, what: str) -> None:
    if column not in dataset.column_names:
        raise ValueError(f"no {what} column {column!r}; the columns are {dataset.column_names}")


def _rows(dataset, column: str):
    """The column's values, decoded a chunk of rows at a time."""
    dataset = dataset.select_columns([column])
    for start in range(0, len(dataset), _CHUNK):
        yield from dataset[start:start + _CHUNK][column]


def _image(value, name: str):
    from PIL import Image

    if value is None:
        raise ValueError(f"{name}: no image (None)")
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and ("bytes" in value or "path" in value):  # datasets.Image(decode=False)
        try:
            image = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
            image.load()
        except (OSError, SyntaxError, TypeError) as e:
            raise ValueError(f"{name}: cannot read the image ({type(e).__name__}: {e})") from e
        return image
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged lists
        raise ValueError(f"{name}: not an image or an array ({type(e).__name__}: {e})") from e


def hf_images(dataset, column: str = "image", *, channels: int, resolution: int | None = None,
              center_crop: bool = True) -> np.ndarray | list[np.ndarray]:
    """The images of ``column`` at ``channels`` (and ``resolution``), as :func:`~ncml.data.transforms.prepare_images`
    returns them."""
    _check_column(dataset, column, "image")
    if len(dataset) == 0:
        raise ValueError("the dataset has no rows")
    names = [f"column {column!r}, row {i}" for i in range(len(dataset))]
    images = (_image(v, name) for v, name in zip(_rows(dataset, column), names))
    return prepare_images(images, channels=channels, resolution=resolution, center_crop=center_crop, names=names)


def hf_labels(dataset, column: str, classes: list[str] | None = None) -> tuple[np.ndarray, list[str] | None]:
    """``(labels int64 (N,), class names or None)`` of a class column: ``datasets.ClassLabel`` (its names),
    integers >= 0, or strings (numbered in sorted order, or by their place in ``classes``: pass the training
    split's names when reading a held-out split)."""
    import datasets

    _check_column(dataset, column, "class")
    feature = dataset.features[column]
    values = dataset[column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    elif values and all(isinstance(v, str) for v in values):
        names = classes if classes is not None else sorted(set(values))
        number = {name: i for i, name in enumerate(names)}
        unknown = next((i for i, v in enumerate(values) if v not in number), None)
        if unknown is not None:
            raise ValueError(f"column {column!r}, row {unknown}: class {values[unknown]!r} is not among the "
                             f"training split's {names}")
        values = [number[v] for v in values]
    else:
        names = None
    bad = next((i for i, v in enumerate(values) if isinstance(v, bool) or not isinstance(v, (int, np.integer))
                or v < 0), None)
    if bad is not None:
        raise ValueError(f"column {column!r}, row {bad}: class {values[bad]!r}; expected an integer >= 0, a "
                         "ClassLabel or a string")
    return np.asarray(values, dtype=np.int64), names
