"""The training configuration: every key the engine reads, with its default and meaning.

`TrainConfig` (sections `DataConfig`, `OptimizerConfig`, `ScheduleConfig`; frozen dataclasses)
is the one place a key and its default are defined, and what the engine reads. Configs in
`train/configs/` start from `default_config()`, the same defaults as an
`ml_collections.ConfigDict` so that ``--config.KEY=VALUE`` can override them, and
`parse_config` turns that into a `TrainConfig` (keys and values checked) at the start of a run.
`train_and_evaluate` takes either.

Learning rates are given for `batch_size` (the global batch, over all devices and
processes); nothing rescales them silently.

`check_values` checks a config's values (every bad key in one error, before anything is
built); `read_saved_config` reads the resolved config a run saved in its workdir.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import typing
from collections.abc import Mapping
from typing import Any

from ..data.config import DataConfig, section_dict


class ConfigError(ValueError):
    """A config that cannot run: an unknown or missing key, a bad value, a workdir's saved
    config that is unreadable or differs. The message names the key or file."""


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """SGD with momentum and weight decay (`jaxcnn.training.optim.make_optimizer`)."""

    learning_rate: float = 0.1
    """Peak learning rate for `TrainConfig.batch_size`."""
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    """L2 added to the gradient (decoupled add_decayed_weights), as torch.optim.SGD does."""
    decay_bn_and_bias: bool = True
    """False: exclude BatchNorm scales/biases and all biases from the weight decay."""
    clip_grad_norm: float = 0.0
    """Clip the global gradient norm to this (0: off)."""


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule (`jaxcnn.training.optim.learning_rate_schedule`)."""

    name: str = "cosine"
    """"constant" | "step" | "multistep" | "cosine" | "plateau"."""
    warmup_epochs: float = 0.0
    """Linear warm-up from 0 over this many epochs."""
    step_epochs: float = 30.0
    """"step": multiply by `gamma` every this many epochs."""
    milestones: tuple[float, ...] = ()
    """"multistep": epochs at which to multiply by `gamma`."""
    gamma: float = 0.1
    plateau_patience: int = 3
    """"plateau": evaluations without improvement before a decay."""
    plateau_metric: str = "eval_loss"
    """"plateau": the monitored evaluation result (lower is better)."""
    min_learning_rate: float = 0.0
    """Floor for "plateau" and "cosine"."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every key the training engine reads, with its default and meaning.

    Build one directly (``TrainConfig(model="resnet18", data=DataConfig(source="synthetic"))``),
    derive one (`with_updates`), or let `parse_config` read a ConfigDict from the command line
    or a config file. Layer paths in the transfer keys are Flax module paths, "/"-separated
    ("conv1", "layer1.0/bn1"); patterns are shell-style globs over them ("layer1.*").
    """

    model: str = "lenet5"
    """A registered name: `jaxcnn.list_models()`."""
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Extra `create_model` keywords (dropout_rate, aux_logits, ...)."""
    seed: int = 0
    """One seed for initialisation, data order, augmentation and dropout."""
    batch_size: int = 128
    """Global training batch (all devices, all processes)."""
    eval_batch_size: int = 256
    """Global evaluation batch; the last one is padded and masked."""
    num_epochs: float = 30.0
    """Length of training in epochs of the training set ..."""
    num_steps: int = 0
    """... or in steps, if > 0 (overrides num_epochs)."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    label_smoothing: float = 0.0
    aux_loss_weight: float = 0.3
    """Weight of auxiliary classifiers' losses (GoogLeNet/Inception)."""
    init_from: str = ""
    """Start from: "" (random) | a jaxcnn workdir (its newest checkpoint) | a weight file
    (.pth/.safetensors/.npz, torchvision/timm names). Read only when the workdir has no
    checkpoint yet: a resumed run restores its own."""
    init_mapping: str = "auto"
    """"auto": by layer name; heads whose class count differs start fresh | "strict":
    everything must match | "vgg_stages": copy a shallower VGG's first four convolutions and
    its fully connected layers into this VGG (Simonyan & Zisserman's stages)."""
    freeze: tuple[str, ...] = ()
    """Patterns of layers kept fixed: parameters, and BatchNorm statistics (those BatchNorms
    run in inference mode)."""
    freeze_all_but_last: int = -1
    """Also freeze all but the last N blocks (top-level layers in execution order; classifier
    heads always train): -1 off, 0 trains the heads only."""
    head_lr_multiplier: float = 1.0
    """Classifier heads (the layers sized by num_classes) train at this times the rate."""
    lr_multipliers: tuple[tuple[str, float], ...] = ()
    """((pattern, multiplier), ...): learning rate per layer group; the first matching
    pattern applies (discriminative fine-tuning)."""
    dtype: str = "float32"
    """Compute dtype: "float32" | "bfloat16" (parameters stay float32)."""
    parallel: str = "jit"
    """"jit" (mesh + NamedSharding) | "pmap" | "none" (one device)."""
    eval_every_epochs: float = 1.0
    """Evaluate (and plot) every this many epochs, and at the end."""
    log_every_steps: int = 50
    """Training-metric rows in metrics.jsonl / TensorBoard."""
    checkpoint_every_epochs: float = 1.0
    """Periodic checkpoints (also at the end and on SIGTERM)."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept."""
    keep_best: bool = True
    """Also keep the best checkpoint by `best_metric`."""
    best_metric: str = "eval_top1"
    """Higher is better."""
    async_checkpointing: bool = True
    progress: bool = True
    """A tqdm progress bar on stderr."""
    tensorboard: bool = True
    """TensorBoard event files under workdir/tensorboard."""
    plot: bool = True
    """workdir/curves.png, redrawn after evaluations (at most every 30 s)."""
    distributed: bool = False
    """Call jax.distributed.initialize() (multi-process / multi-host)."""
    compilation_cache: str = ""
    """JAX's persistent compilation cache: "" workdir/compile_cache, a folder (shared by runs),
    or "off"; a resumed or repeated run then skips compilation."""

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict of every key (what a run saves as ``config.json``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v = section_dict(v, f.name)
            elif f.name == "model_kwargs":
                v = dict(v)
            out[f.name] = v
        return out

    def with_updates(self, updates: Mapping[str, Any]) -> TrainConfig:
        """A copy with dotted keys changed (``{"data.source": "synthetic", "seed": 1}``), checked
        as `parse_config` checks a config."""
        d = self.to_dict()
        for key, value in updates.items():
            node = d
            *path, last = key.split(".")
            for part in path:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"config: unknown key {key!r}")
                node = node[part]
            if last not in node:
                raise ConfigError(f"config: unknown key {key!r}")
            node[last] = value
        return parse_config(d)


# The plain-data view of the defaults (nested dicts), for code that compares or prints keys;
# `TrainConfig` is where they are defined.
DEFAULTS: dict[str, Any] = TrainConfig().to_dict()


def default_config():
    """An `ml_collections.ConfigDict` of `TrainConfig`'s defaults (keys locked against typos).

    This is the shape config files (`train/configs/`) and ``--config.KEY=VALUE`` overrides
    work on; `parse_config` turns it into a `TrainConfig`. A key whose default is None is held
    as a placeholder of the field's type, so it reads (and saves) as None until set and the
    command line can still set it (``--config.data.channels=1``); a field that takes several
    shapes (``data.mean``: one number or one per channel) reads a Python literal there:
    ``--config.data.mean='(0.5, 0.5, 0.5)'``.
    """
    import ml_collections

    cfg = ml_collections.ConfigDict(_with_placeholders(TrainConfig()))
    cfg.lock()
    return cfg


def _placeholder_type(hint: Any) -> type:
    """The type a ConfigDict placeholder holds for a field annotated `hint` (`T | None`)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and isinstance(args[0], type) else object


def _with_placeholders(section: Any) -> dict[str, Any]:
    from ml_collections import config_dict

    hints = typing.get_type_hints(type(section))
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        v = getattr(section, f.name)
        if dataclasses.is_dataclass(v):
            v = _with_placeholders(v)
        elif v is None:
            v = config_dict.placeholder(_placeholder_type(hints[f.name]))
        elif f.name == "model_kwargs":
            v = dict(v)
        out[f.name] = v
    return out


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of a config given as a `TrainConfig`, a ConfigDict or a mapping."""
    if isinstance(config, TrainConfig):
        d = config.to_dict()
    elif hasattr(config, "to_dict"):
        d = config.to_dict()
    elif isinstance(config, Mapping):
        d = dict(config)
    else:
        raise TypeError(
            "config: expected a TrainConfig, an ml_collections.ConfigDict or a mapping of its "
            f"keys; got {type(config).__name__}"
        )

    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return plain(section_dict(v, ""))
        return v

    return {k: plain(v) for k, v in d.items()}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config dict ("data.image_size"); model_kwargs stays one key."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and k != "model_kwargs":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _tuples(v: Any) -> Any:
    """Lists (from JSON or a ConfigDict) as tuples, nested ones too."""
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def parse_config(config: Any) -> TrainConfig:
    """The `TrainConfig` of a config given as a ConfigDict, a mapping or a `TrainConfig`.

    The keys must be exactly `TrainConfig`'s (a typo is an error, not a silently ignored key)
    and every value is checked (`check_values`) before anything is built.

    Raises:
      ConfigError: unknown or missing keys, or bad values (all of them in one message).
      TypeError: `config` is not a config.
    """
    d = config_to_dict(config)
    got, want = set(flatten(d)), set(flatten(DEFAULTS))
    if got != want:
        parts = []
        if got - want:
            parts.append(f"unknown keys {sorted(got - want)}")
        if want - got:
            parts.append(f"missing keys {sorted(want - got)}")
        raise ConfigError(
            "config: " + "; ".join(parts) + " (start from jaxcnn.training.default_config() "
            "or jaxcnn.training.TrainConfig())"
        )
    check_values(d)
    sections = {"data": DataConfig, "optimizer": OptimizerConfig, "schedule": ScheduleConfig}
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        if k in sections:
            kwargs[k] = sections[k](**{n: _tuples(x) for n, x in v.items()})
        elif k == "model_kwargs":
            kwargs[k] = dict(v)
        else:
            kwargs[k] = _tuples(v)
    return TrainConfig(**kwargs)


# ------------------------------------------------------------------------ value checks
SCHEDULES = ("constant", "step", "multistep", "cosine", "plateau")
BEST_METRICS = ("eval_top1", "eval_top5")  # evaluation results where higher is better
PLATEAU_METRICS = ("eval_loss",)  # evaluation results where lower is better
DTYPES = ("float32", "bfloat16")
PARALLEL = ("jit", "pmap", "none")
INIT_MAPPINGS = ("auto", "strict", "vgg_stages")


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
    "parallel": (lambda v: v in PARALLEL, f"one of {', '.join(map(repr, PARALLEL))}"),
    "init_from": (lambda v: isinstance(v, str), "a path string ('' for none)"),
    "init_mapping": (
        lambda v: v in INIT_MAPPINGS,
        f"one of {', '.join(map(repr, INIT_MAPPINGS))}",
    ),
    "freeze_all_but_last": (
        lambda v: _is_int(v) and v >= -1,
        "an int >= 0, or -1 (off)",
    ),
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
    built; keys that are missing are left to the key check (`parse_config`).

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


# Keys that may differ between the run that wrote a workdir and the one resuming it: they
# change how a run is watched or how fast it goes, never what it computes.
RESUME_FREE_KEYS = frozenset(
    {
        "progress",
        "tensorboard",
        "plot",
        "log_every_steps",
        "async_checkpointing",
        "keep_checkpoints",
        "distributed",
        "compilation_cache",
        "data.worker_count",
        "data.prefetch",
    }
)


def save_or_compare(config: TrainConfig, workdir: str, *, write: bool) -> None:
    """Save the resolved config as ``workdir/config.json``, or, if the workdir holds one, refuse
    to continue a run whose config differs (in a key other than `RESUME_FREE_KEYS`).

    A key the saved config lacks was added to the engine after that run started; at its
    default it asks for what the run did without it, so it is no difference.

    Raises:
      ConfigError: the saved config differs (the first differences are named), or is not a
        readable config (`read_saved_config`).
    """
    from .checkpoint import write_atomic

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        if write:
            write_atomic(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
        return
    saved = flatten(read_saved_config(path))
    current = flatten(json.loads(json.dumps(config.to_dict())))
    defaults = flatten(json.loads(json.dumps(DEFAULTS)))
    diff = sorted(
        k
        for k in set(saved) | set(current)
        if saved.get(k) != current.get(k)
        and k not in RESUME_FREE_KEYS
        and not (k not in saved and k in defaults and current.get(k) == defaults[k])
    )
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diff[:8])
        raise ConfigError(
            f"workdir {workdir} holds a run with a different config ({shown}); resuming it "
            "would mix two runs. Use a new --workdir, or the saved config "
            f"({path}) to continue."
        )
