"""Transfer learning: pretrained weights, new heads, frozen layers, per-layer learning rates,
and features for linear probes.

Oquab, Bottou, Laptev and Sivic (CVPR 2014) reused the layers of a network trained on
ImageNet for other tasks, training only new top layers; Yosinski et al. (NIPS 2014) measured
how transferable each layer is. In jaxcnn that is a few calls:

    from jaxcnn import models, transfer
    from jaxcnn.training import make_optimizer, train_step

    model, variables = transfer.load_pretrained(
        "resnet18", "resnet18-f37072fd.pth", num_classes=10, rng=jax.random.key(0))
    frozen = transfer.frozen_layers(model, all_but_last=2, input_shape=(224, 224, 3))
    model = models.configure_batch_norm(model, frozen=frozen)  # frozen BatchNorms: inference mode
    tx = make_optimizer(config.optimizer, schedule, variables["params"], frozen=frozen)
    step = functools.partial(train_step, frozen=frozen)  # no gradient, parameters kept

or, with the training engine, a config change: ``init_from``, ``init_mapping``, ``freeze``,
``freeze_all_but_last``, ``head_lr_multiplier``, ``lr_multipliers``
(`jaxcnn.training.config`; the example is ``train/configs/finetune_resnet18_cifar10.py``).

Where each name lives (this package sits above the training engine; what the engine itself
needs lives below it, and is re-exported here):

* `jaxcnn.anatomy`: `layer_paths`, `head_layers`, `blocks`, and the vocabulary (layer paths,
  patterns, heads, blocks).
* `jaxcnn.training.finetune`: `frozen_layers`, `lr_multipliers`, `initialize_from`,
  `MAPPINGS`, `vgg_stage_init`.
* `jaxcnn.transfer.heads`: `replace_head`.
* `jaxcnn.transfer.weights`: `load_pretrained`.
* `jaxcnn.transfer.features`: `extract_features`.

Weights come from torchvision/timm files or jaxcnn workdirs, as `jaxcnn.training.finetune`
says; nothing here downloads.
"""

from ..anatomy import blocks, head_layers, layer_paths
from ..training.finetune import (
    MAPPINGS,
    frozen_layers,
    initialize_from,
    lr_multipliers,
    vgg_stage_init,
)
from .features import extract_features
from .heads import replace_head
from .weights import load_pretrained

__all__ = [
    "MAPPINGS",
    "blocks",
    "extract_features",
    "frozen_layers",
    "head_layers",
    "initialize_from",
    "layer_paths",
    "load_pretrained",
    "lr_multipliers",
    "replace_head",
    "vgg_stage_init",
]
