"""The dataset patches that excite a unit most (Zeiler & Fergus, 2014, Figure 2).

`top_patches` streams a dataset through the network once, batch by batch (one jitted
function computes, for every image and every requested unit, the unit's largest activation
over the map and where it is), keeps the k best images per unit on the host, and crops from
each the input region the unit at that position sees: its receptive field, from the layer
geometry of `jaxcnn.summary` (`receptive_field`). Fields that extend past the image (into a
convolution's zero padding) are clipped to it; in the fixed-size `patches` array the part
outside the image is left at `fill` and marked in `valid`.

One patch per image: a unit's maximum over its map, as in the paper's figures, so the k
patches of a unit come from k different images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ..analysis import Geometry
from . import activations as _act

__all__ = ["TopPatches", "top_patches"]


@dataclasses.dataclass(frozen=True)
class TopPatches:
    """The k inputs that activate each of U units most, best first (host arrays).

    Attributes:
      layer: the layer's module path.
      units: (U,) the channels (units) of the layer.
      scores: (U, k) the activations, descending; -inf where fewer than k images were seen.
      indices: (U, k) index of each image in the stream: its position counting every example
        of every batch, masked ones included (for an evaluation loader, the index in the
        evaluation split); -1 where empty.
      positions: (U, k, 2) (row, col) of the unit in the layer's map (0, 0 for a fully
        connected layer).
      windows: (U, k, 2, 2) the input window ``[[row0, row1], [col0, col1]]`` (half-open)
        each patch was cropped from, clipped to the image.
      patches: (U, k, rf_h, rf_w, C) the receptive fields, as in the input (normalised); pixels
        of the field outside the image hold `fill`.
      valid: (U, k, rf_h, rf_w) True where the patch pixel lies inside the image.
      geometry: the layer's `Geometry` (None for a fully connected layer: the whole image).
      count: how many (unmasked) images were scanned.
    """

    layer: str
    units: np.ndarray
    scores: np.ndarray
    indices: np.ndarray
    positions: np.ndarray
    windows: np.ndarray
    patches: np.ndarray
    valid: np.ndarray
    geometry: Geometry | None
    count: int

    def crop(self, unit: int, rank: int) -> np.ndarray:
        """The `rank`-th patch of the `unit`-th unit (indices into `units`), clipped to the image:
        (rows, cols, C), smaller than the receptive field at the image's borders."""
        rows = np.flatnonzero(self.valid[unit, rank].any(axis=1))
        cols = np.flatnonzero(self.valid[unit, rank].any(axis=0))
        if rows.size == 0:
            return self.patches[unit, rank, :0, :0]
        p = self.patches[unit, rank]
        return p[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _unit_maxima_impl(model, layer, variables, x, units):
    """(N, U) largest activation of each unit over its map, and the flat position of it."""
    _, a = _act.forward(model, variables, x, layer, fn="top_patches")
    assert a is not None  # forward returns a named layer's output (or raises)
    a = jnp.take(a, units, axis=-1)
    if a.ndim == 2:
        return a, jnp.zeros(a.shape, jnp.int32)
    n, h, w, u = a.shape
    flat = a.reshape(n, h * w, u)
    return jnp.max(flat, axis=1), jnp.argmax(flat, axis=1).astype(jnp.int32)


_unit_maxima = jax.jit(_unit_maxima_impl, static_argnums=(0, 1))


def _images_and_mask(batch: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise ValueError(
                f"top_patches: {where} is a mapping without an 'image' entry; got keys "
                f"{sorted(batch)}"
            )
        images = np.asarray(batch["image"])
        mask = batch.get("mask")
        mask = np.ones(images.shape[:1], bool) if mask is None else np.asarray(mask).astype(bool)
    else:
        images = np.asarray(batch)
        mask = np.ones(images.shape[:1], bool)
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"top_patches: {where} must hold float images (N, H, W, C); got "
            f"{images.dtype} array of shape {images.shape}"
        )
    if mask.shape != images.shape[:1]:
        raise ValueError(
            f"top_patches: {where}'s mask has shape {mask.shape}; expected ({images.shape[0]},)"
        )
    return images, mask


def top_patches(
    model: nn.Module,
    variables,
    batches: Iterable[Any],
    layer: str,
    units: Sequence[int],
    k: int = 9,
    *,
    max_images: int | None = None,
    fill: float = 0.0,
) -> TopPatches:
    """The `k` dataset patches that activate each of `units` of `layer` most.

    Args:
      model: a linen Module taking ``(x, train=False)``; any registered model.
      variables: its variables.
      batches: an iterable of batches, each an (N, H, W, C) float array or a mapping with
        "image" (and optionally "mask": examples with mask 0, the padding of an evaluation
        loader's last batch, are skipped), all of the same image size. E.g.
        ``jaxcnn.data.create_datasets(...).eval``. Read once, in order.
      layer: module path, e.g. "conv1", "features.10", "layer3.1".
      units: channels of the layer to rank images for.
      k: patches per unit.
      max_images: stop after this many (unmasked) images; None: the whole stream.
      fill: value of patch pixels outside the image (in the input's normalised space).

    Returns:
      `TopPatches`.

    Raises:
      ValueError: unknown `layer` (listing the valid ones), units out of range, an empty
        stream, or batches of varying image size.
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"top_patches: `k` must be a positive int; got {k!r}")
    if max_images is not None and (not isinstance(max_images, int | np.integer) or max_images < 1):
        raise ValueError(
            f"top_patches: `max_images` must be None or an int >= 1; got {max_images!r}"
        )
    units_arr = np.asarray(units)
    if units_arr.ndim != 1 or units_arr.size == 0 or not np.issubdtype(units_arr.dtype, np.integer):
        raise ValueError(
            f"top_patches: `units` must be a non-empty sequence of ints; got {units!r}"
        )
    it = iter(batches)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("top_patches: `batches` is empty") from None
    images, mask = _images_and_mask(first, "the first batch")
    bsize, h, w, c = images.shape
    shape = _act.checked_layer_shape(model, layer, (1, h, w, c), "top_patches")
    if len(shape) not in (2, 4):
        raise ValueError(
            f"top_patches: layer {layer!r} has output shape {shape}; expected (N, h, w, C) "
            "or (N, F)"
        )
    nu = shape[-1]
    if units_arr.min() < 0 or units_arr.max() >= nu:
        raise ValueError(
            f"top_patches: `units` must lie in [0, {nu}) for layer {layer!r} (output "
            f"{shape}); got {units_arr.tolist()}"
        )
    if len(shape) == 4:
        geom = _act.receptive_field(model, layer, (1, h, w, c))
        if geom is None:
            raise ValueError(
                f"top_patches: layer {layer!r}'s units are not sliding windows of the input "
                "(no receptive field is known), so there is no patch to crop"
            )
        rf = geom.rf
        map_w = shape[2]
    else:
        geom, rf, map_w = None, (h, w), 1

    u_count = units_arr.size
    scores = np.full((u_count, k), -np.inf, np.float32)
    indices = np.full((u_count, k), -1, np.int64)
    positions = np.zeros((u_count, k, 2), np.int64)
    windows = np.zeros((u_count, k, 2, 2), np.int64)
    patches = np.full((u_count, k, rf[0], rf[1], c), fill, np.float32)
    valid = np.zeros((u_count, k, rf[0], rf[1]), bool)
    units_dev = jnp.asarray(units_arr.astype(np.int32))

    seen = 0  # unmasked examples scanned
    offset = 0  # examples before this batch, masked ones included
    batch, where, number = first, "the first batch", 1
    while batch is not None:
        images, mask = _images_and_mask(batch, where)
        if images.shape[1:] != (h, w, c):
            raise ValueError(
                f"top_patches: {where} holds images of shape {images.shape[1:]}; the first "
                f"batch's were {(h, w, c)} (all batches must share one image size)"
            )
        n = images.shape[0]
        if max_images is not None:
            # Keep only as many unmasked images as are still wanted.
            mask = mask & (np.cumsum(mask) <= max_images - seen)
        if n < bsize:  # pad to the first batch's size: one compilation for the whole stream
            images = np.concatenate([images, np.zeros((bsize - n, h, w, c), images.dtype)])
            mask = np.concatenate([mask, np.zeros(bsize - n, bool)])
        vals, pos = _unit_maxima(model, layer, variables, jnp.asarray(images), units_dev)
        vals, pos = np.asarray(vals, np.float32), np.asarray(pos)
        keep = np.flatnonzero(mask)
        stream_idx = offset + keep
        for ui in range(u_count):
            cand = vals[keep, ui]
            cand = np.where(np.isnan(cand), -np.inf, cand)
            if cand.size == 0 or cand.max() <= scores[ui, -1]:
                continue  # nothing here beats the current k-th (ties keep the earlier image)
            # Stable sort of (current best, this batch): on ties the earlier image stays ahead.
            merged = np.concatenate([scores[ui], cand])
            order = np.argsort(-merged, kind="stable")[:k]
            prev = [a[ui].copy() for a in (indices, positions, windows, patches, valid)]
            for slot, o in enumerate(order):
                scores[ui, slot] = merged[o]
                if o < k:  # an earlier image keeps its patch
                    for a, p in zip(
                        (indices, positions, windows, patches, valid), prev, strict=True
                    ):
                        a[ui, slot] = p[o]
                    continue
                b = keep[o - k]
                i, j = divmod(int(pos[b, ui]), map_w)
                patch, ok, win = _crop(images[b], geom, i, j, rf, fill)
                indices[ui, slot] = stream_idx[o - k]
                positions[ui, slot] = (i, j)
                windows[ui, slot] = win
                patches[ui, slot] = patch
                valid[ui, slot] = ok
        seen += keep.size
        offset += n
        if max_images is not None and seen >= max_images:
            break
        try:
            batch, where = next(it), f"batch {number}"
            number += 1
        except StopIteration:
            batch = None
    if seen == 0:
        raise ValueError("top_patches: every example of `batches` is masked out")
    return TopPatches(
        layer=layer,
        units=units_arr.astype(np.int64),
        scores=scores,
        indices=indices,
        positions=positions,
        windows=windows,
        patches=patches,
        valid=valid,
        geometry=geom,
        count=seen,
    )


def _crop(image: np.ndarray, geom: Geometry | None, i: int, j: int, rf, fill: float):
    """The receptive field of unit (i, j) in `image`, in an rf-sized canvas, and its validity."""
    h, w, c = image.shape
    if geom is None:
        (r0, r1), (c0, c1) = (0, h), (0, w)
    else:
        (r0, r1), (c0, c1) = geom.window(i, j)
    canvas = np.full((rf[0], rf[1], c), fill, np.float32)
    ok = np.zeros((rf[0], rf[1]), bool)
    rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    if rr0 < rr1 and cc0 < cc1:
        canvas[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = image[rr0:rr1, cc0:cc1]
        ok[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = True
    return canvas, ok, np.array([[rr0, rr1], [cc0, cc1]])
