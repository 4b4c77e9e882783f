"""NCPN: the noise conditional pixel network (paper section 5 and A.2).

PixelCNN++ (Salimans et al. 2017) with

* causal **axial attention** (row then column, ``attention_heads`` heads, skip rescaling by ``1/√2``) after every
  residual block of the down-right (``ul``) stream, masked so that causality stays exact;
* **noise conditioning**: a Gaussian Fourier embedding of ``log t`` (a learned vector for ``t == 0``, see
  :mod:`ncml.models.embeddings`) and an optional class embedding, projected and added inside every gated resnet
  to the second convolution's output, before the gate;
* the likelihood of :mod:`ncml.models.distributions`: for ``t == 0`` (per sample) the discretized logistic mixture
  (exact probability masses over the ``2^num_bits`` bins), for ``t > 0`` the continuous mixture density of ``x_t``
  reported as ``log pdf + log Δ`` (section 4).

Causality. Two streams carry context: ``u`` sees only rows strictly above (down-shifted 2×3 convolutions) and
``ul`` sees rows above plus the pixels to the left (down-shifted 1×3 + down-right-shifted 2×1 at the input, then
down-right-shifted 2×2 convolutions). At every resolution, the ``ul`` feature at ``(i, j)`` depends only on image
pixels strictly before the full-resolution pixel ``(2^l i, 2^l j)`` in raster order, and this set grows
monotonically in raster order, so an attention query may look at any key not after it: rows attend to keys
``j' ≤ j``, columns to ``i' ≤ i``. Tests check the full Jacobian.

Details: convolutions are weight-normalised as in PixelCNN++ (no data-dependent init); any ``sample_size`` works
(each stride-2 downsampling rounds up, the upsampled maps are cropped back, which keeps causality); the input gets
a constant channel of ones so that zero padding differs from data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .autoregressive import ARBackbone, check_backbone_config, check_int_field, check_model_size
from .distributions import num_params
from .embeddings import ConditioningEmbedding
from .ncpn_cache import NCPNCache


@dataclass(frozen=True)
class NCPNConfig:
    sample_size: int = 32  # image height = width (any size; each downsampling rounds up)
    in_channels: int = 3  # 1 (grey) or 3 (RGB, coupled R→G→B means)
    num_bits: int = 8  # data grid of t == 0: 2^num_bits levels in [-1, 1]
    nr_resnet: int = 5  # gated resnets per stage (down pass: nr_resnet, nr_resnet + 1, nr_resnet + 1)
    nr_filters: int = 160  # channels of both streams
    nr_logistic_mix: int = 10  # logistic components per pixel
    attention_heads: int = 8  # heads of the causal axial attention; 0 = no attention
    dropout: float = 0.5  # inside every gated resnet (PixelCNN++ 0.5; the paper uses 0.25 on CIFAR-10)
    num_classes: int | None = None  # None = unconditional
    fourier_scale: float = 1.0  # std of the Fourier frequencies applied to log t (≈ 1, not score-SDE's 16)
    embedding_dim: int = 512  # width of the (t, class) embedding

    def __post_init__(self):
        check_backbone_config(self)
        for name in ("nr_resnet", "nr_filters"):
            check_int_field(self, name, 1)
        check_int_field(self, "attention_heads", 0)
        if self.attention_heads and self.nr_filters % self.attention_heads:
            raise ValueError(f"NCPNConfig.attention_heads ({self.attention_heads}) must divide "
                             f"nr_filters ({self.nr_filters})")
        check_model_size(self, self.size_estimate)

    @staticmethod
    def size_estimate(sample_size, in_channels, nr_resnet, nr_filters, nr_logistic_mix, attention_heads, num_classes,
                      embedding_dim) -> tuple[int, int]:
        """``(parameters + buffers, activations per image)`` of ``NCPNModel(config)`` from the fields alone (ints)."""
        nf, nr, e = nr_filters, nr_resnet, embedding_dim

        def conv(cin, cout, k):  # weight-normalised: direction, norm, bias
            return cout * cin * k + 2 * cout

        def resnet(k, skip):  # k: kernel size (2×3 or 2×2), skip: channels of the skip input
            skip_params = conv(2 * skip, nf, 1) if skip else 0
            return conv(2 * nf, nf, k) + skip_params + conv(2 * nf, 2 * nf, k) + 2 * nf * (e + 1)

        attention = 2 * (2 * nf + 4 * nf * nf + 4 * nf) if attention_heads else 0
        parameters = (e // 2 + 2 * e * (e + 1) + e + (num_classes or 0) * e  # conditioning embedding
                      + sum(conv(in_channels + 1, nf, k) for k in (6, 3, 2))  # the three input convolutions
                      + 3 * nr * (resnet(6, 0) + resnet(4, nf) + attention)  # up pass
                      + (3 * nr + 2) * (resnet(6, nf) + resnet(4, 2 * nf) + attention)  # down pass
                      + 4 * (conv(nf, nf, 6) + conv(nf, nf, 4))  # down- and upsampling
                      + conv(nf, num_params(in_channels, nr_logistic_mix), 1))
        areas = [(-(-sample_size // 2**level)) ** 2 for level in range(3)]  # H·W at each resolution
        positions = nr * sum(areas) + nr * areas[2] + (nr + 1) * (areas[1] + areas[0])  # one per resnet pair
        # a (u, ul) resnet pair keeps about 36 numbers per channel and position for backward, 52 with attention
        return parameters, (36 + (16 if attention_heads else 0)) * nf * positions


# ---- shifted convolutions (PixelCNN++) ------------------------------------------------------------
def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (zero row on top): position ``(i, j)`` then sees row ``i − 1``."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right (zero column on the left)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(torch.cat([x, -x], dim=1))


class DownShiftedConv2d(nn.Module):
    """Conv whose output at ``(i, j)`` sees rows ``i − h + 1 … i`` and columns ``j − ⌊w/2⌋ … j + ⌊w/2⌋``."""

    def __init__(self, cin: int, cout: int, filter_size=(2, 3), stride: int = 1, shift_output_down: bool = False):
        super().__init__()
        self.filter_size = filter_size
        self.conv = weight_norm(nn.Conv2d(cin, cout, filter_size, stride=stride))
        self.shift_output_down = shift_output_down

    def forward(self, x):
        fh, fw = self.filter_size
        x = self.conv(F.pad(x, ((fw - 1) // 2, (fw - 1) // 2, fh - 1, 0)))
        return down_shift(x) if self.shift_output_down else x


class DownRightShiftedConv2d(nn.Module):
    """Conv whose output at ``(i, j)`` sees rows ``i − h + 1 … i`` and columns ``j − w + 1 … j``."""

    def __init__(self, cin: int, cout: int, filter_size=(2, 2), stride: int = 1, shift_output_right: bool = False):
        super().__init__()
        self.filter_size = filter_size
        self.conv = weight_norm(nn.Conv2d(cin, cout, filter_size, stride=stride))
        self.shift_output_right = shift_output_right

    def forward(self, x):
        fh, fw = self.filter_size
        x = self.conv(F.pad(x, (fw - 1, 0, fh - 1, 0)))
        return right_shift(x) if self.shift_output_right else x


class DownShiftedDeconv2d(nn.Module):
    """Stride-2 upsampling for ``u``: output row ``r`` reads input row ``⌊r/2⌋`` only (cropped transpose conv)."""

    def __init__(self, cin: int, cout: int, filter_size=(2, 3)):
        super().__init__()
        self.filter_size = filter_size
        self.deconv = weight_norm(nn.ConvTranspose2d(cin, cout, filter_size, stride=2, output_padding=1))

    def forward(self, x):
        fh, fw = self.filter_size
        x = self.deconv(x)
        return x[:, :, :x.shape[2] - fh + 1, (fw - 1) // 2:x.shape[3] - (fw - 1) // 2]


class DownRightShiftedDeconv2d(nn.Module):
    """Stride-2 upsampling for ``ul``: output ``(r, c)`` reads input ``(⌊r/2⌋, ⌊c/2⌋)`` only."""

    def __init__(self, cin: int, cout: int, filter_size=(2, 2)):
        super().__init__()
        self.filter_size = filter_size
        self.deconv = weight_norm(nn.ConvTranspose2d(cin, cout, filter_size, stride=2, output_padding=1))

    def forward(self, x):
        fh, fw = self.filter_size
        x = self.deconv(x)
        return x[:, :, :x.shape[2] - fh + 1, :x.shape[3] - fw + 1]


class NetworkInNetwork(nn.Module):
    """A 1×1 convolution (per-position linear map over channels)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = weight_norm(nn.Linear(cin, cout))

    def forward(self, x):
        # as a 1×1 convolution: no channels-last copies of the (B, C, H, W) maps
        return F.conv2d(x, self.linear.weight[:, :, None, None], self.linear.bias)


# ---- blocks ---------------------------------------------------------------------------------------
class GatedResnet(nn.Module):
    """PixelCNN++ gated resnet with conditioning.

    ``c1 = conv(concat_elu(x)) [+ nin(concat_elu(a))]``, ``c2 = conv(dropout(concat_elu(c1))) + W·h``,
    ``x + c2_a · σ(c2_b)``: the embedding ``h`` ``(B, E)`` is added to ``c2`` before the gate (A.2).
    """

    def __init__(self, filters: int, conv_class, *, skip_channels: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.conv_input = conv_class(2 * filters, filters)
        self.nin_skip = NetworkInNetwork(2 * skip_channels, filters) if skip_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv_class(2 * filters, 2 * filters)
        self.embedding_proj = nn.Linear(embedding_dim, 2 * filters)

    def forward(self, x, h, a=None):
        c = self.conv_input(concat_elu(x))
        if a is not None:
            c = c + self.nin_skip(concat_elu(a))
        c = self.conv_out(self.dropout(concat_elu(c)))
        c = c + self.embedding_proj(h)[:, :, None, None]
        value, gate = c.chunk(2, dim=1)
        return x + value * torch.sigmoid(gate)


class CausalAxialAttention(nn.Module):
    """Row attention (keys ``j' ≤ j``) then column attention (keys ``i' ≤ i``), each a residual block.

    Per-position LayerNorm over channels (a norm over ``H, W`` would leak the future); the residual sums are
    rescaled by ``1/√2`` (skip rescaling as in score-SDE's attention blocks, A.2).
    """

    def __init__(self, filters: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norms = nn.ModuleList([nn.LayerNorm(filters) for _ in range(2)])
        self.qkv = nn.ModuleList([nn.Linear(filters, 3 * filters) for _ in range(2)])
        self.out = nn.ModuleList([nn.Linear(filters, filters) for _ in range(2)])

    def _attend(self, x, axis: int):
        # x: (N, L, C) sequences along the attended axis; causal over L
        n, length, c = x.shape
        q, k, v = self.qkv[axis](self.norms[axis](x)).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, length, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (N, heads, L, C/heads)
        return (x + self.out[axis](y.transpose(1, 2).reshape(n, length, c))) / math.sqrt(2.0)

    def forward(self, x):
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h, w, c)  # (B·H, W, C)
        x = self._attend(rows, 0).reshape(b, h, w, c)
        cols = x.permute(0, 2, 1, 3).reshape(b * w, h, c)  # (B·W, H, C)
        x = self._attend(cols, 1).reshape(b, w, h, c)
        return x.permute(0, 3, 2, 1).contiguous()  # (B, C, H, W)


# ---- the model --------------------------------------------------------------------------------------
class NCPNModel(ARBackbone):
    """PixelCNN++ + causal axial attention + noise/class conditioning (see module docstring).

    ``forward(x, t, class_labels)`` → ``BackboneOutput(log_prob (B, C, H, W) nats, params (B, P, H, W))`` with the
    parameter layout of :class:`ncml.models.distributions.LogisticMixture`.
    """

    config_class = NCPNConfig

    def __init__(self, config: NCPNConfig):
        super().__init__(config)
        nf, nr = config.nr_filters, config.nr_resnet
        cin = config.in_channels + 1  # + a channel of ones, so zero padding differs from data
        self.embedding = ConditioningEmbedding(config.embedding_dim, num_fourier_features=config.embedding_dim,
                                               fourier_scale=config.fourier_scale, num_classes=config.num_classes)

        def resnet(conv_class, skip):
            return GatedResnet(nf, conv_class, skip_channels=skip, embedding_dim=config.embedding_dim,
                               dropout=config.dropout)

        def attention():
            return CausalAxialAttention(nf, config.attention_heads) if config.attention_heads else nn.Identity()

        self.u_init = DownShiftedConv2d(cin, nf, (2, 3), shift_output_down=True)
        self.ul_init_down = DownShiftedConv2d(cin, nf, (1, 3), shift_output_down=True)
        self.ul_init_right = DownRightShiftedConv2d(cin, nf, (2, 1), shift_output_right=True)

        stages = 3
        self.up_u = nn.ModuleList([nn.ModuleList([resnet(DownShiftedConv2d, 0) for _ in range(nr)])
                                   for _ in range(stages)])
        self.up_ul = nn.ModuleList([nn.ModuleList([resnet(DownRightShiftedConv2d, nf) for _ in range(nr)])
                                    for _ in range(stages)])
        self.up_attn = nn.ModuleList([nn.ModuleList([attention() for _ in range(nr)]) for _ in range(stages)])
        self.downsize_u = nn.ModuleList([DownShiftedConv2d(nf, nf, (2, 3), stride=2) for _ in range(stages - 1)])
        self.downsize_ul = nn.ModuleList([DownRightShiftedConv2d(nf, nf, (2, 2), stride=2)
                                          for _ in range(stages - 1)])

        down_counts = [nr] + [nr + 1] * (stages - 1)
        self.down_u = nn.ModuleList([nn.ModuleList([resnet(DownShiftedConv2d, nf) for _ in range(n)])
                                     for n in down_counts])
        self.down_ul = nn.ModuleList([nn.ModuleList([resnet(DownRightShiftedConv2d, 2 * nf) for _ in range(n)])
                                      for n in down_counts])
        self.down_attn = nn.ModuleList([nn.ModuleList([attention() for _ in range(n)]) for n in down_counts])
        self.upsize_u = nn.ModuleList([DownShiftedDeconv2d(nf, nf) for _ in range(stages - 1)])
        self.upsize_ul = nn.ModuleList([DownRightShiftedDeconv2d(nf, nf) for _ in range(stages - 1)])

        self.head = NetworkInNetwork(nf, num_params(config.in_channels, config.nr_logistic_mix))

    # ---- network ------------------------------------------------------------------------------
    def conditioning(self, t: torch.Tensor, class_labels: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """``silu(embedding(t, class))`` ``(B, E)``, projected into every gated resnet."""
        return F.silu(self.embedding(t, class_labels)).to(dtype)

    def network(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Mixture parameters ``(B, P, H, W)``: those at ``(i, j)`` depend only on pixels before ``(i, j)``."""
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        u = self.u_init(x)
        ul = self.ul_init_down(x) + self.ul_init_right(x)
        us, uls = [u], [ul]
        for stage in range(3):  # up pass: H → ⌈H/2⌉ → ⌈H/4⌉
            for res_u, res_ul, attn in zip(self.up_u[stage], self.up_ul[stage], self.up_attn[stage]):
                u = res_u(u, h)
                ul = attn(res_ul(ul, h, a=u))
                us.append(u)
                uls.append(ul)
            if stage < 2:
                u, ul = self.downsize_u[stage](u), self.downsize_ul[stage](ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for stage in range(3):  # down pass back to H, with skip connections from the up pass
            for res_u, res_ul, attn in zip(self.down_u[stage], self.down_ul[stage], self.down_attn[stage]):
                u = res_u(u, h, a=us.pop())
                ul = attn(res_ul(ul, h, a=torch.cat([u, uls.pop()], dim=1)))
            if stage < 2:  # crop odd sizes back (downsampling rounds up); cropping bottom/right keeps causality
                height, width = us[-1].shape[2:]
                u = self.upsize_u[stage](u)[:, :, :height, :width]
                ul = self.upsize_ul[stage](ul)[:, :, :height, :width]
        assert not us and not uls
        return self.head(F.elu(ul))

    # ---- sampling -----------------------------------------------------------------------------
    def _sample_cached(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None,
                       positions: list[tuple[int, int]]) -> Iterator[torch.Tensor]:
        """Incremental passes (:class:`~ncml.models.ncpn_cache.NCPNCache`): every layer is computed only where it
        becomes final, in raster order up to the last drawn position (see ``ARBackbone._sample_cached``)."""
        cache = NCPNCache(self, x, self.conditioning(t, class_labels, x.dtype))
        todo, last = set(positions), positions[-1]
        width = x.shape[3]
        for i in range(last[0] + 1):
            cache.start_row(i)
            for j in range(width):
                params = cache.params_at(i, j)  # (B, P): also advances every layer to (i, j), needed by later pixels
                if (i, j) in todo:
                    yield params
                    cache.set_pixel(i, j, x[:, :, i, j])
                    if (i, j) == last:
                        return
