"""A causal transformer over pixels: the second ``ARBackbone`` (same interface, conditioning and likelihood as NCPN).

The image is read as a sequence of ``L = H·W`` pixels in raster order. The token of pixel ``p`` is

    token_p = W_in · x_{p−1} + pos_p          (token_0 = a learned start vector + pos_0)

so it carries the values (all ``C`` channels) of the *previous* pixel, never its own. Causal self-attention lets
position ``p`` read tokens ``≤ p``, i.e. pixels ``< p``; the head turns the last hidden state into pixel ``p``'s
logistic-mixture parameters (:mod:`ncml.models.distributions`), and the mixture couples the channels R→G→B inside
the pixel (PixelCNN++). Hence ``log_prob`` at dimension ``i`` (raster order, channels R→G→B) depends only on the
dimensions before ``i``, exactly (tests check the full Jacobian).

Likelihood (section 4): where ``t == 0`` (per sample) the discretized mixture gives exact probability masses over
the ``2^num_bits`` bins; where ``t > 0`` the continuous mixture density of ``x_t``, reported as ``log pdf + log Δ``.

Conditioning on ``t`` and the class: :class:`ncml.models.embeddings.ConditioningEmbedding` (Gaussian Fourier
features of ``log t`` — scale-free, so the 20× different horizons of sub-VP, VP and VE all spread out — a separate
learned vector for ``t == 0``, plus an optional class embedding) gives a vector ``e`` ``(B, embedding_dim)``.
It enters through **adaptive layer norm** (AdaLN, as in DiT): every LayerNorm has no affine parameters of its own
and is followed by ``(1 + scale(e)) · h + shift(e)``, with ``scale`` and ``shift`` linear in ``silu(e)``, in both
sublayers of every block and before the head. The conditioning is per sample and constant along the sequence, so
it cannot break causality.

Sampling: ``use_cache=True`` runs one token per step through the layers, keeping every layer's keys and values
(a KV cache, ``O(L)`` work per pixel); the conditioning modulations are computed once; a prefix of pixels known
for the whole batch (inpainting) is encoded in one parallel pass. ``use_cache=False`` is the reference: one full
forward pass per pixel. Both consume the generator identically and give the same samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .autoregressive import ARBackbone, check_backbone_config, check_int_field, check_model_size
from .distributions import num_params
from .embeddings import ConditioningEmbedding


@dataclass(frozen=True)
class ARTransformerConfig:
    sample_size: int = 28  # image height = width; the sequence has sample_size² pixels
    in_channels: int = 1  # 1 (grey) or 3 (RGB, coupled R→G→B means)
    num_bits: int = 8  # data grid of t == 0: 2^num_bits levels in [-1, 1]
    num_layers: int = 4  # transformer blocks
    hidden_size: int = 128  # width of the token stream
    num_heads: int = 4  # attention heads (must divide hidden_size)
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio · hidden_size
    nr_logistic_mix: int = 5  # logistic components per pixel
    dropout: float = 0.0  # on attention weights, residual branches and the input tokens (training only)
    num_classes: int | None = None  # None = unconditional
    fourier_scale: float = 1.0  # std of the Fourier frequencies applied to log t (≈ 1, not score-SDE's 16)
    embedding_dim: int = 128  # width of the (t, class) conditioning vector
    null_class: bool = False  # class-conditional models only: label num_classes = "no label" (see ARBackbone)

    def __post_init__(self):
        check_backbone_config(self)
        for name in ("num_layers", "hidden_size", "num_heads", "mlp_ratio"):
            check_int_field(self, name, 1)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"ARTransformerConfig.num_heads ({self.num_heads}) must divide "
                             f"hidden_size ({self.hidden_size})")
        check_model_size(self, self.size_estimate)

    @staticmethod
    def size_estimate(sample_size, in_channels, num_layers, hidden_size, num_heads, mlp_ratio, nr_logistic_mix,
                      num_classes, embedding_dim, null_class=False) -> tuple[int, int]:
        """``(parameters + buffers, activations per image)`` of ``ARTransformerModel(config)`` from the fields alone
        (ints); activations count the ``L × L`` attention weights of each head (the math attention kernel's)."""
        d, e, r, length = hidden_size, embedding_dim, mlp_ratio, sample_size**2
        adaln = 2 * d * (e + 1)
        block = 2 * adaln + 4 * d * (d + 1) + 2 * r * d * d + r * d + d
        parameters = (e // 2 + 2 * e * (e + 1) + e + ((num_classes or 0) + bool(null_class)) * e  # conditioning
                      + (in_channels + 2) * d + length * d  # input projection, start token, positions
                      + num_layers * block + adaln + (d + 1) * num_params(in_channels, nr_logistic_mix))
        return parameters, num_layers * length * ((12 + 3 * r) * d + 4 * length * num_heads)


# ---- building blocks ------------------------------------------------------------------------------
class KVCache:
    """Keys and values of one attention layer for positions ``0 … L−1``: two ``(B, heads, L, head_dim)`` buffers."""

    def __init__(self, batch_size: int, heads: int, length: int, head_dim: int, *, device, dtype):
        # positions are written before they are read, so the buffers need no initial value
        self.keys = torch.empty(batch_size, heads, length, head_dim, device=device, dtype=dtype)
        self.values = torch.empty_like(self.keys)


class AdaptiveLayerNorm(nn.Module):
    """``LayerNorm(h) · (1 + scale) + shift`` with ``(shift, scale)`` ``(B, D)`` each from the conditioning."""

    def __init__(self, hidden_size: int, embedding_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.modulation = nn.Linear(embedding_dim, 2 * hidden_size)

    def forward(self, h: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        """``h`` ``(B, T, D)``, ``modulation`` ``(B, 2D)`` = ``self.modulation(silu(e))`` (computed once per call)."""
        shift, scale = modulation.unsqueeze(1).chunk(2, dim=-1)  # (B, 1, D) each: the same for every position
        return self.norm(h) * (1 + scale) + shift


class CausalSelfAttention(nn.Module):
    """Multi-head attention in which position ``p`` reads positions ``≤ p``; optionally through a :class:`KVCache`."""

    def __init__(self, hidden_size: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def forward(self, h: torch.Tensor, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        """``h`` ``(B, T, D)`` holds positions ``start … start+T−1``.

        Without a cache ``start`` must be 0 (a whole prefix). With one, the new keys/values are written at
        ``start …`` and the queries read every cached position up to their own: ``T = 1`` (one incremental step at
        any ``start``) or ``start = 0`` (a parallel prefill).
        """
        b, length, d = h.shape
        q, k, v = (z.reshape(b, length, self.heads, d // self.heads).transpose(1, 2)
                   for z in self.qkv(h).chunk(3, dim=-1))  # (B, heads, T, head_dim)
        if cache is not None:
            if length > 1 and start != 0:
                raise ValueError("a cached attention step takes one position, or a prefix starting at 0")
            cache.keys[:, :, start:start + length] = k
            cache.values[:, :, start:start + length] = v
            k, v = cache.keys[:, :, :start + length], cache.values[:, :, :start + length]
        elif start != 0:
            raise ValueError("uncached attention runs over a prefix starting at position 0")
        y = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, length, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``h + attn(AdaLN(h))``, then ``h + MLP(AdaLN(h))`` (GELU MLP, dropout on both branches)."""

    def __init__(self, config: ARTransformerConfig):
        super().__init__()
        d = config.hidden_size
        self.norm_attention = AdaptiveLayerNorm(d, config.embedding_dim)
        self.attention = CausalSelfAttention(d, config.num_heads, config.dropout)
        self.norm_mlp = AdaptiveLayerNorm(d, config.embedding_dim)
        self.mlp = nn.Sequential(nn.Linear(d, config.mlp_ratio * d), nn.GELU(), nn.Linear(config.mlp_ratio * d, d))
        self.dropout = nn.Dropout(config.dropout)

    def modulations(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two AdaLN modulations ``(B, 2D)`` from ``silu(e)`` ``(B, E)``; constant during sampling."""
        return self.norm_attention.modulation(e), self.norm_mlp.modulation(e)

    def forward(self, h: torch.Tensor, modulations, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        mod_attention, mod_mlp = modulations
        h = h + self.dropout(self.attention(self.norm_attention(h, mod_attention), cache, start))
        return h + self.dropout(self.mlp(self.norm_mlp(h, mod_mlp)))


# ---- the model --------------------------------------------------------------------------------------
class ARTransformerModel(ARBackbone):
    """Causal transformer over pixels with AdaLN noise/class conditioning (see module docstring).

    ``forward(x, t, class_labels)`` → ``BackboneOutput(log_prob (B, C, H, W) nats, params (B, P, H, W))`` with the
    parameter layout of :class:`ncml.models.distributions.LogisticMixture`.
    """

    config_class = ARTransformerConfig

    def __init__(self, config: ARTransformerConfig):
        super().__init__(config)
        d, length = config.hidden_size, config.sample_size**2
        self.embedding = ConditioningEmbedding(config.embedding_dim, num_fourier_features=config.embedding_dim,
                                               fourier_scale=config.fourier_scale,
                                               num_classes=config.num_classes, null_class=config.null_class)
        self.input_proj = nn.Linear(config.in_channels, d)  # the previous pixel's values → its token
        self.start_token = nn.Parameter(torch.randn(d) * 0.02)  # the token of pixel 0 (there is no previous pixel)
        self.position_embedding = nn.Parameter(torch.randn(length, d) * 0.02)
        self.input_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([TransformerBlock(config) for _ in range(config.num_layers)])
        self.norm_out = AdaptiveLayerNorm(d, config.embedding_dim)
        self.head = nn.Linear(d, num_params(config.in_channels, config.nr_logistic_mix))

    # ---- network ------------------------------------------------------------------------------
    def conditioning(self, t: torch.Tensor, class_labels: torch.Tensor | None, dtype: torch.dtype):
        """All AdaLN modulations for ``(t, class)``: ``(per-block pairs, head modulation)``, each ``(B, 2D)``."""
        e = F.silu(self.embedding(t, class_labels)).to(dtype)
        return [block.modulations(e) for block in self.blocks], self.norm_out.modulation(e)

    def tokens(self, sequence: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Tokens of positions ``start … start+T−1`` ``(B, T, D)`` from the pixels before them.

        ``sequence`` ``(B, T, C)`` holds the pixels ``start−1 … start+T−2`` (raster order); at ``start = 0`` it
        holds pixels ``0 … T−2`` plus one unused entry, and position 0 takes the start token.
        """
        b, length, _ = sequence.shape
        h = self.input_proj(sequence)
        if start == 0:
            h = torch.cat([self.start_token.to(h.dtype).expand(b, 1, -1), h[:, :length - 1]], dim=1)
        return h + self.position_embedding[start:start + length].to(h.dtype)

    def run_layers(self, h: torch.Tensor, modulations, *, caches: list[KVCache] | None = None,
                   start: int = 0) -> torch.Tensor:
        """Mixture parameters ``(B, T, P)`` of positions ``start …`` from their tokens ``h`` ``(B, T, D)``."""
        block_mods, out_mod = modulations
        h = self.input_dropout(h)
        for i, block in enumerate(self.blocks):
            h = block(h, block_mods[i], None if caches is None else caches[i], start)
        return self.head(self.norm_out(h, out_mod))

    def network(self, x: torch.Tensor, modulations) -> torch.Tensor:
        """Mixture parameters ``(B, P, H, W)``: those of pixel ``(i, j)`` depend only on pixels before it."""
        b, c, height, width = x.shape
        sequence = x.flatten(2).transpose(1, 2)  # (B, L, C) in raster order
        params = self.run_layers(self.tokens(sequence), modulations)  # (B, L, P)
        return params.transpose(1, 2).reshape(b, -1, height, width)

    # ---- sampling -----------------------------------------------------------------------------
    def _sample_cached(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None,
                       positions: list[tuple[int, int]]) -> Iterator[torch.Tensor]:
        """Incremental decoding with a :class:`KVCache` per layer, one token per step up to the last drawn position;
        the known prefix before the first drawn position is encoded in one parallel pass, which also yields the
        parameters of that position (see ``ARBackbone._sample_cached``)."""
        batch_size, width = x.shape[0], x.shape[3]
        modulations = self.conditioning(t, class_labels, x.dtype)
        cfg = self.config
        caches = [KVCache(batch_size, cfg.num_heads, cfg.sample_size**2, cfg.hidden_size // cfg.num_heads,
                          device=x.device, dtype=x.dtype) for _ in self.blocks]
        sequence = x.flatten(2).transpose(1, 2)  # (B, L, C): a view of x, so drawn pixels appear in it
        todo = [i * width + j for i, j in positions]  # raster indices
        first, last, drawn = todo[0], todo[-1], set(todo)
        yield self.run_layers(self.tokens(sequence[:, :first + 1]), modulations, caches=caches)[:, -1]
        for p in range(first + 1, last + 1):
            token = self.tokens(sequence[:, p - 1:p], start=p)  # (B, 1, D) from pixel p − 1
            params = self.run_layers(token, modulations, caches=caches, start=p)[:, 0]  # (B, P)
            if p in drawn:
                yield params
