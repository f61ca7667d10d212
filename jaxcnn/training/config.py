"""The training configuration: every key the engine reads, with its default and meaning.

Configs in `train/configs/` start from `default_config()` and override what they change, so
a key is documented once, here. `train_and_evaluate` accepts any object with these
attributes (an `ml_collections.ConfigDict`, or the plain mapping `default_config` builds).

Learning rates are given for `batch_size` (the global batch, over all devices and
processes); nothing rescales them silently.

`check_values` checks a config's values (every bad key in one error, before anything is
built); `read_saved_config` reads the resolved config a run saved in its workdir.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any


class ConfigError(ValueError):
    """A config that cannot run: an unknown or missing key, a bad value, a workdir's saved
    config that is unreadable or differs. The message names the key or file."""


# Kept as plain data so that this module imports without ml_collections (it is imported
# lazily by `default_config`); the dictionary is also what `validate` checks keys against.
DEFAULTS: dict[str, Any] = {
    "model": "lenet5",  # a registered name: jaxcnn.list_models()
    "model_kwargs": {},  # extra create_model keywords (dropout_rate, aux_logits, ...)
    "seed": 0,  # one seed for initialisation, data order, augmentation and dropout
    "batch_size": 128,  # global training batch (all devices, all processes)
    "eval_batch_size": 256,  # global evaluation batch; the last one is padded and masked
    "num_epochs": 30.0,  # length of training in epochs of the training set ...
    "num_steps": 0,  # ... or in steps, if > 0 (overrides num_epochs)
    "data": {
        "source": "digits",  # "digits" | "tfds" | "folder" | "synthetic"
        "name": "",  # TFDS name ("mnist", "cifar10", "imagenet2012", ...) or folder root
        "data_dir": None,  # TFDS data_dir; None: TFDS's default (~/tensorflow_datasets)
        "train_split": "train",
        "eval_split": "test",  # TFDS split or folder subdirectory used for validation
        "image_size": 32,  # side of the (square) image the model sees
        "channels": None,  # 1 or 3 to convert; None: the source's own
        "eval_resize": 0,  # resize the shorter side to this before the centre crop (0: off)
        "random_crop_padding": 0,  # pad by this much and crop back at random (0: off)
        "random_rotation": 0.0,  # rotate by up to +-this many degrees (0: off) ...
        "random_scale": 0.0,  # ... and scale by a factor in [1 - this, 1 + this] (0: off)
        "random_resized_crop": False,  # Inception-style scale (0.08, 1) and aspect (3/4, 4/3)
        "hflip": False,  # random horizontal flips
        "pca_lighting": 0.0,  # AlexNet's PCA colour noise, std of the alphas (0.1 in 2012)
        "color_jitter": (0.0, 0.0, 0.0),  # ColorJitter (brightness, contrast, saturation)
        "mean": None,  # per-channel mean in [0, 1] units; None: the data set's own
        "std": None,  # per-channel std; None: the data set's own
        "num_classes": 0,  # 0: from the data source
        "skip_corrupt": False,  # skip (and count) undecodable image files instead of raising
        "synthetic_examples": 1024,  # size of the "synthetic" source
        "worker_count": 0,  # grain worker processes (0: load in the training process)
        "prefetch": 2,  # batches placed on the devices ahead of the step that uses them
        "augment_on": "device",  # where the training transforms run: "device" (jit-compiled
        # into the train step; the host only decodes and resizes to one size) | "host" (per
        # example in numpy, as jaxcnn.data.augment defines them)
        "host_resize": "auto",  # with augment_on="device", what brings images to one size:
        # "pillow", "opencv" (the opencv extra; faster, not bit-equal) or "auto" (OpenCV when
        # installed)
    },
    "optimizer": {
        "learning_rate": 0.1,  # peak learning rate for `batch_size`
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,  # L2 via decoupled add_decayed_weights, as torch.optim.SGD does
        "decay_bn_and_bias": True,  # False: exclude BatchNorm scales/biases and all biases
        "clip_grad_norm": 0.0,  # clip the global gradient norm to this (0: off)
    },
    "schedule": {
        "name": "cosine",  # "constant" | "step" | "multistep" | "cosine" | "plateau"
        "warmup_epochs": 0.0,  # linear warm-up from 0 over this many epochs
        "step_epochs": 30.0,  # "step": multiply by `gamma` every this many epochs
        "milestones": (),  # "multistep": epochs at which to multiply by `gamma`
        "gamma": 0.1,
        "plateau_patience": 3,  # "plateau": evaluations without improvement before decay
        "plateau_metric": "eval_loss",  # monitored (lower is better)
        "min_learning_rate": 0.0,  # floor for "plateau" and "cosine"
    },
    "label_smoothing": 0.0,
    "aux_loss_weight": 0.3,  # weight of auxiliary classifiers' losses (GoogLeNet/Inception)
    # Transfer learning (see jaxcnn.transfer). Layer paths are Flax module paths, "/"-separated
    # ("conv1", "layer1.0/bn1"); patterns are shell-style globs over them ("layer1.*").
    "init_from": "",  # start from: "" (random) | a jaxcnn workdir (its newest checkpoint) |
    # a weight file (.pth/.safetensors/.npz, torchvision/timm names). Read only when the workdir
    # has no checkpoint yet: a resumed run restores its own.
    "init_mapping": "auto",  # "auto": by layer name; heads whose class count differs start
    # fresh | "strict": everything must match | "vgg_stages": copy a shallower VGG's first four
    # convolutions and its fully connected layers into this VGG (Simonyan & Zisserman's stages)
    "freeze": (),  # patterns of layers kept fixed: parameters, and BatchNorm statistics
    # (those BatchNorms run in inference mode)
    "freeze_all_but_last": -1,  # also freeze all but the last N blocks (top-level layers in
    # execution order; classifier heads always train): -1 off, 0 trains the heads only
    "head_lr_multiplier": 1.0,  # classifier heads (the layers sized by num_classes) train at
    # this times the learning rate
    "lr_multipliers": (),  # ((pattern, multiplier), ...): learning rate per layer group; the
    # first matching pattern applies (discriminative fine-tuning)
    "dtype": "float32",  # compute dtype: "float32" | "bfloat16" (parameters stay float32)
    "parallel": "jit",  # "jit" (mesh + NamedSharding) | "pmap" | "none" (one device)
    "eval_every_epochs": 1.0,  # evaluate (and plot) every this many epochs, and at the end
    "log_every_steps": 50,  # training-metric rows in metrics.jsonl / TensorBoard
    "checkpoint_every_epochs": 1.0,  # periodic checkpoints (also at the end and on SIGTERM)
    "keep_checkpoints": 3,  # most recent checkpoints kept
    "keep_best": True,  # also keep the best checkpoint by `best_metric`
    "best_metric": "eval_top1",  # higher is better
    "async_checkpointing": True,
    "progress": True,  # a tqdm progress bar on stderr
    "tensorboard": True,  # TensorBoard event files under workdir/tensorboard
    "plot": True,  # workdir/curves.png, redrawn after evaluations (at most every 30 s)
    "distributed": False,  # call jax.distributed.initialize() (multi-process / multi-host)
    "compilation_cache": "",  # JAX's persistent compilation cache: "" workdir/compile_cache,
    # a folder (shared by runs), or "off"; a resumed or repeated run then skips compilation
}


# The type of each key whose default is None. ml_collections cannot type a None field, so
# `--config.data.channels=1` would be refused; `default_config` holds these as typed
# placeholders instead, which read (and serialise) as None until set. "object" keeps every
# value a config file could give before (a tuple, a list, or one number for one channel);
# on the command line it reads a Python literal: --config.data.mean='(0.5, 0.5, 0.5)'.
NONE_DEFAULT_TYPES: dict[str, type] = {
    "data.data_dir": str,
    "data.channels": int,
    "data.mean": object,
    "data.std": object,
}


def default_config():
    """An `ml_collections.ConfigDict` holding `DEFAULTS` (keys locked against typos)."""
    import ml_collections

    cfg = ml_collections.ConfigDict(_copy(DEFAULTS, placeholders=True))
    cfg.lock()
    return cfg


def _copy(d: dict, prefix: str = "", *, placeholders: bool = False) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            v = _copy(v, f"{key}.", placeholders=placeholders)
        elif v is None and placeholders:
            from ml_collections import config_dict

            v = config_dict.placeholder(NONE_DEFAULT_TYPES.get(key, object))
        out[k] = v
    return out


# ------------------------------------------------------------------------ value checks
SCHEDULES = ("constant", "step", "multistep", "cosine", "plateau")
BEST_METRICS = ("eval_top1", "eval_top5")  # evaluation results where higher is better
PLATEAU_METRICS = ("eval_loss",)  # evaluation results where lower is better
DTYPES = ("float32", "bfloat16")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _int_at_least(lo: int) -> tuple[Any, str]:
    return (lambda v: _is_int(v) and v >= lo), f"an int >= {lo}"


def _finite(test: Any, text: str) -> tuple[Any, str]:
    return (lambda v: _is_real(v) and math.isfinite(v) and test(v)), f"a finite number {text}"


# key -> (test, what is expected). Bounds are those of the code that reads the key (the data
# layer, the optimizer, the loop), checked here together and before anything is built, and
# tightened only where a value used to fail silently (NaN, inf, a negative step count).
_CHECKS: dict[str, tuple[Any, str]] = {
    "seed": _int_at_least(0),
    "batch_size": _int_at_least(1),
    "eval_batch_size": _int_at_least(1),
    "num_epochs": _finite(lambda v: v >= 0, ">= 0"),
    "num_steps": _int_at_least(0),
    "label_smoothing": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "aux_loss_weight": _finite(lambda v: v >= 0, ">= 0"),
    "head_lr_multiplier": _finite(lambda v: v >= 0, ">= 0"),
    "eval_every_epochs": _finite(lambda v: v > 0, "> 0"),
    "checkpoint_every_epochs": _finite(lambda v: v > 0, "> 0"),
    "log_every_steps": _int_at_least(1),
    "keep_checkpoints": _int_at_least(1),
    "best_metric": (
        lambda v: v in BEST_METRICS,
        f"one of {', '.join(map(repr, BEST_METRICS))} (higher is better)",
    ),
    "dtype": (lambda v: v in DTYPES, f"one of {', '.join(map(repr, DTYPES))}"),
    "data.data_dir": (lambda v: v is None or isinstance(v, str), "a path string, or None"),
    "data.image_size": _int_at_least(1),
    "data.channels": (lambda v: v is None or (_is_int(v) and v in (1, 3)), "1 or 3, or None"),
    "data.eval_resize": _int_at_least(0),
    "data.random_crop_padding": _int_at_least(0),
    "data.random_rotation": (lambda v: _is_real(v) and 0 <= v <= 180, "degrees in [0, 180]"),
    "data.random_scale": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "data.pca_lighting": _finite(lambda v: v >= 0, ">= 0"),
    "data.color_jitter": (
        lambda v: (
            isinstance(v, (list, tuple))
            and len(v) == 3
            and all(_is_real(x) and math.isfinite(x) and x >= 0 for x in v)
        ),
        "(brightness, contrast, saturation): three finite numbers >= 0",
    ),
    "data.num_classes": _int_at_least(0),
    "data.synthetic_examples": _int_at_least(1),
    "data.worker_count": _int_at_least(0),
    "data.prefetch": _int_at_least(0),
    "data.augment_on": (lambda v: v in ("device", "host"), "'device' or 'host'"),
    "data.host_resize": (
        lambda v: v in ("auto", "pillow", "opencv"),
        "'auto', 'pillow' or 'opencv'",
    ),
    "optimizer.learning_rate": _finite(lambda v: v > 0, "> 0"),
    "optimizer.momentum": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.weight_decay": _finite(lambda v: v >= 0, ">= 0"),
    # inf is no clipping, as 0 is; NaN fails the comparison.
    "optimizer.clip_grad_norm": (lambda v: _is_real(v) and v >= 0, "a number >= 0 (0: off)"),
    "schedule.name": (lambda v: v in SCHEDULES, f"one of {', '.join(map(repr, SCHEDULES))}"),
    "schedule.warmup_epochs": _finite(lambda v: v >= 0, ">= 0"),
}

# Keys only one schedule reads: checked when that schedule is chosen (other schedules leave
# them alone, whatever they hold).
_SCHEDULE_CHECKS: dict[str, dict[str, tuple[Any, str]]] = {
    "step": {
        "schedule.step_epochs": _finite(lambda v: v > 0, "> 0"),
        "schedule.gamma": _finite(lambda v: v >= 0, ">= 0"),
    },
    "multistep": {
        "schedule.milestones": (
            lambda v: (
                isinstance(v, (list, tuple))
                and all(_is_real(m) and math.isfinite(m) and m >= 0 for m in v)
            ),
            "a sequence of finite epochs >= 0",
        ),
        "schedule.gamma": _finite(lambda v: v >= 0, ">= 0"),
    },
    "cosine": {"schedule.min_learning_rate": _finite(lambda v: v >= 0, ">= 0")},
    "plateau": {
        "schedule.gamma": (lambda v: _is_real(v) and 0 < v < 1, "a number in (0, 1)"),
        "schedule.plateau_patience": _int_at_least(0),
        "schedule.plateau_metric": (
            lambda v: v in PLATEAU_METRICS,
            f"one of {', '.join(map(repr, PLATEAU_METRICS))} (lower is better)",
        ),
        "schedule.min_learning_rate": _finite(lambda v: v >= 0, ">= 0"),
    },
}

_MISSING = object()


def _lookup(d: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return _MISSING
        d = d[part]
    return d


def _channel_stats_problem(value: Any, *, positive: bool) -> str | None:
    """What is wrong with a `data.mean` / `data.std` value, or None (None itself is fine)."""
    if value is None:
        return None
    expected = f"finite numbers{' > 0' if positive else ''} (one per channel), or None"
    # As the data layer reads it (any nesting of numbers); the length is checked there,
    # against the channel count.
    import numpy as np

    items = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, (str, bytes, bool)) for v in items):
        return expected
    try:
        vals = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return expected
    if not np.all(np.isfinite(vals)) or (positive and not np.all(vals > 0)):
        return expected
    return None


def check_values(d: dict) -> None:
    """Check the values of a config given as a plain nested dict (`config_to_dict`'s).

    Every key of `DEFAULTS` with a bounded value is checked, before any data or model is
    built; keys that are missing are left to the key check (`validate_config`).

    Raises:
      ConfigError: one error listing every bad key, what it expects and what it got.
    """
    problems: list[str] = []

    def check(key: str, test: Any, expected: str) -> None:
        value = _lookup(d, key)
        if value is not _MISSING and not test(value):
            problems.append(f"{key}: expected {expected}; got {value!r}")

    for key, (test, expected) in _CHECKS.items():
        check(key, test, expected)
    for key, positive in (("data.mean", False), ("data.std", True)):
        value = _lookup(d, key)
        if value is not _MISSING:
            expected = _channel_stats_problem(value, positive=positive)
            if expected is not None:
                problems.append(f"{key}: expected {expected}; got {value!r}")
    name = _lookup(d, "schedule.name")
    if isinstance(name, str):
        for key, (test, expected) in _SCHEDULE_CHECKS.get(name, {}).items():
            check(key, test, f"{expected} for schedule {name!r}")
    if problems:
        n = len(problems)
        raise ConfigError(
            f"config: {n} bad value{'s' if n > 1 else ''} (every key, its default and meaning: "
            "jaxcnn/training/config.py):\n  " + "\n  ".join(problems)
        )


# ------------------------------------------------------------------------ saved configs
def read_saved_config(path: str) -> dict:
    """The resolved config a run saved in its workdir (``config.json``), as a dict.

    Raises:
      FileNotFoundError: no such file.
      ConfigError: the file is not a JSON object (truncated, overwritten, not JSON); the
        message names the file, where it is broken and what to do.
    """
    what_to_do = (
        "It is the resolved config of the run in that workdir, which a resumed run compares "
        "itself with: restore it (from a backup, or rewrite it from the config the run was "
        "started with), or start a new run with another --workdir. Do not delete or "
        "overwrite it to get past this error: the checkpoints beside it would then be "
        "resumed under a config nobody checked."
    )
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not a saved config: it is not UTF-8 text (byte {e.start}: {e.reason}). "
            + what_to_do
        ) from None
    if not text.strip():
        raise ConfigError(f"{path} is not a saved config: it is empty. " + what_to_do)
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as e:
        truncated = e.pos >= len(text.rstrip())
        raise ConfigError(
            f"{path} is not a saved config: invalid JSON at line {e.lineno} column {e.colno} "
            f"({e.msg}{'; the file ends there, as if a write was cut off' if truncated else ''}"
            "). " + what_to_do
        ) from None
    if not isinstance(saved, dict):
        raise ConfigError(
            f"{path} is not a saved config: it holds a JSON {type(saved).__name__}, not a JSON "
            "object of config keys. " + what_to_do
        )
    return saved
