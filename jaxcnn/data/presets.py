"""Preprocessing presets for evaluating published weights, and ImageNet's class names.

A preset is the evaluation transform a model family was trained with, as `data` config keys
(`jaxcnn.data.create_datasets`): the image size the model sees, the shorter-side resize
before the centre crop, and the per-channel mean and std in [0, 1] units. Weights evaluated
with another normalisation than their own lose accuracy without any error, so pick the one
their authors used.

The statistics are the published constants those training scripts use.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)

PRESETS: dict[str, dict[str, Any]] = {
    # torchvision's ImageNet evaluation: resize the shorter side to 256, centre crop 224.
    "imagenet": {
        "image_size": 224, "eval_resize": 256, "channels": 3,
        "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
    },
    # CIFAR-10's per-channel statistics over its training images.
    "cifar10": {
        "image_size": 32, "eval_resize": 0, "channels": 3,
        "mean": CIFAR10_MEAN, "std": (0.2470, 0.2435, 0.2616),
    },
    # The std of per-image means that many PyTorch CIFAR scripts copied (kuangliu/pytorch-cifar).
    "cifar10_0.2023": {
        "image_size": 32, "eval_resize": 0, "channels": 3,
        "mean": CIFAR10_MEAN, "std": (0.2023, 0.1994, 0.2010),
    },
    # ImageNet's statistics on 32x32 CIFAR images (akamaster/pytorch_resnet_cifar10).
    "cifar10_imagenet_stats": {
        "image_size": 32, "eval_resize": 0, "channels": 3,
        "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
    },
    "cifar100": {
        "image_size": 32, "eval_resize": 0, "channels": 3,
        "mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762),
    },
    # MNIST's training-set mean and std (PyTorch's MNIST example).
    "mnist": {
        "image_size": 28, "eval_resize": 0, "channels": 1, "mean": (0.1307,), "std": (0.3081,),
    },
    # The same, resized to LeNet-5's 32x32 input (as train/configs/lenet_mnist.py trains).
    "mnist_32": {
        "image_size": 32, "eval_resize": 0, "channels": 1, "mean": (0.1307,), "std": (0.3081,),
    },
}  # fmt: skip


def preset(name: str) -> dict[str, Any]:
    """The `data` config keys of preset `name` (a new dict)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {name!r}; known: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


@functools.cache
def _imagenet_classes() -> tuple[str, ...]:
    text = resources.files("jaxcnn.data").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:  # a damaged install
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names; expected 1000")
    return names


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in label order (torchvision's naming), offline."""
    return list(_imagenet_classes())
