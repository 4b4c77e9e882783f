"""Cached (incremental) autoregressive sampling for :class:`~ncml.models.ncpn.NCPNModel`.

Fast generation for convolutional AR models (Ramachandran et al. 2017): the naive sampler runs the whole network
once per pixel although, the network being causal, the feature of every layer at a position ``q`` depends only on
pixels before ``q``. That feature is therefore final exactly when pixel ``q`` is about to be drawn, and it never
changes afterwards. :class:`NCPNCache` keeps, per layer, the part of its output that later positions read and
computes each layer only where it becomes final:

* the ``u`` stream sees rows strictly above, so all its layers are computed **one whole row at a time**, at the
  start of each image row (2×3 convolutions on the two rows they read);
* the ``ul`` stream is computed **one position at a time** (2×2 windows, or 1×3 / 2×1 at the input): per gated
  resnet two small matrix products (the ``nin`` skip is fused into the first) plus the gate;
* the strided layers follow the resolution: level ``l`` (``H → ⌈H/2⌉ → ⌈H/4⌉``) position ``(r, c)`` is computed at
  the step of full-resolution pixel ``(2^l r, 2^l c)`` (its stride-2 down-sampling reads level ``l − 1`` at rows
  ``2r − 1 … 2r``), and the stride-2 transposed convolutions read level ``l + 1`` at ``(⌊r/2⌋, ⌊c/2⌋)`` only;
* every read of a layer's map at row ``r`` (of its level) touches rows ``r − 1`` and ``r`` only, so a map keeps just
  these two rows (:class:`FeatureMap`);
* the causal axial attention keeps per-layer keys/values: the current row's (row attention, keys ``j' ≤ j``) and
  every column's (column attention, keys ``i' ≤ i``); its LayerNorm is per position, so it needs no cache;
* the weight-normalised weights, the embedding ``h`` of ``(t, class)`` and its projections inside every gated
  resnet are computed once per sampling call.

Each pixel then costs about ``1 / (H·W)`` of a forward pass plus the per-layer Python overhead. The arithmetic is
the network's own, summed in another order, so cached and naive sampling agree to rounding (tests compare the
mixture parameters of every position and the samples themselves). Dropout is not applied (as in ``eval()``): a
sampler that drew dropout masks could not be reproduced from the sampling generator.

Memory: two rows per layer plus the column keys/values of every attention layer (``2·B·C·H·W`` each) — for the
paper's CIFAR-10 model at batch 16 in float32 about 0.35 GiB, plus one copy of the weight-normalised weights.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # annotations only: ncpn imports this module
    from .ncpn import (DownRightShiftedConv2d, DownRightShiftedDeconv2d, DownShiftedConv2d, DownShiftedDeconv2d,
                       GatedResnet, NCPNModel)


# ---- buffers ----------------------------------------------------------------------------------------
def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``elu([x, −x])`` along the channels, here the last dim (the PixelCNN++ nonlinearity before every conv)."""
    return F.elu(torch.cat([x, -x], dim=-1))


class FeatureMap:
    """One layer's output at one resolution ``(H_l, W_l)``, filled in raster order; only two rows are kept.

    Every reader of a map needs its current row ``r`` and the row above: the 2-row convolutions, the skips, the
    stride-2 down-sampling (it reads rows ``2r − 1, 2r`` of the finer map while that map is at row ``2r``) and the
    up-sampling (it reads row ``⌊r/2⌋`` of the coarser map, which is still that map's current row). Index 0 holds
    the previous row, index 1 the current one; writing to a new row first moves the current row up. Before row 0
    the previous row is zero: the top padding of the shifted convolutions.

    Rows are stored channels-last (a position's window is then a few contiguous runs) and zero-padded by one column
    on each side (the padding of the shifted convolutions): data column ``c`` lives at ``c + 1``, so the 2×2 window
    ending at ``(r, c)`` is ``[:, :, c:c + 2]``. ``raw`` ``(B, 2, W_l + 2, C)`` holds the values, ``elu``
    ``(B, 2, W_l + 2, 2C)`` their ``concat_elu`` — the input of every convolution and ``nin`` skip reading this layer
    (``concat_elu(0) = 0``, so the padding stays valid).
    """

    def __init__(self, like: torch.Tensor, channels: int, height: int, width: int, *, keep_raw: bool = True):
        batch = like.shape[0]
        self.height, self.width = height, width
        self.row = 0  # the current row
        self.raw = like.new_zeros(batch, 2, width + 2, channels) if keep_raw else None
        self.elu = like.new_zeros(batch, 2, width + 2, 2 * channels)

    def _move_to(self, r: int) -> None:
        if r != self.row:
            assert r == self.row + 1, f"rows must be filled in order: row {r} after row {self.row}"
            for buffer in (self.raw, self.elu):
                if buffer is not None:
                    buffer[:, 0] = buffer[:, 1]
            self.row = r

    def set_row(self, r: int, value: torch.Tensor) -> None:
        """Store row ``r``: ``value`` ``(B, W_l, C)``."""
        self._move_to(r)
        if self.raw is not None:
            self.raw[:, 1, 1:self.width + 1] = value
        self.elu[:, 1, 1:self.width + 1] = concat_elu(value)

    def set_at(self, r: int, c: int, value: torch.Tensor) -> None:
        """Store position ``(r, c)``: ``value`` ``(B, C)``."""
        self._move_to(r)
        if self.raw is not None:
            self.raw[:, 1, c + 1] = value
        self.elu[:, 1, c + 1] = concat_elu(value)

    def raw_row(self) -> torch.Tensor:
        return self.raw[:, 1, 1:self.width + 1]  # (B, W_l, C): the current row


def _rows(buffer: torch.Tensor) -> torch.Tensor:
    """Two padded channels-last rows ``(B, 2, W + 2, C)`` as a ``(B, C, 2, W + 2)`` view for ``conv2d``."""
    return buffer.permute(0, 3, 1, 2)


def _conv_row(out: torch.Tensor) -> torch.Tensor:
    """A one-row ``conv2d`` output ``(B, C, 1, W)`` as ``(B, W, C)``."""
    return out[:, :, 0].transpose(1, 2)


def _half(size: int) -> int:
    """Size after a stride-2 down-sampling (rounds up)."""
    return (size + 1) // 2


def _conv_weight(module) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight-normalised ``(weight, bias)`` of a shifted (de)convolution or ``nin``, evaluated once."""
    layer = next(getattr(module, name) for name in ("conv", "deconv", "linear") if hasattr(module, name))
    return layer.weight.detach(), layer.bias.detach()


# ---- the u stream: whole rows -------------------------------------------------------------------------
class _URowInit:
    """``u_init``: down-shifted 2×3 conv of the input, so row ``i`` reads image rows ``i − 2, i − 1`` (row 0: zero)."""

    def __init__(self, module: DownShiftedConv2d, pixels: torch.Tensor, like: torch.Tensor):
        self.weight, self.bias = _conv_weight(module)
        self.pixels = pixels
        height, width = pixels.shape[1] - 1, pixels.shape[2] - 2
        self.out = FeatureMap(like, self.weight.shape[0], height, width)

    def row(self, r: int) -> None:
        if r == 0:
            return  # the down-shift's zero row; the map is zero-initialised
        window = _rows(self.pixels[:, r - 1:r + 1])  # data rows r − 2, r − 1 (the canvas is padded on top)
        self.out.set_row(r, _conv_row(F.conv2d(window, self.weight, self.bias)))


class _URowDownsize:
    """Stride-2 2×3 conv: level-``l`` row ``r`` reads level-``l − 1`` rows ``2r − 1, 2r`` (no ``concat_elu``)."""

    def __init__(self, module: DownShiftedConv2d, source: FeatureMap, like: torch.Tensor):
        self.weight, self.bias = _conv_weight(module)
        self.source = source
        self.out = FeatureMap(like, self.weight.shape[0], _half(source.height), _half(source.width))

    def row(self, r: int) -> None:
        assert self.source.row == 2 * r
        window = _rows(self.source.raw)  # data rows 2r − 1, 2r; all padded columns
        self.out.set_row(r, _conv_row(F.conv2d(window, self.weight, self.bias, stride=(1, 2))))


class _URowUpsize:
    """Stride-2 transposed 2×3 conv: level-``l`` row ``r`` reads level ``l+1`` row ``⌊r/2⌋`` (kernel row ``r % 2``)."""

    def __init__(self, module: DownShiftedDeconv2d, source: FeatureMap, height: int, width: int,
                 like: torch.Tensor):
        self.weight, self.bias = _conv_weight(module)
        self.source = source
        self.out = FeatureMap(like, self.weight.shape[1], height, width)

    def row(self, r: int) -> None:
        assert self.source.row == r // 2
        low = self.source.raw_row().transpose(1, 2)[:, :, None]  # (B, C, 1, W_{l+1})
        up = F.conv_transpose2d(low, self.weight, self.bias, stride=2)  # (B, C, 2, 2 W_{l+1} + 1)
        # the module crops one column on each side, then the network crops odd sizes on the right
        self.out.set_row(r, up[:, :, r % 2, 1:self.out.width + 1].transpose(1, 2))


class _URowResnet:
    """A gated resnet of the ``u`` stream (down-shifted 2×3 convs), one row at a time (see ``GatedResnet``)."""

    def __init__(self, module: GatedResnet, source: FeatureMap, skip: FeatureMap | None, h: torch.Tensor):
        self.w_in, self.b_in = _conv_weight(module.conv_input)
        self.w_out, b_out = _conv_weight(module.conv_out)
        self.bias_out = (b_out + module.embedding_proj(h))[:, None, :]  # (B, 1, 2F): conv bias + W·h, once
        self.skip = skip
        if skip is not None:
            self.w_nin, b_nin = _conv_weight(module.nin_skip)
            self.b_in = self.b_in + b_nin
        self.source = source
        filters = self.w_in.shape[0]
        self.hidden = FeatureMap(h, filters, source.height, source.width, keep_raw=False)
        self.out = FeatureMap(h, filters, source.height, source.width)

    def row(self, r: int) -> None:
        c = _conv_row(F.conv2d(_rows(self.source.elu), self.w_in, self.b_in))  # (B, W, F)
        if self.skip is not None:
            c = c + F.linear(self.skip.elu[:, 1, 1:self.skip.width + 1], self.w_nin)
        self.hidden.set_row(r, c)
        c = _conv_row(F.conv2d(_rows(self.hidden.elu), self.w_out)) + self.bias_out  # (B, W, 2F)
        value, gate = c.chunk(2, dim=-1)
        self.out.set_row(r, torch.addcmul(self.source.raw_row(), value, torch.sigmoid(gate)))


# ---- the ul stream: one position at a time --------------------------------------------------------------
def _window(rows: torch.Tensor, c: int) -> torch.Tensor:
    """The 2×2 window ending at data column ``c`` of a map's two rows as ``(B, 4·C)``, order ``(kh, kw, C)``."""
    return rows[:, :, c:c + 2].reshape(rows.shape[0], -1)


def _flat(weight: torch.Tensor) -> torch.Tensor:
    """A conv weight ``(C_out, C_in, kh, kw)`` as a matrix ``(C_out, kh·kw·C_in)`` matching channels-last windows."""
    return weight.permute(0, 2, 3, 1).flatten(1)


class _ULInit:
    """``ul_init_down`` (1×3 over row ``i − 1``) + ``ul_init_right`` (2×1 over rows ``i − 1, i``, column ``j − 1``)."""

    def __init__(self, down: DownShiftedConv2d, right: DownRightShiftedConv2d, pixels: torch.Tensor,
                 like: torch.Tensor):
        w_down, self.b_down = _conv_weight(down)
        w_right, self.b_right = _conv_weight(right)
        self.w_down, self.w_right = _flat(w_down), _flat(w_right)
        self.pixels = pixels
        height, width = pixels.shape[1] - 1, pixels.shape[2] - 2
        self.out = FeatureMap(like, w_down.shape[0], height, width)

    def at(self, r: int, c: int) -> None:
        px = self.pixels
        value = torch.zeros_like(self.b_down).expand(px.shape[0], -1)  # both shifts give zeros at (0, 0)
        if r > 0:  # down-shift: row 0 is zero
            value = F.linear(px[:, r, c:c + 3].reshape(px.shape[0], -1), self.w_down, self.b_down)
        if c > 0:  # right-shift: column 0 is zero
            value = value + F.linear(px[:, r:r + 2, c].reshape(px.shape[0], -1), self.w_right, self.b_right)
        self.out.set_at(r, c, value)


class _ULDownsize:
    """Stride-2 2×2 conv: level-``l`` ``(r, c)`` reads level ``l − 1`` at rows ``2r − 1, 2r``, cols ``2c − 1, 2c``."""

    def __init__(self, module: DownRightShiftedConv2d, source: FeatureMap, like: torch.Tensor):
        weight, self.bias = _conv_weight(module)
        self.weight = _flat(weight)
        self.source = source
        self.out = FeatureMap(like, weight.shape[0], _half(source.height), _half(source.width))

    def at(self, r: int, c: int) -> None:
        assert self.source.row == 2 * r
        self.out.set_at(r, c, F.linear(_window(self.source.raw, 2 * c), self.weight, self.bias))


class _ULUpsize:
    """Stride-2 transposed 2×2 conv: level-``l`` ``(r, c)`` reads level ``l + 1`` at ``(⌊r/2⌋, ⌊c/2⌋)`` only.

    It is ``W[:, :, r % 2, c % 2]ᵀ`` times that vector, plus the bias.
    """

    def __init__(self, module: DownRightShiftedDeconv2d, source: FeatureMap, height: int, width: int,
                 like: torch.Tensor):
        weight, self.bias = _conv_weight(module)  # (C_in, C_out, 2, 2)
        self.taps = [[weight[:, :, a, b].t().contiguous() for b in range(2)] for a in range(2)]
        self.source = source
        self.out = FeatureMap(like, weight.shape[1], height, width)

    def at(self, r: int, c: int) -> None:
        assert self.source.row == r // 2
        low = self.source.raw[:, 1, c // 2 + 1]
        self.out.set_at(r, c, F.linear(low, self.taps[r % 2][c % 2], self.bias))


class _ULAttention:
    """Causal axial attention at one position, with key/value caches (see ``CausalAxialAttention``).

    Row attention at ``(r, c)`` attends to the keys of ``(r, c' ≤ c)`` (the current row's cache, overwritten row by
    row); column attention to those of ``(r' ≤ r, c)`` (one cache per column).
    """

    def __init__(self, module: nn.Module, height: int, width: int, like: torch.Tensor):
        self.heads = module.heads
        self.norms = [(n.weight.detach(), n.bias.detach(), n.eps) for n in module.norms]
        self.qkv = [(lin.weight.detach(), lin.bias.detach()) for lin in module.qkv]
        self.out = [(lin.weight.detach(), lin.bias.detach()) for lin in module.out]
        batch, channels = like.shape[0], self.qkv[0][0].shape[1]
        d = channels // self.heads
        self.row_kv = like.new_zeros(batch, 2, self.heads, width, d)  # keys/values of the current row
        self.col_kv = like.new_zeros(batch, 2, self.heads, width, height, d)  # per column, all rows so far

    def _attend(self, x: torch.Tensor, axis: int, kv: torch.Tensor, length: int) -> torch.Tensor:
        batch, channels = x.shape
        weight, bias, eps = self.norms[axis]
        qkv = F.linear(F.layer_norm(x, (channels,), weight, bias, eps), *self.qkv[axis])  # (B, 3C)
        q = qkv[:, :channels].reshape(batch, self.heads, 1, -1)
        kv[..., length - 1, :] = qkv[:, channels:].reshape(batch, 2, self.heads, -1)
        y = F.scaled_dot_product_attention(q, kv[:, 0, :, :length], kv[:, 1, :, :length])  # (B, heads, 1, d)
        return (x + F.linear(y.reshape(batch, channels), *self.out[axis])) / math.sqrt(2.0)

    def __call__(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
        x = self._attend(x, 0, self.row_kv, c + 1)
        return self._attend(x, 1, self.col_kv[:, :, :, c], r + 1)


class _ULResnet:
    """A gated resnet of the ``ul`` stream (down-right-shifted 2×2 convs) and its attention, one position at a time.

    ``conv_input`` over the 2×2 window and the ``nin`` skip over ``concat_elu(cat(skips))`` at the position are one
    matrix product: the window and the skips' stored ``concat_elu`` vectors are concatenated, and the ``nin``
    columns permuted to match (``concat_elu(cat(a, b)) = [a⁺, b⁺, a⁻, b⁻]``; the maps store ``[a⁺, a⁻]``, ``[b⁺, b⁻]``).
    """

    def __init__(self, module: GatedResnet, attention: nn.Module, source: FeatureMap, skips: list[FeatureMap],
                 h: torch.Tensor):
        w_in, b_in = _conv_weight(module.conv_input)
        w_nin, b_nin = _conv_weight(module.nin_skip)
        total = w_nin.shape[1] // 2
        order, offset = [], 0
        for skip in skips:
            channels = skip.elu.shape[-1] // 2
            order += list(range(offset, offset + channels)) + list(range(total + offset, total + offset + channels))
            offset += channels
        assert offset == total, "the ul skips do not match nin_skip"
        self.w_in = torch.cat([_flat(w_in), w_nin[:, order]], dim=1)
        self.b_in = b_in + b_nin
        w_out, b_out = _conv_weight(module.conv_out)
        self.w_out_t = _flat(w_out).t()
        self.bias_out = b_out + module.embedding_proj(h)  # (B, 2F): conv bias + W·h, once per sampling call
        self.source, self.skips = source, skips
        filters = w_in.shape[0]
        self.hidden = FeatureMap(h, filters, source.height, source.width, keep_raw=False)
        self.out = FeatureMap(h, filters, source.height, source.width)
        self.attention = None if isinstance(attention, nn.Identity) else \
            _ULAttention(attention, source.height, source.width, h)

    def at(self, r: int, c: int) -> None:
        inputs = [_window(self.source.elu, c)] + [s.elu[:, 1, c + 1] for s in self.skips]
        self.hidden.set_at(r, c, F.linear(torch.cat(inputs, dim=1), self.w_in, self.b_in))
        out = torch.addmm(self.bias_out, _window(self.hidden.elu, c), self.w_out_t)  # (B, 2F)
        value, gate = out.chunk(2, dim=1)
        out = torch.addcmul(self.source.raw[:, 1, c + 1], value, torch.sigmoid(gate))
        if self.attention is not None:
            out = self.attention(out, r, c)
        self.out.set_at(r, c, out)


# ---- the whole network ----------------------------------------------------------------------------------
class NCPNCache:
    """Incremental evaluation of ``NCPNModel.network`` in raster order.

    Usage: for every row ``i`` call :meth:`start_row` once, then for every column ``j`` :meth:`params_at` (which
    returns the mixture parameters of pixel ``(i, j)``) and, once the pixel is drawn, :meth:`set_pixel`. Positions
    of the canvas not yet reached are never read, so ``x`` may hold anything there.

    Args:
        model: the backbone.
        x: ``(B, C, H, W)`` the canvas (copied).
        h: ``(B, E)`` ``model.conditioning(t, class_labels, dtype)`` = ``silu(embedding(t, class_labels))``.
    """

    @torch.no_grad()
    def __init__(self, model: NCPNModel, x: torch.Tensor, h: torch.Tensor):
        batch, channels, height, width = x.shape
        self.channels = channels
        # the whole canvas (the input convs read two rows above), channels-last, + the channel of ones (zero in the
        # padding), padded like a FeatureMap and by one row on top: pixel (i, j) lives at [:, i + 1, j + 1]
        self.pixels = x.new_zeros(batch, height + 1, width + 2, channels + 1)
        self.pixels[:, 1:, 1:width + 1, :channels] = x.permute(0, 2, 3, 1)
        self.pixels[:, 1:, 1:width + 1, channels] = 1
        self.head = _conv_weight(model.head)

        # Mirror NCPNModel.network with maps instead of tensors; every op lands in the list of its level and pass.
        stages = len(model.up_u)
        self.num_levels = stages
        self.u_up, self.u_down = [[] for _ in range(stages)], [[] for _ in range(stages)]
        self.ul_up, self.ul_down = [[] for _ in range(stages)], [[] for _ in range(stages)]

        u, ul = _URowInit(model.u_init, self.pixels, h), _ULInit(model.ul_init_down, model.ul_init_right,
                                                                   self.pixels, h)
        self.u_up[0].append(u)
        self.ul_up[0].append(ul)
        us, uls = [u.out], [ul.out]
        for level in range(stages):  # up pass
            for res_u, res_ul, attn in zip(model.up_u[level], model.up_ul[level], model.up_attn[level]):
                u = _URowResnet(res_u, u.out, None, h)
                ul = _ULResnet(res_ul, attn, ul.out, [u.out], h)
                self.u_up[level].append(u)
                self.ul_up[level].append(ul)
                us.append(u.out)
                uls.append(ul.out)
            if level < stages - 1:
                u, ul = _URowDownsize(model.downsize_u[level], u.out, h), _ULDownsize(model.downsize_ul[level],
                                                                                      ul.out, h)
                self.u_up[level + 1].append(u)
                self.ul_up[level + 1].append(ul)
                us.append(u.out)
                uls.append(ul.out)
        u_map, ul_map = us.pop(), uls.pop()
        for stage in range(stages):  # down pass, from the lowest resolution back up
            level = stages - 1 - stage
            for res_u, res_ul, attn in zip(model.down_u[stage], model.down_ul[stage], model.down_attn[stage]):
                u = _URowResnet(res_u, u_map, us.pop(), h)
                ul = _ULResnet(res_ul, attn, ul_map, [u.out, uls.pop()], h)
                self.u_down[level].append(u)
                self.ul_down[level].append(ul)
                u_map, ul_map = u.out, ul.out
            if level > 0:  # the up-sampling is the first op of the next level's down pass
                size = us[-1].height, us[-1].width
                u = _URowUpsize(model.upsize_u[stage], u_map, *size, h)
                ul = _ULUpsize(model.upsize_ul[stage], ul_map, *size, h)
                self.u_down[level - 1].append(u)
                self.ul_down[level - 1].append(ul)
                u_map, ul_map = u.out, ul.out
        assert not us and not uls
        self.final = ul_map

    def _levels(self, *coords: int) -> range:
        """Levels with a position at these full-resolution coordinates: ``l`` such that ``2^l`` divides them all."""
        level = 0
        while level + 1 < self.num_levels and all(v % 2 ** (level + 1) == 0 for v in coords):
            level += 1
        return range(level + 1)

    def start_row(self, i: int) -> None:
        """Compute the ``u`` stream at image row ``i`` (every level with a row there); rows ``< i`` must be set."""
        levels = self._levels(i)
        for level in levels:
            for op in self.u_up[level]:
                op.row(i >> level)
        for level in reversed(levels):
            for op in self.u_down[level]:
                op.row(i >> level)

    def params_at(self, i: int, j: int) -> torch.Tensor:
        """Advance the ``ul`` stream to pixel ``(i, j)`` and return its mixture parameters ``(B, P)``."""
        levels = self._levels(i, j)
        for level in levels:
            for op in self.ul_up[level]:
                op.at(i >> level, j >> level)
        for level in reversed(levels):
            for op in self.ul_down[level]:
                op.at(i >> level, j >> level)
        return F.linear(F.elu(self.final.raw[:, 1, j + 1]), *self.head)

    def set_pixel(self, i: int, j: int, value: torch.Tensor) -> None:
        """Write the drawn pixel ``(B, C)`` into the canvas that later rows and positions read."""
        self.pixels[:, i + 1, j + 1, :self.channels] = value
