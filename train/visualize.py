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
files written is printed at the end. The same from Python: `jaxcnn.viz.report(DIR)`, which
this command calls with its flags.
"""

from __future__ import annotations

import logging
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


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("jaxcnn").setLevel(logging.INFO)
    from jaxcnn import viz

    try:
        written = viz.report(
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
