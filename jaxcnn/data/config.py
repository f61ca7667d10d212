"""`DataConfig`: the `data` section of the training config, with every key's default and meaning.

It lives in the data layer, which the training engine builds on, so there is one source of
these defaults: `jaxcnn.training.TrainConfig.data` is a `DataConfig`, and `create_datasets`
and `evaluation` read the same class.

    from jaxcnn.data import DataConfig, create_datasets
    cfg = DataConfig(source="tfds", name="cifar10", hflip=True, random_crop_padding=4)
    datasets = create_datasets(cfg, seed=0, batch_size=128)

`DataConfig.from_any` accepts the section in the other shapes a caller may hold it in (an
`ml_collections.ConfigDict` section from the command line, a mapping such as a saved
`config.json`'s): missing keys take their defaults, unknown keys are an error.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["DataConfig", "section_dict"]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from, how they are augmented and how they reach the devices.

    Values are checked where they are used (`create_datasets`), and all together before a
    training run builds anything (`jaxcnn.training.config.check_values`).
    """

    source: str = "digits"
    """"digits" (bundled, offline) | "tfds" | "folder" (class subfolders) | "synthetic"."""
    name: str = ""
    """TFDS name ("mnist", "cifar10", "imagenet2012", ...) or the folder source's root."""
    data_dir: str | None = None
    """TFDS data_dir; None: TFDS's default (~/tensorflow_datasets)."""
    train_split: str = "train"
    eval_split: str = "test"
    """TFDS split or folder subdirectory used for validation."""
    image_size: int = 32
    """Side of the (square) image the model sees."""
    channels: int | None = None
    """1 or 3 to convert to; None: the source's own."""
    eval_resize: int = 0
    """Resize the shorter side to this before the evaluation centre crop (0: off)."""
    random_crop_padding: int = 0
    """Pad by this much and crop back at random (0: off)."""
    random_rotation: float = 0.0
    """Rotate by up to +-this many degrees (0: off) ..."""
    random_scale: float = 0.0
    """... and scale by a factor in [1 - this, 1 + this] (0: off)."""
    random_resized_crop: bool = False
    """Inception-style crops: area scale (0.08, 1), aspect ratio (3/4, 4/3)."""
    hflip: bool = False
    """Random horizontal flips."""
    pca_lighting: float = 0.0
    """AlexNet's PCA colour noise, std of the alphas (0.1 in Krizhevsky et al. 2012)."""
    color_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """ColorJitter (brightness, contrast, saturation); one number stands for all three."""
    mean: Any = None
    """Per-channel mean in [0, 1] units (a sequence, or one number); None: the data's own."""
    std: Any = None
    """Per-channel std (a sequence, or one number); None: the data set's own."""
    num_classes: int = 0
    """0: from the data source."""
    skip_corrupt: bool = False
    """Skip (and count) undecodable image files instead of raising."""
    synthetic_examples: int = 1024
    """Size of the "synthetic" source."""
    worker_count: int = 0
    """grain worker processes (0: load in the training process)."""
    prefetch: int = 2
    """Batches placed on the devices ahead of the step that uses them."""
    augment_on: str = "device"
    """Where the training transforms run: "device" (compiled into the train step; the host
    only decodes and resizes to one size) | "host" (per example in numpy, as
    `jaxcnn.data.augment` defines them)."""
    host_resize: str = "auto"
    """With augment_on="device", what brings images to one size: "pillow", "opencv" (the
    opencv extra; faster, not bit-equal) or "auto" (OpenCV when installed)."""

    @classmethod
    def from_any(cls, section: Any) -> DataConfig:
        """The `data` section given as a `DataConfig`, a ConfigDict or a mapping.

        Missing keys take their defaults; sequences become tuples where the field is one.

        Raises:
          TypeError: `section` is none of those.
          ValueError: it has keys `DataConfig` does not know (they are named).
        """
        if isinstance(section, cls):
            return section
        given = section_dict(section, "data")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"data: unknown keys {unknown}; known keys: {sorted(names)}")
        if isinstance(given.get("color_jitter"), list):
            given["color_jitter"] = tuple(given["color_jitter"])
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the fields (the `data` section of a saved config)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def section_dict(section: Any, name: str) -> dict[str, Any]:
    """A config section (dataclass, ConfigDict or mapping) as a plain dict of its keys."""
    to_dict = getattr(section, "to_dict", None)
    if callable(to_dict):  # an ml_collections.ConfigDict, or one of the config dataclasses
        return dict(typing.cast(Mapping[str, Any], to_dict()))
    if isinstance(section, Mapping):
        return dict(section)
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    raise TypeError(
        f"{name}: expected a config section (a dataclass, ml_collections.ConfigDict or "
        f"mapping); got {type(section).__name__}"
    )
