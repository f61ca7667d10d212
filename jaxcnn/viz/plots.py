"""Figures of the viz results, as `matplotlib.figure.Figure` objects and PNG files.

Every function returns a Figure built with the object-oriented API and its own Agg canvas,
never pyplot: no global state, no display backend, safe in scripts, tests and threads. In a
notebook, a returned Figure displays itself; `save_figure` writes a PNG. The arrays behind
each figure come from the functions of `jaxcnn.viz`, so other plots are easy to make.

matplotlib is imported inside the functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Column",
    "image_grid",
    "new_figure",
    "plot_attributions",
    "plot_feature_maps",
    "plot_filters",
    "plot_top_patches",
    "save_figure",
    "unnormalize",
]

DPI = 100
# plot_top_patches: the part of a receptive field outside the image (pale red), and the lines
# between patches (blue); neither colour occurs in grey images.
OUTSIDE_RGB = (0.95, 0.75, 0.75)
SEPARATOR_RGB = (0.25, 0.45, 0.85)


def unnormalize(x, mean, std) -> np.ndarray:
    """Normalised images back to [0, 1] for display: ``clip(x * std + mean, 0, 1)``.

    Args:
      x: (..., C) images normalised as ``(img - mean) / std``.
      mean, std: per-channel (C,) values (or scalars), in [0, 1] units.
    """
    x = np.asarray(x, np.float32)
    c = x.shape[-1]
    mean = np.broadcast_to(np.asarray(mean, np.float32).reshape(-1), (c,))
    std = np.broadcast_to(np.asarray(std, np.float32).reshape(-1), (c,))
    return np.clip(x * std + mean, 0.0, 1.0)


def image_grid(
    images, ncols: int | None = None, *, pad: int = 1, pad_value: float = 1.0
) -> np.ndarray:
    """Tile (N, h, w, C) images into one (rows * (h + pad) - pad, ..., C) mosaic, row-major.

    Args:
      images: (N, h, w, C) array.
      ncols: images per row; default ceil(sqrt(N)).
      pad: pixels between tiles.
      pad_value: value of the separating pixels.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"image_grid: `images` must be (N, h, w, C), N >= 1; got {images.shape}")
    n, h, w, c = images.shape
    ncols = math.ceil(math.sqrt(n)) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"image_grid: `ncols` must be >= 1; got {ncols}")
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), pad_value, images.dtype)
    for k in range(n):
        r, q = divmod(k, ncols)
        out[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = images[k]
    return out


def new_figure(figsize: tuple[float, float]):
    """A `matplotlib.figure.Figure` with its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself to fig
    return fig


def save_figure(fig, path: str | os.PathLike, *, dpi: int = DPI) -> str:
    """Write `fig` to `path` as PNG (the directory is created); returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fig.canvas is None or not hasattr(fig.canvas, "print_png"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def _show(ax, img, **kw):
    """imshow an (h, w, C) image in [0, 1] (grey for C = 1), without axes."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest", **kw)
    else:
        ax.imshow(img, interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_filters(filters: np.ndarray, title: str | None = None, ncols: int | None = None):
    """A grid of filters in [0, 1] (what `jaxcnn.viz.filters` returns), (N, kh, kw, C).

    Returns:
      A Figure; one tile per filter, numbered.
    """
    filters = np.asarray(filters)
    if filters.ndim != 4:
        raise ValueError(f"plot_filters: `filters` must be (N, kh, kw, C); got {filters.shape}")
    n = int(filters.shape[0])
    ncols = min(n, 8) if ncols is None else ncols
    nrows = math.ceil(n / ncols)
    fig = new_figure((1.1 * ncols, 1.1 * nrows + (0.5 if title else 0.1)))
    for k in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        if k < n:
            _show(ax, filters[k])
            ax.set_title(str(k), fontsize=7, pad=2)
        else:
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_feature_maps(maps, title: str | None = None, max_maps: int = 64):
    """One image's feature maps (h, w, C), each with its own grey scale (black = its minimum).

    Returns:
      A Figure with the first `max_maps` channels, numbered.
    """
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3:
        raise ValueError(
            f"plot_feature_maps: `maps` must be one image's (h, w, C); got {maps.shape}"
        )
    c = min(maps.shape[-1], max_maps)
    ncols = min(c, 8)
    nrows = math.ceil(c / ncols)
    fig = new_figure((1.3 * ncols, 1.3 * nrows + (0.5 if title else 0.1)))
    for k in range(c):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        m = maps[..., k]
        ax.imshow(m, cmap="gray", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(k), fontsize=7, pad=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_top_patches(top, mean=0.0, std=1.0, title: str | None = None, ncols: int | None = None):
    """`top_patches`' result as in Zeiler & Fergus's Figure 2: a k-patch grid per unit.

    Args:
      top: a `TopPatches`.
      mean, std: the input normalisation, to show the patches as images.
      title: figure title; default names the layer and receptive field.
      ncols: units per row of the figure; default all in one row (up to 4).

    Returns:
      A Figure; each unit's patches best first, row-major, separated by blue lines; the
      parts of a receptive field that lie outside the image are pale red.
    """
    u, k = top.scores.shape
    ncols = min(u, 4) if ncols is None else ncols
    nrows = math.ceil(u / ncols)
    per_row = math.ceil(math.sqrt(k))
    fig = new_figure((2.6 * ncols, 2.6 * nrows + 0.6))
    for ui in range(u):
        imgs = unnormalize(top.patches[ui], mean, std)
        if imgs.shape[-1] == 1:
            imgs = np.repeat(imgs, 3, axis=-1)  # RGB, so that the markings below stand out
        imgs = np.where(top.valid[ui][..., None], imgs, np.asarray(OUTSIDE_RGB, np.float32))
        imgs = imgs[: max(1, int((top.indices[ui] >= 0).sum()))]
        # Small fields are enlarged (nearest neighbour) so that the separators stay thin.
        zoom = max(1, 32 // max(imgs.shape[1:3]))
        imgs = imgs.repeat(zoom, axis=1).repeat(zoom, axis=2)
        pad = max(1, imgs.shape[1] // 24)
        grid = image_grid(imgs, per_row, pad=pad, pad_value=0.0)
        grid = _separators(grid, imgs.shape[1:3], pad)
        ax = fig.add_subplot(nrows, ncols, ui + 1)
        _show(ax, grid)
        ax.set_title(f"unit {int(top.units[ui])} (max {top.scores[ui, 0]:.2f})", fontsize=8)
    if title is None:
        rf = "whole image" if top.geometry is None else "x".join(map(str, top.geometry.rf))
        title = f"{top.layer}: top {k} of {top.count} images per unit (receptive field {rf})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _separators(grid: np.ndarray, tile: tuple[int, int], pad: int) -> np.ndarray:
    """Colour the `pad`-wide lines between tiles of an `image_grid` mosaic."""
    grid = grid.copy()
    h, w = tile
    sep = np.asarray(SEPARATOR_RGB, np.float32)
    for r in range(h, grid.shape[0], h + pad):
        grid[r : r + pad] = sep
    for q in range(w, grid.shape[1], w + pad):
        grid[:, q : q + pad] = sep
    return grid


class Column(NamedTuple):
    """One column of `plot_attributions`.

    Attributes:
      title: column header.
      data: (N, H, W) or (N, H, W, C) per image.
      style: "heat": magnitude (max |.| over channels), hot colours, each image scaled to its
        own maximum; "signed": a projection with 0 in the middle (blue negative, red positive
        for grey inputs; 0.5 + g / 2max|g| for colour inputs); "overlay": a non-negative map
        in jet colours over the image, scaled to its own maximum unless `vmax` is given.
      vmax: fixed top of the colour scale for "overlay" (e.g. 1 for probabilities).
      captions: one short text per image, written under its cell (e.g. the map's maximum).
    """

    title: str
    data: Any
    style: str = "heat"
    vmax: float | None = None
    captions: Sequence[str] | None = None


def plot_attributions(
    images, columns: Sequence[Column], row_labels: Sequence[str] | None = None, title=None
):
    """A panel: one row per image, its input then one column per attribution method.

    Args:
      images: (N, H, W, C) in [0, 1] (see `unnormalize`).
      columns: the methods' maps, `Column`s.
      row_labels: one line per image (e.g. its true and predicted class).
      title: figure title.

    Returns:
      A Figure.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"plot_attributions: `images` must be (N, H, W, C); got {images.shape}")
    n = images.shape[0]
    ncols = 1 + len(columns)
    fig = new_figure((1.9 * ncols, 1.9 * n + (0.6 if title else 0.3)))
    for r in range(n):
        ax = fig.add_subplot(n, ncols, r * ncols + 1)
        _show(ax, images[r])
        if r == 0:
            ax.set_title("input", fontsize=9)
        if row_labels is not None:
            ax.set_ylabel(row_labels[r], fontsize=8)
        for q, col in enumerate(columns):
            ax = fig.add_subplot(n, ncols, r * ncols + q + 2)
            _draw_column(ax, col, images[r], np.asarray(col.data[r], np.float32))
            if col.captions is not None:
                ax.set_xlabel(col.captions[r], fontsize=7, labelpad=2)
            if r == 0:
                ax.set_title(col.title, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _draw_column(ax, col: Column, image: np.ndarray, d: np.ndarray) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if col.style == "heat":
        m = np.abs(d).max(axis=-1) if d.ndim == 3 else np.abs(d)
        ax.imshow(m, cmap="hot", vmin=0, vmax=max(float(m.max()), 1e-12), interpolation="nearest")
    elif col.style == "signed":
        if d.ndim == 2:
            d = d[..., None]
        s = max(float(np.abs(d).max()), 1e-12)
        if d.shape[-1] == 3:
            ax.imshow(np.clip(0.5 + d / (2 * s), 0, 1), interpolation="nearest")
        else:
            ax.imshow(d.sum(axis=-1), cmap="RdBu_r", vmin=-s, vmax=s, interpolation="nearest")
    elif col.style == "overlay":
        m = np.maximum(d.max(axis=-1) if d.ndim == 3 else d, 0)
        vmax = col.vmax if col.vmax is not None else max(float(m.max()), 1e-12)
        grey = image.mean(axis=-1)
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.imshow(m, cmap="jet", vmin=0, vmax=vmax, alpha=0.5, interpolation="bilinear")
    else:
        raise ValueError(
            f"plot_attributions: Column.style must be 'heat', 'signed' or 'overlay'; got "
            f"{col.style!r}"
        )
