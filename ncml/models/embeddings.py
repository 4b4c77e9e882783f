"""Conditioning embeddings: the noise level ``t`` (paper A.2: Gaussian Fourier projection) and the class label.

Why ``log t`` and not ``t``: the SDE horizons differ 20× (sub-VP ``T = 0.025``, VP ``0.1``, VE ``0.5``) and the
interesting noise levels span several decades near 0, where the marginal std grows like ``√t`` (VP, VE) or ``t``
(sub-VP). Fourier features of raw ``t ≤ 0.025`` with score-SDE's scale 16 are nearly constant, so every noise level
would look alike. ``log t`` is scale-free (multiplying ``t`` shifts it), needs no knowledge of the SDE (the backbone
is shared by all schedulers) and spreads ``t ∈ [1e-5, 0.5]`` over about ``[−11.5, −0.7]``; Fourier frequencies of
scale ≈ 1 then resolve that range. ``t == 0`` (clean data, where the likelihood is a probability mass rather than a
density) gets its own learned vector instead of ``log 0 = −∞``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianFourierProjection(nn.Module):
    """``s ↦ [sin(2π W s), cos(2π W s)]`` with fixed ``W ~ N(0, scale²)`` of size ``num_features // 2``.

    ``W`` is a persistent buffer, so it is saved with the weights and a loaded model embeds alike.
    """

    def __init__(self, num_features: int, scale: float = 1.0):
        super().__init__()
        if num_features % 2:
            raise ValueError(f"num_features must be even, got {num_features}")
        self.register_buffer("weight", torch.randn(num_features // 2) * scale)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * s[:, None] * self.weight[None, :].to(s.dtype)  # (B, F/2)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)  # (B, F)


class ConditioningEmbedding(nn.Module):
    """Embeds ``(t, class_label)`` into one vector ``(B, embedding_dim)``.

    ``t > 0``: ``MLP(Fourier(log t))``; ``t == 0``: a separate learned vector; plus a learned class embedding
    when ``num_classes`` is set, with one more row (index ``num_classes``, "no label") when ``null_class``. The result
    is added (after a projection) inside every gated resnet.
    """

    def __init__(self, embedding_dim: int, *, num_fourier_features: int, fourier_scale: float,
                 num_classes: int | None = None, null_class: bool = False):
        super().__init__()
        self.fourier = GaussianFourierProjection(num_fourier_features, fourier_scale)
        self.mlp = nn.Sequential(nn.Linear(num_fourier_features, embedding_dim), nn.SiLU(),
                                 nn.Linear(embedding_dim, embedding_dim))
        self.clean_embedding = nn.Parameter(torch.randn(embedding_dim) * 0.02)
        self.class_embedding = nn.Embedding(num_classes + int(null_class), embedding_dim) \
            if num_classes is not None else None

    def forward(self, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``t`` ``(B,)`` ≥ 0, ``class_labels`` ``(B,)`` int64 or ``None`` → ``(B, embedding_dim)``."""
        dtype = self.mlp[0].weight.dtype
        t = t.to(dtype)
        noisy = t > 0
        # log of a safe stand-in where t == 0: that branch is discarded, and nothing in it is infinite.
        log_t = torch.log(torch.where(noisy, t, torch.ones_like(t)))
        emb = self.mlp(self.fourier(log_t))
        emb = torch.where(noisy[:, None], emb, self.clean_embedding.to(dtype)[None, :])
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels are required by a class-conditional embedding")
            emb = emb + self.class_embedding(class_labels)
        return emb
