"""What evaluation shows a person: plain-text tables, image grids (PIL) and figures (matplotlib, optional).

Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot global state, no
display needed); matplotlib is imported only when a figure is asked for (``pip install 'ncml[plots]'``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

__all__ = ["format_table", "make_grid", "plot_robustness", "plot_ood_histograms", "plot_bits_per_dim"]


def format_table(head: list[str], rows: list[list[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(r):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, rows)])


def make_grid(images, *, nrow: int | None = None, padding: int = 2, pad_value: int = 0, scale: int = 1):
    """Tile uint8 images ``(N, H, W, C)`` (C = 1 or 3) into one ``PIL.Image`` (mode ``"L"`` or ``"RGB"``).

    ``nrow`` images per row (default ``ceil(sqrt(N))``), ``padding`` pixels of ``pad_value`` between and
    around them, and an integer nearest-neighbour upscaling ``scale`` (small digits are hard to see).
    """
    from PIL import Image

    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images must have dtype uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[3] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N >= 1, H, W, 1 or 3), got {images.shape}")
    for name, v, lo in (("padding", padding, 0), ("scale", scale, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    n, h, w, c = images.shape
    nrow = math.ceil(math.sqrt(n)) if nrow is None else nrow
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be an int >= 1, got {nrow!r}")
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    ncol, nrows = min(nrow, n), math.ceil(n / nrow)
    grid = np.full((padding + nrows * (h + padding), padding + ncol * (w + padding), c), pad_value, dtype=np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = im
    return Image.fromarray(grid[..., 0] if c == 1 else grid, mode="L" if c == 1 else "RGB")


def _figure(ncols: int = 1, *, width: float = 4.5, height: float = 3.5):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plots need matplotlib, which is not installed: pip install 'ncml[plots]' "
                          "(or matplotlib>=3.7)") from e
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path


def _time_axis(ax, ts: np.ndarray, values: np.ndarray, label: str, **style) -> None:
    """Plot ``values`` against ``t > 0`` on a log axis; ``t = 0`` (no place on a log axis) as a dotted line."""
    pos = ts > 0
    line = None
    if pos.any():
        (line,) = ax.plot(ts[pos], values[pos], marker="o", label=label, **style)
        ax.set_xscale("log")
    if (~pos).any():
        color = line.get_color() if line is not None else None
        ax.axhline(values[~pos][0], linestyle=":", color=color, label=f"{label} at t = 0")
    ax.set_xlabel("t (SDE time)")


def plot_robustness(result, path: str | os.PathLike, *, title: str | None = None,
                    baselines: dict | None = None) -> Path:
    """Fig. 4: Δlog p (bits/dim) against ``t``, one panel per π > 0 (0.5 and 1 in the paper); writes a PNG.

    ``baselines`` maps a label to another model's :class:`RobustnessResult`; its Δlog p at ``t = 0`` is drawn
    as a dashed grey line (the paper's "next lowest Δlog p" line), so it must hold ``t = 0`` and the π.
    """
    pis = [p for p in result.pis if p > 0]
    if not pis:
        raise ValueError("result has no π > 0 to plot")
    baselines = dict(baselines or {})
    for label, other in baselines.items():
        if 0.0 not in other.ts or any(p not in other.pis for p in pis):
            raise ValueError(f"baselines[{label!r}] must hold t = 0 and π in {pis}; it has ts={other.ts}, "
                             f"pis={other.pis}")
    fig, axes = _figure(len(pis))
    ts = np.asarray(result.ts)
    for ax, p in zip(axes, pis):
        j = result.pis.index(p)
        _time_axis(ax, ts, result.delta[:, j], "Δlog p")
        for k, (label, other) in enumerate(baselines.items()):
            value = other.delta[other.ts.index(0.0), other.pis.index(p)]
            ax.axhline(value, linestyle=("--", "-.", (0, (5, 1, 1, 1)))[k % 3], color="grey",
                       label=f"{label} at t = 0")
        if (result.delta[:, j] > 0).all():  # t = 0 and t > 0 differ by orders of magnitude (Fig. 4)
            ax.set_yscale("log")
        ax.set_ylabel("Δlog p (bits/dim)")
        ax.set_title(f"π = {p:g}")
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_bits_per_dim(ts, curves: dict[str, np.ndarray], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """NLL (bits/dim) against ``t`` for each named curve (e.g. clean vs noised); writes a PNG."""
    fig, (ax,) = _figure(1)
    ts = np.asarray(ts, dtype=float)
    for label, values in curves.items():
        _time_axis(ax, ts, np.asarray(values, dtype=float), label)
    ax.set_ylabel("NLL (bits/dim)")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_ood_histograms(result, path: str | os.PathLike, *, in_name: str = "in-distribution",
                        out_name: str = "out-of-distribution", bins: int = 30) -> Path:
    """Histograms of the OOD statistic for the in- and out-of-distribution sets, AUROC in the title; a PNG."""
    fig, (ax,) = _figure(1, width=5.5)
    lo = min(result.scores_in.min(), result.scores_out.min())
    hi = max(result.scores_in.max(), result.scores_out.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    ax.hist(result.scores_in, bins=edges, alpha=0.6, label=f"{in_name} (n={len(result.scores_in)})")
    ax.hist(result.scores_out, bins=edges, alpha=0.6, label=f"{out_name} (n={len(result.scores_out)})")
    ax.set_xlabel(f"statistic: {result.statistic} (bits/dim)")
    ax.set_ylabel("images")
    ax.set_title(f"AUROC = {result.auroc:.4f}")
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_confusion(labels, predictions, num_classes: int, path: str | os.PathLike, *,
                   title: str | None = None) -> Path:
    """The confusion matrix (rows: true class, columns: predicted; counts in the cells) as a PNG."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels and predictions must be 1-D of one length, got {labels.shape} and "
                         f"{predictions.shape}")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    fig, (ax,) = _figure(1, width=4.5, height=4.0)
    ax.imshow(counts, cmap="Blues")
    for i in range(num_classes):
        for j in range(num_classes):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize="x-small",
                        color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xticks(range(num_classes))
    ax.set_yticks(range(num_classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"accuracy {np.mean(labels == predictions):.4f} (n={len(labels)})", fontsize="small")
    return _save(fig, path)
