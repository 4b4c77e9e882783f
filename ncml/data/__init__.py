"""Image data: real datasets that install with packages (no downloads), user image folders, out-of-distribution
sets, and the one uint8 ↔ model-space conversion.

- :mod:`ncml.data.images`: ``to_model_space`` / ``to_uint8`` (model space: ``x = 2k/(2^bits − 1) − 1`` for integer
  level ``k``; images are uint8 ``(N, H, W, C)``, model inputs float ``(B, C, H, W)``) and ``check_images``.
- :mod:`ncml.data.datasets`: ``load_dataset("mnist5k" | "digits", split)`` with fixed stratified splits, and
  ``ImageFolder`` for PNG/JPEG folders.
- :mod:`ncml.data.ood`: out-of-distribution sets (Fashion-MNIST and CIFAR-10 images from foolbox, scikit-image's
  faces and photo crops): ``load_ood_dataset(name, size=28, channels=1)``.
"""

from .datasets import DATASETS, ImageFolder, load_dataset
from .images import check_images, check_uint8_images, to_model_space, to_uint8
from .ood import OOD_DATASETS, load_ood_dataset, resize_images

__all__ = ["load_dataset", "ImageFolder", "to_model_space", "to_uint8", "check_uint8_images", "check_images",
           "DATASETS", "OOD_DATASETS", "load_ood_dataset", "resize_images"]
