"""Data: image sources, per-example augmentation, and deterministic per-process loaders.

``import jaxcnn.data`` is light: tensorflow_datasets, grain, Pillow and scikit-learn are
imported by the functions that use them.

Sources (random access, ``src[i] -> {"image": uint8 (H, W, C), "label": int}``): `digits`
(the bundled default, offline), `ArraySource`, `tfds_source`, `ImageFolder`, `synthetic`.
Augmentation: `jaxcnn.data.augment`. Loaders: `create_datasets`, configured by `DataConfig`.
Evaluation presets (`preset("imagenet")`, ...) and `imagenet_classes()`: `jaxcnn.data.presets`.
"""

from . import augment
from .config import DataConfig
from .loader import Datasets, EvalLoader, TrainIterator, TrainLoader, create_datasets
from .presets import PRESETS, imagenet_classes, preset
from .sources import (
    ArraySource,
    ImageFolder,
    Source,
    SyntheticSource,
    TfdsSource,
    digits,
    synthetic,
    tfds_source,
)

__all__ = [
    "PRESETS",
    "ArraySource",
    "DataConfig",
    "Datasets",
    "EvalLoader",
    "ImageFolder",
    "Source",
    "SyntheticSource",
    "TfdsSource",
    "TrainIterator",
    "TrainLoader",
    "augment",
    "create_datasets",
    "digits",
    "imagenet_classes",
    "preset",
    "synthetic",
    "tfds_source",
]
