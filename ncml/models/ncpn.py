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
from .ncpn_cache import Canvas, FeatureMap, NCPNCache, half


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
    null_class: bool = False  # class-conditional models only: label num_classes = "no label" (see ARBackbone)

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
                      embedding_dim, null_class=False) -> tuple[int, int]:
        """``(parameters + buffers, activations per image)`` of ``NCPNModel(config)`` from the fields alone (ints)."""
        nf, nr, e = nr_filters, nr_resnet, embedding_dim

        def conv(cin, cout, k):  # weight-normalised: direction, norm, bias
            return cout * cin * k + 2 * cout

        def resnet(k, skip):  # k: kernel size (2×3 or 2×2), skip: channels of the skip input
            skip_params = conv(2 * skip, nf, 1) if skip else 0
            return conv(2 * nf, nf, k) + skip_params + conv(2 * nf, 2 * nf, k) + 2 * nf * (e + 1)

        attention = 2 * (2 * nf + 4 * nf * nf + 4 * nf) if attention_heads else 0
        parameters = (e // 2 + 2 * e * (e + 1) + e + ((num_classes or 0) + bool(null_class)) * e  # conditioning
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

    def rows(self, source: FeatureMap, skip: FeatureMap | None, h: torch.Tensor) -> _ResnetRows:
        """This block in the ``u`` stream (down-shifted 2×3 convolutions), one whole row per step."""
        return _ResnetRows(self, source, skip, h)

    def positions(self, source: FeatureMap, skips: list[FeatureMap], h: torch.Tensor,
                  attention: _AttentionPositions | None) -> _ResnetPositions:
        """This block in the ``ul`` stream (down-right-shifted 2×2 convolutions), followed by ``attention``, one
        position per step."""
        return _ResnetPositions(self, source, skips, h, attention)


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

    def positions(self, height: int, width: int, like: torch.Tensor) -> _AttentionPositions:
        """This block one position per step, on a ``height × width`` map, with key/value caches."""
        return _AttentionPositions(self, height, width, like)


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
                                               fourier_scale=config.fourier_scale,
                                               num_classes=config.num_classes, null_class=config.null_class)

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
        return self._walk(x, _WholeMaps(h))

    def incremental_steps(self, canvas: Canvas, h: torch.Tensor) -> _Steps:
        """The network as steps of one row (``u`` stream) or one position (``ul`` stream), in its order, reading
        ``canvas`` (:class:`~ncml.models.ncpn_cache.NCPNCache` runs them); ``h`` as in ``network``."""
        return self._walk(canvas, _IncrementalSteps(h))

    def _walk(self, x, evaluate):
        """The topology of the network, written once; ``evaluate`` computes each of its steps, on whole maps
        (:class:`_WholeMaps`, the teacher-forced pass) or one row / position at a time (:class:`_IncrementalSteps`,
        the sampling cache)."""
        u, ul = evaluate.input(self.u_init, self.ul_init_down, self.ul_init_right, x)
        us, uls = [u], [ul]
        for stage in range(3):  # up pass: H → ⌈H/2⌉ → ⌈H/4⌉
            for res_u, res_ul, attn in zip(self.up_u[stage], self.up_ul[stage], self.up_attn[stage]):
                u, ul = evaluate.resnets(res_u, res_ul, attn, u, ul)
                us.append(u)
                uls.append(ul)
            if stage < 2:
                u, ul = evaluate.downsize(self.downsize_u[stage], self.downsize_ul[stage], u, ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for stage in range(3):  # down pass back to H, with skip connections from the up pass
            for res_u, res_ul, attn in zip(self.down_u[stage], self.down_ul[stage], self.down_attn[stage]):
                u, ul = evaluate.resnets(res_u, res_ul, attn, u, ul, skip_u=us.pop(), skip_ul=uls.pop())
            if stage < 2:  # to the size of the up pass at that resolution (downsampling rounds up)
                u, ul = evaluate.upsize(self.upsize_u[stage], self.upsize_ul[stage], u, ul, like=us[-1])
        assert not us and not uls
        return evaluate.head(self.head, ul)

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


# ---- the two evaluations of the topology (NCPNModel._walk) -------------------------------------------------------
class _WholeMaps:
    """Every step on whole ``(B, C, H, W)`` maps: the teacher-forced network."""

    def __init__(self, h: torch.Tensor):
        self.h = h

    def input(self, conv_u, conv_ul_down, conv_ul_right, x: torch.Tensor):
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # + a channel of ones, so zero padding differs from data
        return conv_u(x), conv_ul_down(x) + conv_ul_right(x)

    def resnets(self, res_u, res_ul, attention, u, ul, *, skip_u=None, skip_ul=None):
        u = res_u(u, self.h, a=skip_u)
        return u, attention(res_ul(ul, self.h, a=u if skip_ul is None else torch.cat([u, skip_ul], dim=1)))

    def downsize(self, conv_u, conv_ul, u, ul):
        return conv_u(u), conv_ul(ul)

    def upsize(self, deconv_u, deconv_ul, u, ul, *, like):
        height, width = like.shape[2:]  # cropping bottom/right keeps causality
        return deconv_u(u)[:, :, :height, :width], deconv_ul(ul)[:, :, :height, :width]

    def head(self, head, ul):
        return head(F.elu(ul))


@dataclass(frozen=True)
class _Steps:
    """``NCPNModel.incremental_steps``: an :class:`~ncml.models.ncpn_cache.IncrementalNetwork`."""

    rows: list  # (level, step(r)): the u stream, one row per step
    positions: list  # (level, start(r), at(r, c)): the ul stream, prepared once per row, one position per step
    head: _HeadPositions  # head(c) -> (B, P)


class _IncrementalSteps:
    """Every step as the incremental form of its layers, on :class:`~ncml.models.ncpn_cache.FeatureMap` s."""

    def __init__(self, h: torch.Tensor):
        self.h = h
        self.rows, self.positions = [], []

    def _add(self, row_step, position_step, level: int) -> tuple[FeatureMap, FeatureMap]:
        self.rows.append((level, row_step.row))
        self.positions.append((level, position_step.start, position_step.at))
        return row_step.out, position_step.out

    def input(self, conv_u, conv_ul_down, conv_ul_right, canvas: Canvas):
        return self._add(_InputRows(conv_u, canvas, self.h), _InputPositions(conv_ul_down, conv_ul_right, canvas,
                                                                              self.h), canvas.level)

    def resnets(self, res_u, res_ul, attention, u, ul, *, skip_u=None, skip_ul=None):
        rows = res_u.rows(u, skip_u, self.h)
        attention = None if isinstance(attention, nn.Identity) else attention.positions(ul.height, ul.width, self.h)
        skips = [rows.out] if skip_ul is None else [rows.out, skip_ul]
        return self._add(rows, res_ul.positions(ul, skips, self.h, attention), u.level)

    def downsize(self, conv_u, conv_ul, u, ul):
        return self._add(_DownsizeRows(conv_u, u, self.h), _DownsizePositions(conv_ul, ul, self.h), u.level + 1)

    def upsize(self, deconv_u, deconv_ul, u, ul, *, like):
        return self._add(_UpsizeRows(deconv_u, u, like, self.h), _UpsizePositions(deconv_ul, ul, like, self.h),
                         like.level)

    def head(self, head, ul) -> _Steps:
        return _Steps(self.rows, self.positions, _HeadPositions(head, ul))


# ---- incremental forms of the layers (for NCPNCache; dropout is not applied, as in eval()) ------------------------
# Position steps (the ul stream) write into their map's current row in place; every 2-row kernel is split into its top
# row, applied to the whole previous row by ``start(r)`` (with the biases), and its bottom row, applied per position.
def _frozen(module) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight-normalised ``(weight, bias)`` of a shifted (de)convolution or ``nin``, evaluated once."""
    layer = next(getattr(module, name) for name in ("conv", "deconv", "linear") if hasattr(module, name))
    return layer.weight.detach(), layer.bias.detach()


def _window_weight(weight: torch.Tensor) -> torch.Tensor:
    """A conv weight ``(C_out, C_in, kh, kw)`` as a matrix ``(kh·kw·C_in, C_out)`` for :func:`_row_windows`."""
    return weight.permute(2, 3, 1, 0).flatten(0, 2).contiguous()


def _row_windows(rows: torch.Tensor, width: int, stride: int = 1) -> torch.Tensor:
    """The 2×3 windows of two padded channels-last rows ``(B, 2, W + 2, C)`` — window ``c`` at padded columns
    ``stride·c … stride·c + 2`` — as a strided view ``(B, width, 2, 3C)`` (order ``(kh, kw, C)``)."""
    b, _, _, channels = rows.shape
    s = rows.stride()
    return rows.as_strided((b, width, 2, 3 * channels), (s[0], stride * s[2], s[1], 1), rows.storage_offset())


def _conv_rows(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, width: int,
               stride: int = 1) -> torch.Tensor:
    """A 2×3 convolution of two padded rows as one matrix product ``(B, width, C_out)`` (its windows copied once);
    ``weight`` from :func:`_window_weight`. Cheaper than ``conv2d`` on a one-row output."""
    windows = _row_windows(rows, width, stride)
    flat = windows.reshape(-1, weight.shape[0])
    out = flat @ weight if bias is None else torch.addmm(bias, flat, weight)
    return out.view(rows.shape[0], width, -1)


def _kernel_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2-row conv weight ``(C_out, C_in, 2, kw)`` as two matrices ``(kw·C_in, C_out)`` (top row, bottom row) that
    multiply channels-last windows (order ``(kw, C_in)``) from the right."""
    return tuple(weight[:, :, k].permute(2, 1, 0).flatten(0, 1).contiguous() for k in range(2))


def _with_negation(weight: torch.Tensor) -> torch.Tensor:
    """``[W, −W]`` along the last dim: a product with it gives ``[y, −y]``, the input of ``concat_elu``."""
    return torch.cat([weight, -weight], dim=-1).contiguous()


def _row_buffer(like: torch.Tensor, width: int, channels: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A ``(B, W, C)`` buffer for row-wide partial sums and its per-column views ``(B, C)``."""
    buffer = like.new_zeros(like.shape[0], width, channels)
    return buffer, [buffer[:, c] for c in range(width)]


class _InputRows:
    """``u_init``: down-shifted 2×3 conv of the input, so row ``i`` reads image rows ``i − 2, i − 1`` (row 0: zero)."""

    def __init__(self, module: DownShiftedConv2d, canvas: Canvas, like: torch.Tensor):
        weight, self.bias = _frozen(module)
        self.weight = _window_weight(weight)
        self.pixels = canvas.pixels
        self.out = FeatureMap(like, weight.shape[0], canvas.height, canvas.width, level=canvas.level)

    def row(self, r: int) -> None:
        if r == 0:
            return  # the down-shift's zero row; the map is zero-initialised
        rows = self.pixels[:, r - 1:r + 1]  # data rows r − 2, r − 1 (the canvas is padded on top)
        self.out.set_row(r, _conv_rows(rows, self.weight, self.bias, self.out.width))


class _InputPositions:
    """``ul_init_down`` (1×3 over row ``i − 1``) + ``ul_init_right`` (2×1 over rows ``i − 1, i``, column ``j − 1``).

    Both shifts zero their first row / column, biases included. Everything but the 2×1 kernel's bottom tap (the
    pixel just drawn to the left) is known when a row starts.
    """

    def __init__(self, down: DownShiftedConv2d, right: DownRightShiftedConv2d, canvas: Canvas, like: torch.Tensor):
        w_down, self.b_down = _frozen(down)  # (F, C + 1, 1, 3)
        w_right, self.b_right = _frozen(right)  # (F, C + 1, 2, 1)
        self.w_down = w_down[:, :, 0].flatten(1)  # order (C + 1, kw), as unfold gives
        self.w_right_top, self.w_right_bottom = (w_right[:, :, k, 0].t().contiguous() for k in range(2))
        self.pixels, self.width = canvas.pixels, canvas.width
        self.out = FeatureMap(like, w_down.shape[0], canvas.height, canvas.width, level=canvas.level)
        self.partial, self.partial_at = _row_buffer(like, canvas.width, w_down.shape[0])
        self.left = []  # the canvas's current row at data columns c − 1 (c ≥ 1), (B, C + 1) each

    def start(self, r: int) -> None:
        self.out.advance(r)
        above = self.pixels[:, r]  # data row r − 1 (row 0 of the canvas is the top padding)
        torch.add(above[:, :self.width] @ self.w_right_top, self.b_right, out=self.partial)
        self.partial[:, 0] = 0  # the right shift: column 0 is zero, bias included
        if r > 0:  # the down shift: row 0 is zero, bias included
            self.partial += F.linear(above.unfold(1, 3, 1).flatten(2), self.w_down, self.b_down)
        current = self.pixels[:, r + 1]
        self.left = [current[:, c] for c in range(self.width)]  # data column c − 1 is padded column c

    def at(self, r: int, c: int) -> None:
        if c == 0:
            self.out.raw_at[0].copy_(self.partial_at[0])
        else:
            torch.addmm(self.partial_at[c], self.left[c], self.w_right_bottom, out=self.out.raw_at[c])
        self.out.activate(c)


class _DownsizeRows:
    """Stride-2 2×3 conv: level-``l`` row ``r`` reads level-``l − 1`` rows ``2r − 1, 2r`` (no ``concat_elu``)."""

    def __init__(self, module: DownShiftedConv2d, source: FeatureMap, like: torch.Tensor):
        weight, self.bias = _frozen(module)
        self.weight = _window_weight(weight)
        self.source = source
        self.out = FeatureMap(like, weight.shape[0], half(source.height), half(source.width), level=source.level + 1)

    def row(self, r: int) -> None:
        assert self.source.row == 2 * r
        # data rows 2r − 1, 2r; output column c reads data columns 2c − 1 … 2c + 1
        self.out.set_row(r, _conv_rows(self.source.raw, self.weight, self.bias, self.out.width, stride=2))


class _DownsizePositions:
    """Stride-2 2×2 conv: level-``l`` ``(r, c)`` reads level ``l − 1`` at rows ``2r − 1, 2r``, cols ``2c − 1, 2c``."""

    def __init__(self, module: DownRightShiftedConv2d, source: FeatureMap, like: torch.Tensor):
        weight, self.bias = _frozen(module)
        self.w_top, self.w_bottom = _kernel_rows(weight)
        self.source = source
        self.out = FeatureMap(like, weight.shape[0], half(source.height), half(source.width), level=source.level + 1)
        width, channels = self.out.width, source.channels
        self.partial, self.partial_at = _row_buffer(like, width, weight.shape[0])
        # the two source columns 2c − 1, 2c (padded 2c, 2c + 1) of every output column, adjacent in memory
        self.source_pairs = [source.raw[:, 1, 2 * c:2 * c + 2].flatten(1) for c in range(width)]
        self.source_top = source.raw[:, 0, :2 * width].unflatten(1, (width, 2)).flatten(2)  # (B, W_l, 2C)
        assert self.source_top.shape[-1] == 2 * channels

    def start(self, r: int) -> None:
        assert self.source.row == 2 * r
        self.out.advance(r)
        torch.add(self.source_top @ self.w_top, self.bias, out=self.partial)

    def at(self, r: int, c: int) -> None:
        torch.addmm(self.partial_at[c], self.source_pairs[c], self.w_bottom, out=self.out.raw_at[c])
        self.out.activate(c)


class _UpsizeRows:
    """Stride-2 transposed 2×3 conv to the size of ``like``: level-``l`` row ``r`` reads level ``l+1`` row ``⌊r/2⌋``
    (kernel row ``r % 2``)."""

    def __init__(self, module: DownShiftedDeconv2d, source: FeatureMap, like_map: FeatureMap, like: torch.Tensor):
        self.weight, self.bias = _frozen(module)
        self.source = source
        self.out = FeatureMap(like, self.weight.shape[1], like_map.height, like_map.width, level=like_map.level)

    def row(self, r: int) -> None:
        assert self.source.row == r // 2
        low = self.source.raw_row().transpose(1, 2)[:, :, None]  # (B, C, 1, W_{l+1})
        up = F.conv_transpose2d(low, self.weight, self.bias, stride=2)  # (B, C, 2, 2 W_{l+1} + 1)
        # the module crops one column on each side, then the network crops odd sizes on the right
        self.out.set_row(r, up[:, :, r % 2, 1:self.out.width + 1].transpose(1, 2))


class _UpsizePositions:
    """Stride-2 transposed 2×2 conv to the size of ``like``: level-``l`` ``(r, c)`` reads level ``l + 1`` at
    ``(⌊r/2⌋, ⌊c/2⌋)`` only: it is ``W[:, :, r % 2, c % 2]ᵀ`` times that vector, plus the bias."""

    def __init__(self, module: DownRightShiftedDeconv2d, source: FeatureMap, like_map: FeatureMap,
                 like: torch.Tensor):
        weight, self.bias = _frozen(module)  # (C_in, C_out, 2, 2)
        self.taps = [[weight[:, :, a, b].contiguous() for b in range(2)] for a in range(2)]
        self.source = source
        self.out = FeatureMap(like, weight.shape[1], like_map.height, like_map.width, level=like_map.level)

    def start(self, r: int) -> None:
        assert self.source.row == r // 2
        self.out.advance(r)

    def at(self, r: int, c: int) -> None:
        torch.addmm(self.bias, self.source.raw_at[c // 2], self.taps[r % 2][c % 2], out=self.out.raw_at[c])
        self.out.activate(c)


class _ResnetRows:
    """:meth:`GatedResnet.rows`: the block in the ``u`` stream, one row at a time (see ``GatedResnet``)."""

    def __init__(self, module: GatedResnet, source: FeatureMap, skip: FeatureMap | None, h: torch.Tensor):
        w_in, self.b_in = _frozen(module.conv_input)
        w_out, b_out = _frozen(module.conv_out)
        self.w_in, self.w_out = _window_weight(w_in), _window_weight(w_out)
        self.bias_out = (b_out + module.embedding_proj(h))[:, None, :]  # (B, 1, 2F): conv bias + W·h, once
        self.skip = skip
        if skip is not None:
            self.w_nin, b_nin = _frozen(module.nin_skip)
            self.b_in = self.b_in + b_nin
        self.source = source
        filters = w_in.shape[0]
        self.hidden = FeatureMap(h, filters, source.height, source.width, level=source.level, keep_raw=False)
        self.out = FeatureMap(h, filters, source.height, source.width, level=source.level)

    def row(self, r: int) -> None:
        width = self.out.width
        c = _conv_rows(self.source.elu, self.w_in, self.b_in, width)  # (B, W, F)
        if self.skip is not None:
            c = c + F.linear(self.skip.elu[:, 1, 1:self.skip.width + 1], self.w_nin)
        self.hidden.set_row(r, c)
        c = _conv_rows(self.hidden.elu, self.w_out, None, width) + self.bias_out  # (B, W, 2F)
        value, gate = c.chunk(2, dim=-1)
        self.out.set_row(r, torch.addcmul(self.source.raw_row(), value, torch.sigmoid(gate)))


class _ResnetPositions:
    """:meth:`GatedResnet.positions`: the block in the ``ul`` stream and its attention, one position at a time.

    ``start(r)`` applies the top kernel rows of both convolutions to the previous rows of their inputs, adds the
    biases, ``W·h`` and the ``nin`` skip from the ``u`` stream (whose row ``r`` is known), for the whole row. Per
    position: one matrix product per convolution (bottom kernel row; the ``nin`` skip from the ``ul`` stream of the
    up pass is a second one), the gate, the attention, and the ``concat_elu`` of the two results.
    ``concat_elu(cat(skips))`` is ``[a⁺, b⁺, a⁻, b⁻]`` while the maps store ``[a⁺, a⁻]``, ``[b⁺, b⁻]``: the ``nin``
    columns are split per skip map to match. The first convolution's weights are stored with their negation
    (``[W, −W]``), so that it writes ``[c, −c]`` straight into the hidden map, whose ``concat_elu`` is then one
    in-place ``elu``.
    """

    def __init__(self, module: GatedResnet, source: FeatureMap, skips: list[FeatureMap], h: torch.Tensor,
                 attention: _AttentionPositions | None):
        w_in, b_in = _frozen(module.conv_input)
        w_nin, b_nin = _frozen(module.nin_skip)
        total, offset, w_skips = w_nin.shape[1] // 2, 0, []
        for skip in skips:
            channels = skip.channels
            order = list(range(offset, offset + channels)) + list(range(total + offset, total + offset + channels))
            w_skips.append(w_nin[:, order].t().contiguous())  # (2 C_skip, F)
            offset += channels
        assert offset == total, "the ul skips do not match nin_skip"
        self.u_skip, self.w_u_skip = skips[0], _with_negation(w_skips[0])  # the u stream: a row at a time
        self.ul_skip, self.w_ul_skip = (skips[1], _with_negation(w_skips[1])) if len(skips) > 1 else (None, None)
        self.w_in_top, self.w_in_bottom = (_with_negation(w) for w in _kernel_rows(w_in))
        self.b_in = _with_negation(b_in + b_nin)
        w_out, b_out = _frozen(module.conv_out)
        self.w_out_top, self.w_out_bottom = _kernel_rows(w_out)
        self.bias_out = (b_out + module.embedding_proj(h))[:, None, :]  # (B, 1, 2F): conv bias + W·h, once per call
        self.source, self.attention = source, attention
        filters, width = w_in.shape[0], source.width
        self.hidden = FeatureMap(h, filters, source.height, width, level=source.level, keep_raw=False)
        self.out = FeatureMap(h, filters, source.height, width, level=source.level)
        self.partial_in, self.partial_in_at = _row_buffer(h, width, 2 * filters)
        self.partial_out, self.partial_out_at = _row_buffer(h, width, 2 * filters)
        self.gated = h.new_zeros(h.shape[0], 2 * filters)  # conv_out: value, gate
        self.value, self.gate = self.gated[:, :filters], self.gated[:, filters:]

    def start(self, r: int) -> None:
        self.hidden.advance(r)
        self.out.advance(r)
        u = self.u_skip.elu[:, 1, 1:self.u_skip.width + 1]  # (B, W, 2F): row r of the u stream
        torch.add(self.source.top_windows @ self.w_in_top + u @ self.w_u_skip, self.b_in, out=self.partial_in)
        torch.add(self.hidden.top_windows @ self.w_out_top, self.bias_out, out=self.partial_out)

    def at(self, r: int, c: int) -> None:
        hidden = self.hidden.elu_at[c]  # [c, −c] first, then its elu
        torch.addmm(self.partial_in_at[c], self.source.window[c], self.w_in_bottom, out=hidden)
        if self.ul_skip is not None:
            hidden.addmm_(self.ul_skip.elu_at[c], self.w_ul_skip)
        F.elu_(hidden)
        torch.addmm(self.partial_out_at[c], self.hidden.window[c], self.w_out_bottom, out=self.gated)
        self.gate.sigmoid_()
        out = self.out.raw_at[c]
        if self.attention is None:
            torch.addcmul(self.source.raw_at[c], self.value, self.gate, out=out)
        else:
            self.attention(torch.addcmul(self.source.raw_at[c], self.value, self.gate), r, c, out=out)
        self.out.activate(c)


class _AttentionPositions:
    """:meth:`CausalAxialAttention.positions`: causal axial attention at one position, with key/value caches.

    Row attention at ``(r, c)`` attends to the keys of ``(r, c' ≤ c)`` (the current row's cache, overwritten row by
    row); column attention to those of ``(r' ≤ r, c)`` (one cache per column). Its LayerNorm is per position; its
    affine is folded into the ``qkv`` projection, and so are the query scale ``1/√d`` and the output's ``1/√2``.
    The projection's rows are reordered to ``(head, q/k/v, d)``, so that the query of every head is a strided view
    for ``bmm`` and the keys and values go into the caches ``(2, B, heads, length, d)`` in one copy.
    """

    def __init__(self, module: CausalAxialAttention, height: int, width: int, like: torch.Tensor):
        heads = self.heads = module.heads
        batch, channels = like.shape[0], module.qkv[0].in_features
        d = channels // heads
        self.eps, self.channels = [n.eps for n in module.norms], channels
        self.w_qkv, self.b_qkv, self.w_out, self.b_out = [], [], [], []
        scale = like.new_tensor([d ** -0.5, 1.0, 1.0]).view(3, 1, 1)  # sdpa's default query scale
        for norm, qkv, out in zip(module.norms, module.qkv, module.out):
            gamma, beta = norm.weight.detach(), norm.bias.detach()
            weight, bias = qkv.weight.detach(), qkv.bias.detach()  # (3C, C): rows (q/k/v, head, d)
            w = (weight * gamma).view(3, heads, d, channels) * scale[..., None]
            b = (bias + weight @ beta).view(3, heads, d) * scale
            self.w_qkv.append(w.transpose(0, 1).reshape(3 * channels, channels).t().contiguous())
            self.b_qkv.append(b.transpose(0, 1).reshape(3 * channels).contiguous())
            self.w_out.append((out.weight.detach() / math.sqrt(2.0)).t().contiguous())
            self.b_out.append(out.bias.detach() / math.sqrt(2.0))
        self.qkv = like.new_zeros(batch, 3 * channels)  # (B, heads, 3, d)
        self.query = self.qkv.view(batch * heads, 3, d)[:, :1]  # (B·heads, 1, d)
        self.new_kv = self.qkv.view(batch, heads, 3, d)[:, :, 1:].permute(2, 0, 1, 3)  # (2, B, heads, d)
        self.attended = like.new_zeros(batch * heads, 1, d)
        self.attended_flat = self.attended.view(batch, channels)  # channels (head, d), as the module reshapes
        row = like.new_zeros(2, batch, heads, width, d)
        keys, values = row[0].view(batch * heads, width, d), row[1].view(batch * heads, width, d)
        self.row_slot = [row[:, :, :, c] for c in range(width)]
        self.row_keys = [keys[:, :c + 1].transpose(1, 2) for c in range(width)]  # (B·heads, d, c + 1)
        self.row_values = [values[:, :c + 1] for c in range(width)]
        col = like.new_zeros(2, batch, heads, width, height, d)
        self.col_slot = [col[:, :, :, c] for c in range(width)]  # (2, B, heads, H, d)
        self.col_keys = [col[0, :, :, c].view(batch * heads, height, d).transpose(1, 2) for c in range(width)]
        self.col_values = [col[1, :, :, c].view(batch * heads, height, d) for c in range(width)]

    def _attend(self, x: torch.Tensor, axis: int, slot: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                out: torch.Tensor | None) -> torch.Tensor:
        normed = torch.layer_norm(x, (self.channels,), None, None, self.eps[axis])
        torch.addmm(self.b_qkv[axis], normed, self.w_qkv[axis], out=self.qkv)
        slot.copy_(self.new_kv)
        weights = torch.softmax(torch.bmm(self.query, keys), dim=-1)  # (B·heads, 1, length)
        torch.bmm(weights, values, out=self.attended)
        y = torch.addmm(self.b_out[axis], self.attended_flat, self.w_out[axis])
        return torch.add(y, x, alpha=1 / math.sqrt(2.0), out=out) if out is not None else y.add_(x, alpha=2 ** -0.5)

    def __call__(self, x: torch.Tensor, r: int, c: int, out: torch.Tensor) -> None:
        """Attention at ``(r, c)`` on ``x`` ``(B, C)``, written into ``out``."""
        x = self._attend(x, 0, self.row_slot[c], self.row_keys[c], self.row_values[c], None)
        self._attend(x, 1, self.col_slot[c].select(3, r), self.col_keys[c].narrow(2, 0, r + 1),
                     self.col_values[c].narrow(1, 0, r + 1), out)


class _HeadPositions:
    """The head at column ``c`` of the current full-resolution row: ``nin(elu(ul))`` ``(B, P)``, a new tensor;
    ``elu(ul)`` is the first half of the stored ``concat_elu``."""

    def __init__(self, module: NetworkInNetwork, final: FeatureMap):
        weight, self.bias = _frozen(module)
        self.weight = weight.t().contiguous()
        self.inputs = [e[:, :final.channels] for e in final.elu_at]

    def __call__(self, c: int) -> torch.Tensor:
        return torch.addmm(self.bias, self.inputs[c], self.weight)
