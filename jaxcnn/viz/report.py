"""The standard figures of a trained run, written as PNG files: `report(workdir)`.

`report` reloads a run written by `jaxcnn.training.train_and_evaluate` (its newest or best
checkpoint through `jaxcnn.training.load_run`, and its evaluation data from the "data"
section of its ``config.json`` through `jaxcnn.data.create_datasets`) and draws, with the
other `jaxcnn.viz` functions, what Zeiler and Fergus show of a network:

* ``filters.png``: the first convolution's filters, each normalised on its own (grey or
  colour as the input); ``filters_<layer>.png``: the second convolution's, summed over
  their input channels.
* ``feature_maps_<layer>.png``: the first test image's activations at the first
  visualised layer.
* ``top_patches_<layer>.png`` for three layers of increasing depth (default: the first,
  middle and last convolutions; a network with fewer, such as LeNet-5 with two, adds its
  first fully connected layer, whose "patches" are whole images): for each of the first
  `num_units` units, the `k` evaluation-set patches (receptive fields) that activate it
  most, as in Zeiler & Fergus's Figure 2.
* ``attributions.png``: for `num_images` test images (distinct classes where possible),
  with respect to the true class: gradient saliency, deconvnet, guided backprop, Grad-CAM
  (at `gradcam_layer`) and occlusion sensitivity (drop of the true class's probability).

Images are shown un-normalised (x * std + mean, with the run's mean and std).
`python -m train.visualize --workdir=DIR` is the same from the command line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from .activations import feature_maps, layer_shapes
from .attribution import deconvnet, grad_cam, guided_backprop, occlusion, saliency
from .filters import conv_kernels, filters
from .patches import top_patches
from .plots import (
    Column,
    plot_attributions,
    plot_feature_maps,
    plot_filters,
    plot_top_patches,
    save_figure,
    unnormalize,
)

__all__ = ["report"]


def _check_int(name: str, value: Any, minimum: int) -> int:
    """`value` as an int of at least `minimum`, or a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"report: `{name}` must be an int >= {minimum}; got {value!r}")
    return int(value)


def _check_names(name: str, value: Any) -> list[str] | None:
    """`value` (None or a sequence of layer names) as a list, or a TypeError naming `name`."""
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        example = "['conv1', 'conv2']"
        raise TypeError(
            f"report: `{name}` must be None or a sequence of layer names such as {example}; "
            f"got {value!r}"
        )
    return list(value)


def _default_layers(model: Any, input_shape: tuple[int, int, int, int]) -> tuple[list[str], str]:
    """Three layers of increasing depth for the top patches, and the layer for Grad-CAM.

    Top patches: the first, middle and last convolutions (one per receptive field), ranked
    on their outputs before the nonlinearity, which do not saturate (a tanh or a pool after
    it would tie many images at 1.0); a network with fewer than three convolutions (LeNet-5)
    gets its first fully connected layer(s) added, whose patches are whole images. Grad-CAM:
    the last convolution whose map is at least 2x2.
    """
    from ..analysis import summary

    convs, fcs, last = [], [], None
    for row in summary(model, input_shape=input_shape).layers:
        if "Conv" in row.kind and row.geometry is not None and len(row.output_shape) == 4:
            if row.geometry != last:
                convs.append(row)
            last = row.geometry
        elif row.kind == "Dense" and len(row.output_shape) == 2 and row.macs > 0:
            fcs.append(row)
    picked = _pick_depths([r.name for r in convs])
    picked += [r.name for r in fcs[: 3 - len(picked)]]
    spatial = [r.name for r in convs if min(r.output_shape[1:3]) >= 2]
    return picked, (spatial[-1] if spatial else picked[-1])


def _pick_depths(candidates: list[str], n: int = 3) -> list[str]:
    """`n` layers spread from the first to the last of `candidates` (all if there are fewer)."""
    if len(candidates) <= n:
        return list(candidates)
    idx = sorted({round(i * (len(candidates) - 1) / (n - 1)) for i in range(n)})
    return [candidates[i] for i in idx]


def _pick_images(labels: Any, mask: Any, count: int) -> list[int]:
    """Indices of `count` unmasked examples, distinct labels first, in data order."""
    valid = [i for i in range(len(labels)) if mask[i]]
    chosen, seen = [], set()
    for i in valid:
        if int(labels[i]) not in seen:
            chosen.append(i)
            seen.add(int(labels[i]))
        if len(chosen) == count:
            return chosen
    rest = [i for i in valid if i not in chosen]
    return sorted(chosen + rest[: count - len(chosen)])


def report(
    workdir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    best: bool = False,
    layers: Sequence[str] | None = None,
    num_units: int = 6,
    k: int = 9,
    num_images: int = 4,
    max_images: int = 0,
    gradcam_layer: str | None = None,
) -> list[str]:
    """Write the standard figures of a trained run as PNG files (see the module docstring).

    Args:
      workdir: a run directory written by `jaxcnn.training.train_and_evaluate` (or
        ``python -m train``): its ``config.json`` and checkpoints.
      out_dir: where to write the PNGs (created if missing); None: ``<workdir>/viz``.
      best: use the best checkpoint (``<workdir>/best``) instead of the newest.
      layers: module paths of the layers for the top patches, e.g. ``["conv1", "conv2"]``;
        None or empty: three at increasing depth (see the module docstring). The first is
        also the layer of the feature-map figure.
      num_units: units (channels) per layer for the top patches, the first ones (fewer if
        the layer has fewer).
      k: patches per unit.
      num_images: test images in the attribution figure, taken from the first evaluation
        batch (fewer if it has fewer).
      max_images: scan at most this many evaluation images for the top patches; 0: all.
      gradcam_layer: module path of the layer for Grad-CAM; None: the last convolution whose
        map is at least 2x2.

    Returns:
      The paths written, in order: ``filters.png``, ``filters_<layer>.png`` (with two or
      more convolutions), one ``top_patches_<layer>.png`` per layer,
      ``feature_maps_<layer>.png`` (when the first layer has a spatial map) and
      ``attributions.png``.

    Raises:
      FileNotFoundError: `workdir` holds no ``config.json`` (missing, empty, or not a
        training run), or no checkpoint (of the kind `best` asks for).
      ValueError: an unknown layer in `layers` or `gradcam_layer` (listing the model's
        layers; checked before anything is written), a count out of range, an unreadable
        ``config.json`` (`jaxcnn.training.ConfigError`), or an empty evaluation split.
      TypeError: `layers` is a string or holds something other than strings.
    """
    import jax

    from ..data import create_datasets
    from ..training import load_run
    from ..training.config import read_saved_config

    num_units = _check_int("num_units", num_units, 1)
    k = _check_int("k", k, 1)
    num_images = _check_int("num_images", num_images, 1)
    max_images = _check_int("max_images", max_images, 0)
    layers = _check_names("layers", layers)
    if gradcam_layer is not None and not isinstance(gradcam_layer, str):
        raise TypeError(
            f"report: `gradcam_layer` must be None or a layer name; got {gradcam_layer!r}"
        )

    workdir = os.path.abspath(os.fspath(workdir))
    out = os.path.join(workdir, "viz") if out_dir is None else os.fspath(out_dir)
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"report: `workdir`: {config_path} not found (expected a run directory written "
            "by jaxcnn.training.train_and_evaluate or python -m train)"
        )
    cfg = read_saved_config(config_path)
    model, variables, info = load_run(workdir, best=best)
    mean, std = info["mean"], info["std"]
    # One process, no worker processes: this is a small read-only pass over the eval split.
    data_cfg = dict(cfg["data"], worker_count=0)
    data = create_datasets(
        data_cfg,
        seed=int(cfg.get("seed", 0)),
        batch_size=int(cfg["batch_size"]),
        eval_batch_size=int(cfg["eval_batch_size"]),
        process_index=0,
        process_count=1,
    )
    h, w, c = data.image_shape
    shape = (1, h, w, c)
    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        written.append(save_figure(fig, os.path.join(out, name)))

    # The layers to show, checked before anything is written.
    auto_layers, auto_cam = _default_layers(model, shape)
    layers = layers or auto_layers
    cam_layer = gradcam_layer or auto_cam
    known = layer_shapes(model, shape)
    for arg, names in (("layers", layers), ("gradcam_layer", [cam_layer])):
        for name in names:
            if name not in known:
                raise ValueError(
                    f"report: `{arg}`: {info['model']} has no layer {name!r}; its layers "
                    "are: " + ", ".join(known)
                )

    # Filters: the first convolution as images; the second summed over its inputs.
    kernels = list(conv_kernels(variables))
    first = kernels[0]
    save(
        plot_filters(filters(variables, first), f"{info['model']} {first}: filters"),
        "filters.png",
    )
    if len(kernels) > 1:
        second = kernels[1]
        fil = filters(variables, second, sum_channels=True)
        title = f"{second}: filters summed over input channels"
        save(plot_filters(fil, title), f"filters_{second}.png")

    # Top patches at three depths.
    for layer in layers:
        n_units = min(num_units, known[layer][-1])
        top = top_patches(
            model,
            variables,
            data.eval,
            layer,
            list(range(n_units)),
            k,
            max_images=max_images or None,
        )
        save(
            plot_top_patches(top, mean, std, ncols=min(n_units, 3)),
            f"top_patches_{layer}.png",
        )

    # The test images of the panels.
    batch = next(iter(data.eval))
    idx = _pick_images(batch["label"], batch["mask"], num_images)
    x = jax.numpy.asarray(batch["image"][idx])
    labels = np.asarray(batch["label"][idx]).astype(np.int32)
    shown = unnormalize(np.asarray(x), mean, std)

    fmaps = np.asarray(feature_maps(model, variables, x[:1], layers[0]))
    if fmaps.ndim == 4:
        title = f"{layers[0]}: feature maps of the first test image (label {labels[0]})"
        save(plot_feature_maps(fmaps[0], title), f"feature_maps_{layers[0]}.png")

    logits = cast(jax.Array, model.apply(variables, x, train=False))  # no mutable collections
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    pred = probs.argmax(axis=1)
    sal = saliency(model, variables, x, labels)
    dec = deconvnet(model, variables, x, labels)
    gbp = guided_backprop(model, variables, x, labels)
    cam = grad_cam(model, variables, x, cam_layer, labels)
    occ = occlusion(model, variables, x, labels)
    columns = [
        Column("saliency", np.asarray(sal), "heat"),
        Column("deconvnet", np.asarray(dec), "signed"),
        Column("guided backprop", np.asarray(gbp), "signed"),
        Column(f"Grad-CAM ({cam_layer})", cam.heatmap, "overlay"),
        Column(
            f"occlusion {occ.size}x{occ.size}",
            occ.heatmap,
            "overlay",
            captions=[f"largest drop {d:.2f}" for d in occ.drop.max(axis=(1, 2))],
        ),
    ]
    rows = [
        f"true {labels[i]}, pred {pred[i]}\np(true) = {probs[i, labels[i]]:.2f}"
        for i in range(len(idx))
    ]
    title = (
        f"{info['model']}: projections of the true class's logit (occlusion: drop of its "
        "probability, per pixel)"
    )
    save(plot_attributions(shown, columns, rows, title), "attributions.png")
    return written
