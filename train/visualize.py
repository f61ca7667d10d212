"""Look inside a trained run: `python -m train.visualize --workdir=DIR`.

Usage (from the repository root, after `python -m train --workdir=DIR`):

  python -m train.visualize --workdir=runs/lenet_digits
  python -m train.visualize --workdir=runs/r20 --layers=layer1.2,layer2.2,layer3.2 \\
      --num_units=8 --max_images=5000 --best

It reloads the run's model (`jaxcnn.training.load_run`) and evaluation data (the run's
`config.json`, its "data" section, through `jaxcnn.data.create_datasets`), and writes PNGs
into DIR/viz/ (or --out):

* ``filters.png``: the first convolution's filters, each normalised on its own (grey or
  colour as the input); ``filters_<layer>.png``: the second convolution's, summed over
  their input channels.
* ``feature_maps_<layer>.png``: the first test image's activations at the first
  visualised layer.
* ``top_patches_<layer>.png`` for three layers of increasing depth (default: the first,
  middle and last convolutions; LeNet-5, with two, adds its first fully connected layer,
  whose "patches" are whole images): for each of the first --num_units units, the --k
  evaluation-set patches (receptive fields) that activate it most, as in Zeiler & Fergus's
  Figure 2.
* ``attributions.png``: for --num_images test images (distinct classes where possible),
  with respect to the true class: gradient saliency, deconvnet, guided backprop, Grad-CAM
  (at --gradcam_layer) and occlusion sensitivity (drop of the true class's probability).

Images are shown un-normalised (x * std + mean, with the run's mean and std). The list of
files written is printed at the end.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory written by `python -m train`.")
_OUT = flags.DEFINE_string("out", None, "Where to write the PNGs; default DIR/viz.")
_BEST = flags.DEFINE_bool("best", False, "Use the best checkpoint instead of the newest.")
_LAYERS = flags.DEFINE_list(
    "layers", None, "Layers (module paths) for the top patches; default three at increasing depth."
)
_NUM_UNITS = flags.DEFINE_integer("num_units", 6, "Units (channels) per layer for top patches.")
_K = flags.DEFINE_integer("k", 9, "Patches per unit.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 4, "Test images in the attribution panel.")
_MAX_IMAGES = flags.DEFINE_integer(
    "max_images", 0, "Scan at most this many evaluation images for top patches (0: all)."
)
_GRADCAM_LAYER = flags.DEFINE_string(
    "gradcam_layer", None, "Layer for Grad-CAM; default the last convolution with a 2x2+ map."
)

flags.mark_flag_as_required("workdir")


def default_layers(model, input_shape) -> tuple[list[str], str]:
    """Three layers of increasing depth for the top patches, and the layer for Grad-CAM.

    Top patches: the first, middle and last convolutions (one per receptive field), ranked
    on their outputs before the nonlinearity, which do not saturate (a tanh or a pool after
    it would tie many images at 1.0); a network with fewer than three convolutions (LeNet-5)
    gets its first fully connected layer(s) added, whose patches are whole images. Grad-CAM:
    the last convolution whose map is at least 2x2.
    """
    import jaxcnn

    convs, fcs, last = [], [], None
    for row in jaxcnn.summary(model, input_shape=input_shape).layers:
        if "Conv" in row.kind and row.geometry is not None and len(row.output_shape) == 4:
            if row.geometry != last:
                convs.append(row)
            last = row.geometry
        elif row.kind == "Dense" and len(row.output_shape) == 2 and row.macs > 0:
            fcs.append(row)
    picked = pick_depths([r.name for r in convs])
    picked += [r.name for r in fcs[: 3 - len(picked)]]
    spatial = [r.name for r in convs if min(r.output_shape[1:3]) >= 2]
    return picked, (spatial[-1] if spatial else picked[-1])


def pick_depths(candidates: list[str], n: int = 3) -> list[str]:
    """`n` layers spread from the first to the last of `candidates` (all if there are fewer)."""
    if len(candidates) <= n:
        return list(candidates)
    idx = sorted({round(i * (len(candidates) - 1) / (n - 1)) for i in range(n)})
    return [candidates[i] for i in idx]


def pick_images(labels, mask, count: int) -> list[int]:
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


def visualize(
    workdir: str,
    out: str | None = None,
    *,
    best: bool = False,
    layers: list[str] | None = None,
    num_units: int = 6,
    k: int = 9,
    num_images: int = 4,
    max_images: int = 0,
    gradcam_layer: str | None = None,
) -> list[str]:
    """Write the figures of a trained run; returns the paths written (see the module doc)."""
    import jax
    import numpy as np

    from jaxcnn import viz
    from jaxcnn.data import create_datasets
    from jaxcnn.training import load_run

    workdir = os.path.abspath(workdir)
    out = os.path.join(workdir, "viz") if out is None else out
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"--workdir: {config_path} not found (not a training run?)")
    with open(config_path, encoding="utf-8") as f:
        cfg = json.load(f)
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
    written = []

    def save(fig, name):
        written.append(viz.save_figure(fig, os.path.join(out, name)))

    # The layers to show, checked before anything is written.
    auto_layers, auto_cam = default_layers(model, shape)
    layers = layers or auto_layers
    cam_layer = gradcam_layer or auto_cam
    known = viz.layer_shapes(model, shape)
    for flag, names in (("--layers", layers), ("--gradcam_layer", [cam_layer])):
        for name in names:
            if name not in known:
                raise ValueError(
                    f"{flag}: {info['model']} has no layer {name!r}; its layers are: "
                    + ", ".join(known)
                )

    # Filters: the first convolution as images; the second summed over its inputs.
    kernels = list(viz.conv_kernels(variables))
    first = kernels[0]
    save(
        viz.plot_filters(viz.filters(variables, first), f"{info['model']} {first}: filters"),
        "filters.png",
    )
    if len(kernels) > 1:
        second = kernels[1]
        fil = viz.filters(variables, second, sum_channels=True)
        title = f"{second}: filters summed over input channels"
        save(viz.plot_filters(fil, title), f"filters_{second}.png")

    # Top patches at three depths.
    for layer in layers:
        n_units = min(num_units, known[layer][-1])
        top = viz.top_patches(
            model,
            variables,
            data.eval,
            layer,
            list(range(n_units)),
            k,
            max_images=max_images or None,
        )
        save(
            viz.plot_top_patches(top, mean, std, ncols=min(n_units, 3)),
            f"top_patches_{layer}.png",
        )

    # The test images of the panels.
    batch = next(iter(data.eval))
    idx = pick_images(batch["label"], batch["mask"], num_images)
    x = jax.numpy.asarray(batch["image"][idx])
    labels = np.asarray(batch["label"][idx]).astype(np.int32)
    shown = viz.unnormalize(np.asarray(x), mean, std)

    fmaps = np.asarray(viz.feature_maps(model, variables, x[:1], layers[0]))
    if fmaps.ndim == 4:
        title = f"{layers[0]}: feature maps of the first test image (label {labels[0]})"
        save(viz.plot_feature_maps(fmaps[0], title), f"feature_maps_{layers[0]}.png")

    probs = np.asarray(jax.nn.softmax(model.apply(variables, x, train=False), axis=-1))
    pred = probs.argmax(axis=1)
    sal = viz.saliency(model, variables, x, labels)
    dec = viz.deconvnet(model, variables, x, labels)
    gbp = viz.guided_backprop(model, variables, x, labels)
    cam = viz.grad_cam(model, variables, x, cam_layer, labels)
    occ = viz.occlusion(model, variables, x, labels)
    columns = [
        viz.Column("saliency", np.asarray(sal), "heat"),
        viz.Column("deconvnet", np.asarray(dec), "signed"),
        viz.Column("guided backprop", np.asarray(gbp), "signed"),
        viz.Column(f"Grad-CAM ({cam_layer})", cam.heatmap, "overlay"),
        viz.Column(
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
    save(viz.plot_attributions(shown, columns, rows, title), "attributions.png")
    return written


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("jaxcnn").setLevel(logging.INFO)
    try:
        written = visualize(
            _WORKDIR.value,
            _OUT.value,
            best=_BEST.value,
            layers=_LAYERS.value,
            num_units=_NUM_UNITS.value,
            k=_K.value,
            num_images=_NUM_IMAGES.value,
            max_images=_MAX_IMAGES.value,
            gradcam_layer=_GRADCAM_LAYER.value,
        )
    except (FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)
    for path in written:
        print(path)


if __name__ == "__main__":
    app.run(main)
