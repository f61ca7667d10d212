"""Seeing inside trained networks: the Zeiler & Fergus toolkit.

Works on any registered model (`jaxcnn.create_model(name)`) and its variables, e.g. those of
`jaxcnn.training.load_run(workdir)`. Layers are named by their module paths, which for
ported models are the torchvision state-dict prefixes ("conv1", "features.3",
"layer2.1.conv2", or a whole block, "layer2.1"); an unknown name raises a ValueError listing
the valid ones.

    from jaxcnn import viz
    viz.filters(variables)                              # first-layer filters, (N, kh, kw, C)
    viz.feature_maps(model, variables, x, "conv1")      # a layer's activations
    top = viz.top_patches(model, variables, batches, "conv2", units=[0, 1, 2], k=9)
    viz.saliency(model, variables, x)                   # d logit / d x
    viz.deconvnet(model, variables, x, layer="conv2")   # one unit projected to pixels
    viz.guided_backprop(model, variables, x, target=labels)
    viz.grad_cam(model, variables, x, "pool2", target=labels)
    viz.occlusion(model, variables, x, target=labels)   # Zeiler & Fergus section 4.2
    viz.save_figure(viz.plot_top_patches(top, mean, std), "top.png")

Every function returns arrays; the `plot_*` functions draw them as matplotlib Figures
(object-oriented API, Agg canvas, no pyplot). `report` writes the standard set for a
trained run as PNG files (`python -m train.visualize --workdir=DIR` from the command line):

    viz.report("runs/lenet_digits")                     # -> paths under runs/lenet_digits/viz

Modules: `activations` (layers, feature maps, receptive fields), `filters`, `patches`
(top-k patches), `attribution` (projections, Grad-CAM, occlusion), `plots`, `report`.
"""

from .activations import feature_maps, layer_shapes, receptive_field
from .attribution import (
    GradCAM,
    Occlusion,
    deconvnet,
    grad_cam,
    guided_backprop,
    occlusion,
    saliency,
    with_rule,
)
from .filters import conv_kernels, filters
from .patches import TopPatches, top_patches
from .plots import (
    Column,
    image_grid,
    new_figure,
    plot_attributions,
    plot_feature_maps,
    plot_filters,
    plot_top_patches,
    save_figure,
    unnormalize,
)
from .report import report

__all__ = [
    "Column",
    "GradCAM",
    "Occlusion",
    "TopPatches",
    "conv_kernels",
    "deconvnet",
    "feature_maps",
    "filters",
    "grad_cam",
    "guided_backprop",
    "image_grid",
    "layer_shapes",
    "new_figure",
    "occlusion",
    "plot_attributions",
    "plot_feature_maps",
    "plot_filters",
    "plot_top_patches",
    "receptive_field",
    "report",
    "saliency",
    "save_figure",
    "top_patches",
    "unnormalize",
    "with_rule",
]
