"""Cached (incremental) autoregressive sampling for :class:`~ncml.models.ncpn.NCPNModel`.

Fast generation for convolutional AR models (Ramachandran et al. 2017): the naive sampler runs the whole network
once per pixel although, the network being causal, the feature of every layer at a position ``q`` depends only on
pixels before ``q``. That feature is therefore final exactly when pixel ``q`` is about to be drawn, and it never
changes afterwards. :class:`NCPNCache` keeps, per layer, the part of its output that later positions read and
computes each layer only where it becomes final. The network's topology is ``NCPNModel._walk`` (the one that
``forward`` runs) and every layer has an incremental form (``GatedResnet.rows`` / ``.positions``,
``CausalAxialAttention.positions``, the input, resampling and head steps of :mod:`ncml.models.ncpn`); this module
holds the state they read and write — the canvas, two rows of every layer's output — and drives them:

* the ``u`` stream sees rows strictly above, so all its layers are computed **one whole row at a time**, at the
  start of each image row (2×3 convolutions on the two rows they read);
* the ``ul`` stream is computed **one position at a time**, but every 2-row kernel is split into its two kernel
  rows: the top one reads the previous row, which is final when a row starts, so it is applied to the whole row at
  once (with the biases, the embedding ``W·h`` and the ``nin`` skip from the ``u`` stream) in the row's
  preparation step; per position only the bottom kernel row remains (half of the arithmetic, in one matrix product
  per convolution, straight from the stored rows — no copies);
* the strided layers follow the resolution: level ``l`` (``H → ⌈H/2⌉ → ⌈H/4⌉``) position ``(r, c)`` is computed at
  the step of full-resolution pixel ``(2^l r, 2^l c)`` (its stride-2 down-sampling reads level ``l − 1`` at rows
  ``2r − 1 … 2r``), and the stride-2 transposed convolutions read level ``l + 1`` at ``(⌊r/2⌋, ⌊c/2⌋)`` only;
* every read of a layer's map at row ``r`` (of its level) touches rows ``r − 1`` and ``r`` only, so a map keeps just
  these two rows (:class:`FeatureMap`);
* the causal axial attention keeps per-layer keys/values: the current row's (row attention, keys ``j' ≤ j``) and
  every column's (column attention, keys ``i' ≤ i``); its LayerNorm is per position, so it needs no cache;
* the weight-normalised weights (split, transposed and with the LayerNorm's affine and the attention scales folded
  in), the embedding ``h`` of ``(t, class)`` and its projections inside every gated resnet are computed once per
  sampling call.

Per position the work is a fixed sequence of small kernels on preallocated buffers: every per-position view of a
row (a position's slot, its 2-column window, its keys and values) is built once per sampling call, and results are
written in place (``out=``), so a step creates almost no Python objects. Each pixel then costs about ``1 / (H·W)``
of a forward pass plus about 30 kernel calls per gated resnet with attention at full resolution (fewer at the
coarser levels). The arithmetic is the network's own, summed in another order, so cached and naive sampling agree
to rounding (tests compare the mixture parameters of every position and the samples themselves). Dropout is not
applied (as in ``eval()``): a sampler that drew dropout masks could not be reproduced from the sampling generator.

Memory: two rows per layer (and the top-row partial sums of every ``ul`` convolution) plus the column keys/values
of every attention layer (``2·B·C·H·W`` each) — for the paper's CIFAR-10 model at batch 16 in float32 about
0.35 GiB, plus one copy of the weight-normalised weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F


# ---- state --------------------------------------------------------------------------------------------
class Canvas:
    """The network's input: the pixels set so far and a channel of ones (zero in the padding), channels-last.

    ``pixels`` ``(B, H + 1, W + 2, C + 1)`` is padded like a :class:`FeatureMap` and by one row on top: pixel
    ``(i, j)`` lives at ``[:, i + 1, j + 1]``. The whole canvas is kept (the input convolutions read two rows above).
    """

    def __init__(self, x: torch.Tensor):
        batch, channels, height, width = x.shape
        self.channels, self.height, self.width, self.level = channels, height, width, 0
        self.pixels = x.new_zeros(batch, height + 1, width + 2, channels + 1)
        self.pixels[:, 1:, 1:width + 1, :channels] = x.permute(0, 2, 3, 1)
        self.pixels[:, 1:, 1:width + 1, channels] = 1

    def set_pixel(self, i: int, j: int, value: torch.Tensor) -> None:
        """Write pixel ``(i, j)``: ``value`` ``(B, C)``."""
        self.pixels[:, i + 1, j + 1, :self.channels] = value


class FeatureMap:
    """One layer's output at one resolution ``(H_l, W_l)`` (level ``l``), filled in raster order; two rows are kept.

    Every reader of a map needs its current row ``r`` and the row above: the 2-row convolutions, the skips, the
    stride-2 down-sampling (it reads rows ``2r − 1, 2r`` of the finer map while that map is at row ``2r``) and the
    up-sampling (it reads row ``⌊r/2⌋`` of the coarser map, which is still that map's current row). Index 0 holds
    the previous row, index 1 the current one; :meth:`advance` (or writing a whole new row) moves the current row up.
    Before row 0 the previous row is zero: the top padding of the shifted convolutions.

    Rows are stored channels-last (a position's window is then a contiguous run) and zero-padded by one column on
    each side (the padding of the shifted convolutions): data column ``c`` lives at ``c + 1``. ``raw``
    ``(B, 2, W_l + 2, C)`` holds the values, ``elu`` ``(B, 2, W_l + 2, 2C)`` their ``concat_elu`` — the input of
    every convolution and ``nin`` skip reading this layer (``concat_elu(0) = 0``, so the padding stays valid).

    The views of the current row that the position steps read and write are built once (lists indexed by the data
    column ``c``): ``raw_at[c]`` ``(B, C)``, ``elu_at[c]`` ``(B, 2C)``, ``window[c]`` ``(B, 2·2C)`` — the
    ``concat_elu`` of columns ``c − 1, c``, i.e. the bottom row of a down-right-shifted 2×2 window — and
    ``top_windows`` ``(B, W_l, 2·2C)``, the same windows on the previous row for every column at once.
    """

    def __init__(self, like: torch.Tensor, channels: int, height: int, width: int, *, level: int,
                 keep_raw: bool = True):
        batch = like.shape[0]
        self.channels, self.height, self.width, self.level = channels, height, width, level
        self.row = 0  # the current row
        self.raw = like.new_zeros(batch, 2, width + 2, channels) if keep_raw else None
        self.elu = like.new_zeros(batch, 2, width + 2, 2 * channels)
        self._sign = like.new_tensor([1.0, -1.0]).view(2, 1)  # [x, −x] in one product

    # the views, built on first use (maps of the u stream, written a row at a time, need none of them)
    @functools.cached_property
    def elu_at(self) -> list[torch.Tensor]:
        return [self.elu[:, 1, c + 1] for c in range(self.width)]

    @functools.cached_property
    def window(self) -> list[torch.Tensor]:
        return [self.elu[:, 1, c:c + 2].flatten(1) for c in range(self.width)]  # a view: the columns are adjacent

    @functools.cached_property
    def top_windows(self) -> torch.Tensor:
        previous = self.elu[:, 0]
        return previous.as_strided((previous.shape[0], self.width, 4 * self.channels),
                                   (previous.stride(0), 2 * self.channels, 1), previous.storage_offset())

    @functools.cached_property
    def raw_at(self) -> list[torch.Tensor]:
        return [self.raw[:, 1, c + 1] for c in range(self.width)]

    @functools.cached_property
    def _elu_pairs(self) -> list[torch.Tensor]:
        return [e.view(e.shape[0], 2, self.channels) for e in self.elu_at]

    @functools.cached_property
    def _raw_rows(self) -> list[torch.Tensor]:
        return [self.raw[:, 1, c + 1:c + 2] for c in range(self.width)]  # (B, 1, C)

    def advance(self, r: int) -> None:
        """Make row ``r`` the current one (``r`` is the current row or the next)."""
        if r != self.row:
            assert r == self.row + 1, f"rows must be filled in order: row {r} after row {self.row}"
            for buffer in (self.raw, self.elu):
                if buffer is not None:
                    buffer[:, 0] = buffer[:, 1]
            self.row = r

    def set_row(self, r: int, value: torch.Tensor) -> None:
        """Store row ``r``: ``value`` ``(B, W_l, C)``."""
        self.advance(r)
        if self.raw is not None:
            self.raw[:, 1, 1:self.width + 1] = value
        self.elu[:, 1, 1:self.width + 1] = _concat_elu(value)

    def activate(self, c: int) -> None:
        """Set the ``concat_elu`` of column ``c`` of the current row from ``raw_at[c]`` (written by the step that
        computed the position): ``[x, −x]`` in one product, then ``elu`` in place."""
        pair = self._elu_pairs[c]
        torch.mul(self._raw_rows[c], self._sign, out=pair)
        F.elu_(pair)

    def raw_row(self) -> torch.Tensor:
        return self.raw[:, 1, 1:self.width + 1]  # (B, W_l, C): the current row


def _concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``elu([x, −x])`` along the channels, here the last dim (the PixelCNN++ nonlinearity before every conv)."""
    return F.elu(torch.cat([x, -x], dim=-1))


def half(size: int) -> int:
    """Size after a stride-2 down-sampling (rounds up)."""
    return (size + 1) // 2


# ---- the driver -----------------------------------------------------------------------------------------
class IncrementalNetwork(Protocol):
    """What ``NCPNModel.incremental_steps`` returns: the network's steps in its own order, each with the level of
    the map it writes: row steps (the ``u`` stream, ``step(r)``), position steps (the ``ul`` stream: a preparation
    ``start(r)`` at the start of each of its rows — after the row steps of that row — and ``at(r, c)``), and the
    head (``head(c)``: the mixture parameters ``(B, P)`` at column ``c`` of the current full-resolution row)."""

    rows: list[tuple[int, Callable[[int], None]]]
    positions: list[tuple[int, Callable[[int], None], Callable[[int, int], None]]]
    head: Callable[[int], torch.Tensor]


class NCPNCache:
    """Incremental evaluation of ``NCPNModel.network`` in raster order.

    Usage (under ``torch.no_grad()``): for every row ``i`` call :meth:`start_row` once, then for every column ``j``
    :meth:`params_at` (which returns the mixture parameters of pixel ``(i, j)``, a new tensor) and, once the pixel is
    drawn, :meth:`set_pixel`. Positions of the canvas not yet reached are never read, so ``x`` may hold anything
    there.

    Args:
        model: the backbone.
        x: ``(B, C, H, W)`` the canvas (copied).
        h: ``(B, E)`` ``model.conditioning(t, class_labels, dtype)`` = ``silu(embedding(t, class_labels))``.
    """

    @torch.no_grad()
    def __init__(self, model, x: torch.Tensor, h: torch.Tensor):
        self.canvas = Canvas(x)
        self.network: IncrementalNetwork = model.incremental_steps(self.canvas, h)
        self.max_level = max(level for level, _ in self.network.rows)
        levels = range(self.max_level + 1)
        # per coarsest level present at a pixel: the steps that run there, with their level
        self._rows = [[(lv, step) for lv, step in self.network.rows if lv <= top] for top in levels]
        self._starts = [[(lv, start) for lv, start, _ in self.network.positions if lv <= top] for top in levels]
        self._positions = [[(lv, at) for lv, _, at in self.network.positions if lv <= top] for top in levels]
        # per full-resolution coordinate v: the coarsest level with a position there (2^l divides v)
        self._levels = [next(lv for lv in reversed(levels) if v % 2**lv == 0)
                        for v in range(max(self.canvas.height, self.canvas.width))]

    def start_row(self, i: int) -> None:
        """Compute the ``u`` stream at image row ``i`` (every level with a row there) and the row-wide part of the
        ``ul`` stream's convolutions; rows ``< i`` must be set."""
        top = self._levels[i]
        for level, step in self._rows[top]:
            step(i >> level)
        for level, start in self._starts[top]:
            start(i >> level)

    def params_at(self, i: int, j: int) -> torch.Tensor:
        """Advance the ``ul`` stream to pixel ``(i, j)`` and return its mixture parameters ``(B, P)``."""
        for level, step in self._positions[min(self._levels[i], self._levels[j])]:
            step(i >> level, j >> level)
        return self.network.head(j)

    def set_pixel(self, i: int, j: int, value: torch.Tensor) -> None:
        """Write the drawn pixel ``(B, C)`` into the canvas that later rows and positions read."""
        self.canvas.set_pixel(i, j, value)
