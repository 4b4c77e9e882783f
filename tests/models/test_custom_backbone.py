"""The extension point: a user-defined backbone passes the same mixin as NCPN and the transformer.

Written as a user would: a frozen config dataclass with the fields every backbone shares, and an ``ARBackbone``
subclass that implements only ``conditioning`` and ``network``. The shared ``forward`` adds the logistic-mixture
likelihood head (exact masses at ``t == 0``, densities at ``t > 0``), ``log_prob`` / ``score`` / ``sample`` validate
their inputs, and ``sample`` runs the reference loop (no ``_sample_cached`` of its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from backbone_tests import BackboneTests
from torch import nn

from ncml.models import ARBackbone, ConditioningEmbedding
from ncml.models.autoregressive import check_backbone_config, check_int_field
from ncml.models.distributions import num_params


@dataclass(frozen=True)
class MaskedMLPConfig:
    sample_size: int = 4  # image height = width
    in_channels: int = 1  # 1 (grey) or 3 (RGB, coupled R→G→B means)
    num_bits: int = 8  # data grid of t == 0: 2^num_bits levels in [-1, 1]
    hidden_size: int = 8  # hidden units per pixel
    nr_logistic_mix: int = 2  # logistic components per pixel
    dropout: float = 0.0  # on the hidden units (training only)
    num_classes: int | None = None  # None = unconditional
    fourier_scale: float = 1.0  # std of the Fourier frequencies applied to log t
    embedding_dim: int = 16  # width of the (t, class) embedding

    def __post_init__(self):
        check_backbone_config(self)
        check_int_field(self, "hidden_size", 1)


class MaskedMLPModel(ARBackbone):
    """Pixel ``p``'s mixture parameters from a masked linear map of the pixels before it (raster order), plus the
    (t, class) embedding: ``params_p = head(dropout(silu(Σ_{q<p} W_pq x_q + b_p + V·e)))``."""

    config_class = MaskedMLPConfig

    def __init__(self, config: MaskedMLPConfig):
        super().__init__(config)
        length, channels, hidden = config.sample_size**2, config.in_channels, config.hidden_size
        self.embedding = ConditioningEmbedding(config.embedding_dim, num_fourier_features=config.embedding_dim,
                                               fourier_scale=config.fourier_scale, num_classes=config.num_classes)
        self.embedding_proj = nn.Linear(config.embedding_dim, hidden)
        self.past = nn.Linear(length * channels, length * hidden)
        # weight row p·hidden + k reads column q·channels + c only if pixel q comes before pixel p
        before = torch.arange(length)[:, None] > torch.arange(length)[None, :]  # (L, L)
        mask = before.repeat_interleave(hidden, dim=0).repeat_interleave(channels, dim=1)
        self.register_buffer("mask", mask.float(), persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(hidden, num_params(channels, config.nr_logistic_mix))

    def conditioning(self, t: torch.Tensor, class_labels: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """``V·silu(embedding(t, class))`` ``(B, hidden)``, added to every pixel's hidden units."""
        return self.embedding_proj(F.silu(self.embedding(t, class_labels))).to(dtype)

    def network(self, x: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        """Mixture parameters ``(B, P, H, W)``: those of pixel ``(i, j)`` depend only on pixels before it."""
        b, _, height, width = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(b, -1)  # (B, L·C): raster order, channels innermost
        hidden = F.linear(pixels, self.past.weight * self.mask.to(x.dtype), self.past.bias)
        hidden = self.dropout(F.silu(hidden.view(b, height * width, -1) + conditioning[:, None]))  # (B, L, hidden)
        return self.head(hidden).transpose(1, 2).reshape(b, -1, height, width)


class TestMaskedMLPBackbone(BackboneTests):
    model_class = MaskedMLPModel

    def get_config(self, **overrides):
        return MaskedMLPConfig(**overrides)


def test_config_is_validated_like_the_shipped_backbones():
    for field, value in (("in_channels", 2), ("hidden_size", 0), ("dropout", 1.0)):
        with pytest.raises(ValueError, match=field):
            MaskedMLPConfig(**{field: value})
