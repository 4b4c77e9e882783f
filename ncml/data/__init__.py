"""Image data: real datasets that install with packages (no downloads), user image folders, 🤗 datasets,
out-of-distribution sets, the one uint8 ↔ model-space conversion, and the preprocessing of images as they come.

- :mod:`ncml.data.images`: ``to_model_space`` / ``to_uint8`` (model space: ``x = 2k/(2^bits − 1) − 1`` for integer
  level ``k``; images are uint8 ``(N, H, W, C)``, model inputs float ``(B, C, H, W)``) and ``check_images``.
- :mod:`ncml.data.datasets`: ``load_dataset("mnist5k" | "digits", split)`` with fixed stratified splits, and
  ``ImageFolder`` for PNG/JPEG folders.
- :mod:`ncml.data.transforms`: any image mode to grey or RGB (``convert_image``: transparency composited on white),
  diffusers-style resize and centre / random crop (``prepare_images``), and the seeded per-example random crop and
  flip of training (``augment_batch``).
- :mod:`ncml.data.hf_datasets`: 🤗 datasets by Hub name or ``save_to_disk`` folder (``load_hf_splits``,
  ``hf_images``, ``hf_labels``; needs ``pip install 'ncml[data]'``).
- :mod:`ncml.data.ood`: out-of-distribution sets (Fashion-MNIST and CIFAR-10 images from foolbox, scikit-image's
  faces and photo crops): ``load_ood_dataset(name, size=28, channels=1)``.
"""

from .datasets import DATASETS, ImageFolder, load_dataset
from .hf_datasets import hf_images, hf_labels, load_hf_splits, train_and_eval_splits
from .images import check_images, check_uint8_images, to_model_space, to_uint8
from .ood import OOD_DATASETS, load_ood_dataset, resize_images
from .transforms import augment_batch, center_crop, convert_image, prepare_images, resize_shorter_side, stack_images

__all__ = ["load_dataset", "ImageFolder", "to_model_space", "to_uint8", "check_uint8_images", "check_images",
           "DATASETS", "OOD_DATASETS", "load_ood_dataset", "resize_images", "convert_image", "resize_shorter_side",
           "center_crop", "prepare_images", "stack_images", "augment_batch", "load_hf_splits",
           "train_and_eval_splits", "hf_images", "hf_labels"]
