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

Vocabulary:

* A *layer path* is a Flax module path from the model's root, "/"-separated: "conv1",
  "layer1.0/bn1", "aux1/fc2". Layer names are the torchvision/timm names (`jaxcnn.layers`).
  *Patterns* are shell-style globs over layer paths (`fnmatch`; ``*`` also crosses "/"): a
  pattern selects the layers it matches and everything under them ("layer1.*", "*bn*").
* The *heads* are the layers whose variables are sized by ``num_classes``: the classifier
  and the auxiliary classifiers' last layers ("fc", "aux1/fc2", "AuxLogits/fc",
  "classifier.6"). They are found by comparing the model's variable shapes at two class
  counts, so no per-model table is needed.
* The *blocks* are the top-level layers that hold variables, in execution order: residual
  blocks for ResNets ("layer1.0", ...), single layers for LeNet, AlexNet and VGG, Inception
  modules for GoogLeNet. Depth freezing ("all but the last N blocks") counts the blocks that
  are not heads; heads always train.

Where weights come from: `jaxcnn.convert` reads torchvision/timm files (.pth through
``torch.load(weights_only=True)``, .safetensors, .npz) and names missing or unexpected keys;
`jaxcnn.training.load_run` reads a jaxcnn workdir. Nothing here downloads.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from . import convert, models
from .convert import mapping as _mapping

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

MAPPINGS = ("auto", "strict", "vgg_stages")
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")

Path = tuple[str, ...]  # (collection, *layer path, leaf name)


# ------------------------------------------------------------------------------ helpers
def _resolve(model: Any, input_shape: Sequence[int] | None, model_kwargs: dict) -> tuple:
    """(module, (H, W, C)) for a registry name or a linen Module."""
    if isinstance(model, str):
        spec = models.get_spec(model)
        module = models.create_model(model, **model_kwargs)
        shape = spec.input_size if input_shape is None else input_shape
    elif isinstance(model, nn.Module):
        if model_kwargs:
            raise TypeError(
                f"model options {sorted(model_kwargs)} apply only to a registry name; got a "
                f"{type(model).__name__} module, which already has its options"
            )
        if input_shape is None:
            raise ValueError(
                f"input_shape (H, W, C) is needed when model is a module ({type(model).__name__});"
                " with a registry name the model's design size is used"
            )
        module, shape = model, input_shape
    else:
        raise TypeError(f"model must be a registry name or a linen Module; got {model!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C); got {shape}")
    return module, shape


def _template(module: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """The module's variables as `jax.ShapeDtypeStruct`s (nothing computed)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)


def _flat(variables: Mapping[str, Any]) -> dict[Path, Any]:
    """{(collection, *layer path, leaf): leaf} of a variables dict."""
    out = {}
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(dict(variables))[0]:
        out[tuple(str(getattr(k, "key", k)) for k in keypath)] = leaf
    return out


def _unflat(flat: Mapping[Path, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, leaf in flat.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = leaf
    return out


def _layer(path: Path) -> str:
    """The layer path ("a/b") of a flat variable path."""
    return "/".join(path[1:-1])


def _under(layer: str, roots: Iterable[str]) -> bool:
    """`layer` is one of `roots` or lies inside one."""
    return any(layer == r or layer.startswith(r + "/") for r in roots)


def _few(items: Sequence[str], n: int = 8) -> str:
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _patterns(patterns: str | Sequence[str], name: str) -> tuple[str, ...]:
    if isinstance(patterns, str):
        patterns = (patterns,) if patterns else ()
    patterns = tuple(patterns)
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise TypeError(f"{name}: patterns must be non-empty strings; got {p!r}")
    return patterns


def _num_classes(module: nn.Module) -> int:
    k = getattr(module, "num_classes", None)
    if not isinstance(k, int):
        raise ValueError(
            f"{type(module).__name__} has no integer `num_classes` attribute, so its heads "
            "cannot be found; jaxcnn's models all have one"
        )
    return k


# ------------------------------------------------------------------------ model anatomy
def layer_paths(
    model: str | nn.Module, *, input_shape: Sequence[int] | None = None, **model_kwargs
) -> tuple[str, ...]:
    """Every layer path that holds variables, or contains layers that do, sorted.

    Args:
      model: a registry name (built with `model_kwargs`) or a linen Module.
      input_shape: (H, W, C) to trace the model at; default the registry's design size
        (required for a Module).

    Returns:
      e.g. ("bn1", "conv1", "fc", "layer1.0", "layer1.0/bn1", "layer1.0/conv1", ...).
    """
    module, shape = _resolve(model, input_shape, model_kwargs)
    return _layer_paths(_template(module, shape))


def _layer_paths(template: Mapping[str, Any]) -> tuple[str, ...]:
    out = set()
    for path in _flat(template):
        layer = path[1:-1]
        out.update("/".join(layer[:i]) for i in range(1, len(layer) + 1))
    return tuple(sorted(out))


def head_layers(
    model: str | nn.Module, *, input_shape: Sequence[int] | None = None, **model_kwargs
) -> tuple[str, ...]:
    """The layers whose variables are sized by ``num_classes``: the classifier heads.

    Found by comparing the model's variable shapes at ``num_classes`` and ``num_classes + 1``
    (abstractly, nothing is computed), so every registered model, and any model with a
    ``num_classes`` attribute, works without a table.

    Args:
      model: a registry name (built with `model_kwargs`) or a linen Module.
      input_shape: (H, W, C); default the registry's design size (required for a Module).

    Returns:
      Sorted layer paths, e.g. ("fc",) for ResNet, ("aux1/fc2", "aux2/fc2", "fc") for
      GoogLeNet with ``aux_logits=True``, ("classifier.6",) for VGG.
    """
    module, shape = _resolve(model, input_shape, model_kwargs)
    return _head_layers(module, shape)


def _head_layers(module: nn.Module, shape: tuple[int, ...]) -> tuple[str, ...]:
    k = _num_classes(module)
    a = _flat(_template(module, shape))
    b = _flat(_template(module.clone(num_classes=k + 1), shape))
    if set(a) != set(b):
        raise ValueError(
            f"{type(module).__name__}: the variables' structure changes with num_classes; "
            "heads cannot be told apart from the rest"
        )
    heads = sorted({_layer(p) for p in a if a[p].shape != b[p].shape})
    if not heads:
        raise ValueError(f"{type(module).__name__}: no layer is sized by num_classes")
    return tuple(heads)


def _head_axes(module: nn.Module, shape: tuple[int, ...]) -> dict[Path, int]:
    """{head variable path: the axis that has num_classes entries}."""
    k = _num_classes(module)
    a = _flat(_template(module, shape))
    b = _flat(_template(module.clone(num_classes=k + 1), shape))
    axes = {}
    for p in a:
        if a[p].shape != b[p].shape:
            (axis,) = (
                i for i, (x, y) in enumerate(zip(a[p].shape, b[p].shape, strict=True)) if x != y
            )
            axes[p] = axis
    return axes


def blocks(
    model: str | nn.Module, *, input_shape: Sequence[int] | None = None, **model_kwargs
) -> tuple[str, ...]:
    """The top-level layers that hold variables, in the order the forward pass runs them.

    Args:
      model: a registry name (built with `model_kwargs`) or a linen Module.
      input_shape: (H, W, C); default the registry's design size (required for a Module).

    Returns:
      e.g. ("conv1", "conv2", "fc1", "fc2", "fc3") for LeNet-5, ("conv1", "bn1", "layer1.0",
      ..., "layer4.1", "fc") for ResNet-18.
    """
    module, shape = _resolve(model, input_shape, model_kwargs)
    return _blocks(module, shape)


def _blocks(module: nn.Module, shape: tuple[int, ...]) -> tuple[str, ...]:
    order: list[str] = []

    def record(next_fn, args, kwargs, context):
        path = context.module.path
        if context.method_name == "__call__" and len(path) >= 1 and path[0] not in order:
            order.append(path[0])
        return next_fn(*args, **kwargs)

    with nn.intercept_methods(record):
        template = _template(module, shape)
    holding = {p[1] for p in _flat(template)}
    return tuple(b for b in order if b in holding)


# ------------------------------------------------------------------------ freezing, rates
def frozen_layers(
    model: str | nn.Module,
    patterns: str | Sequence[str] = (),
    *,
    all_but_last: int | None = None,
    input_shape: Sequence[int] | None = None,
    **model_kwargs,
) -> tuple[str, ...]:
    """The layers to freeze, from name patterns and/or depth.

    Pass the result to `jaxcnn.training.make_optimizer(..., frozen=...)` (no updates, no
    optimizer state, no weight decay), `jaxcnn.training.train_step(..., frozen=...)` (no
    gradients below, parameters bit-identical) and `jaxcnn.models.configure_batch_norm(model,
    frozen=...)` (BatchNorm in inference mode, its statistics bit-identical).

    Args:
      model: a registry name (built with `model_kwargs`) or a linen Module.
      patterns: glob patterns over layer paths ("conv1", "layer1.*", "*bn*"); each must
        match at least one layer.
      all_but_last: freeze every block but the last N that are not heads (see `blocks`);
        0 freezes every block but the heads (a linear probe on the last features). None: off.
      input_shape: (H, W, C); default the registry's design size (required for a Module).

    Returns:
      Sorted layer paths, none inside another; empty if nothing is frozen.

    Raises:
      ValueError: a pattern that matches no layer (the message lists the blocks), an
        `all_but_last` outside [0, number of non-head blocks], or everything frozen.
    """
    module, shape = _resolve(model, input_shape, model_kwargs)
    patterns = _patterns(patterns, "frozen_layers")
    template = _template(module, shape)
    candidates = _layer_paths(template)
    chosen: set[str] = set()
    for p in patterns:
        hit = [c for c in candidates if fnmatch.fnmatchcase(c, p)]
        if not hit:
            raise ValueError(
                f"freeze pattern {p!r} matches no layer of {type(module).__name__}; its blocks "
                f"are {_few(_blocks(module, shape), 40)} (patterns are globs over '/'-separated "
                "layer paths, e.g. 'layer1.*' or 'layer1.0/bn1')"
            )
        chosen.update(hit)
    if all_but_last is not None:
        if not isinstance(all_but_last, int) or isinstance(all_but_last, bool):
            raise TypeError(f"all_but_last must be an int or None; got {all_but_last!r}")
        heads = _head_layers(module, shape)
        head_blocks = {h.split("/")[0] for h in heads}
        trunk = [b for b in _blocks(module, shape) if b not in head_blocks]
        if not 0 <= all_but_last <= len(trunk):
            raise ValueError(
                f"all_but_last must be in [0, {len(trunk)}] for {type(module).__name__}, whose "
                f"{len(trunk)} blocks below the heads {list(heads)} are {_few(trunk, 40)}; "
                f"got {all_but_last}"
            )
        chosen.update(trunk[: len(trunk) - all_but_last])
    # Keep only the outermost paths: a path freezes everything under it.
    result = sorted(c for c in chosen if not _under(c, chosen - {c}))
    leaves = [_layer(p) for p in _flat(template) if p[0] == "params"]
    if result and all(_under(layer, result) for layer in leaves):
        raise ValueError(f"freezing {_few(result)} leaves no parameter to train")
    return tuple(result)


def lr_multipliers(
    model: str | nn.Module,
    groups: Sequence[tuple[str, float]] = (),
    *,
    head_multiplier: float = 1.0,
    input_shape: Sequence[int] | None = None,
    **model_kwargs,
) -> dict[str, Any]:
    """Per-parameter learning-rate multipliers: discriminative fine-tuning.

    A parameter's multiplier is that of the first group whose pattern matches its layer
    (1.0 if none does), times `head_multiplier` if it belongs to a head. Pass the result to
    `jaxcnn.training.make_optimizer(..., lr_multipliers=...)`.

    Args:
      model: a registry name (built with `model_kwargs`) or a linen Module.
      groups: ((pattern, multiplier), ...), e.g. (("layer4.*", 1.0), ("*", 0.1)).
      head_multiplier: the heads' extra factor (new heads often train at 10x).
      input_shape: (H, W, C); default the registry's design size (required for a Module).

    Returns:
      A tree of floats with the structure of the model's "params".

    Raises:
      ValueError: a pattern that matches no layer, or a multiplier that is negative or not
        finite.
    """
    module, shape = _resolve(model, input_shape, model_kwargs)
    template = _template(module, shape)
    candidates = _layer_paths(template)
    parsed = []
    for group in groups:
        if (
            isinstance(group, str)
            or not isinstance(group, Sequence)
            or len(group) != 2
            or not isinstance(group[0], str)
        ):
            raise TypeError(
                f"lr_multipliers: each group must be (pattern, multiplier); got {group!r}"
            )
        pattern, mult = group[0], float(group[1])
        if not (math.isfinite(mult) and mult >= 0):
            raise ValueError(f"lr_multipliers: multiplier of {pattern!r} must be >= 0; got {mult}")
        matched = [c for c in candidates if fnmatch.fnmatchcase(c, pattern)]
        if not matched:
            raise ValueError(
                f"lr_multipliers: pattern {pattern!r} matches no layer of "
                f"{type(module).__name__}; its blocks are {_few(_blocks(module, shape), 40)}"
            )
        parsed.append((matched, mult))
    head_multiplier = float(head_multiplier)
    if not (math.isfinite(head_multiplier) and head_multiplier >= 0):
        raise ValueError(f"head_multiplier must be >= 0; got {head_multiplier}")
    heads = _head_layers(module, shape)
    flat = {}
    for path in _flat(template):
        if path[0] != "params":
            continue
        layer = _layer(path)
        m = next((mult for matched, mult in parsed if _under(layer, matched)), 1.0)
        flat[path[1:]] = m * (head_multiplier if _under(layer, heads) else 1.0)
    return _unflat(flat)


# --------------------------------------------------------------------------- new heads
def _check_against(
    given: Mapping[Path, Any], template: Mapping[Path, Any], *, skip: Sequence[str], what: str
) -> None:
    """ValueError naming missing, unexpected and mis-shaped variables outside `skip` layers."""
    missing = sorted(
        "/".join(p) for p in template if p not in given and not _under(_layer(p), skip)
    )
    unexpected = sorted(
        "/".join(p) for p in given if p not in template and not _under(_layer(p), skip)
    )
    mismatched = sorted(
        f"{'/'.join(p)}: given {tuple(np.shape(given[p]))}, expected {tuple(template[p].shape)}"
        for p in template
        if p in given and not _under(_layer(p), skip) and np.shape(given[p]) != template[p].shape
    )
    problems = []
    if missing:
        problems.append(f"missing ({len(missing)}): {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected ({len(unexpected)}): {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_few(mismatched)}")
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))


def _fresh(module: nn.Module, shape: tuple[int, ...], rng: jax.Array, layers: Sequence[str]):
    """The variables under `layers` of a fresh `module.init(rng, ...)`.

    Only those leaves are outputs of the jitted init, so XLA drops the rest of the
    initialisation (and the forward pass) as dead code: cheap even for VGG's 100M-parameter
    first fully connected layer. The values equal those of the full init with `rng`.
    """
    x = jnp.zeros((1, *shape), jnp.float32)

    def init(key):
        flat = _flat(module.init(key, x, train=False))
        return {"/".join(p): v for p, v in flat.items() if _under(_layer(p), layers)}

    out = jax.jit(init)(rng)
    return {tuple(k.split("/")): v for k, v in out.items()}


def replace_head(
    name: str | nn.Module,
    variables: Mapping[str, Any],
    num_classes: int,
    *,
    rng: jax.Array,
    input_shape: Sequence[int] | None = None,
    **model_kwargs,
) -> dict[str, Any]:
    """`variables` with new, freshly initialised heads for `num_classes` classes.

    The classifier and the auxiliary classifiers' last layers (`head_layers`) are replaced
    by the initialisation ``create_model(name, num_classes=num_classes).init(rng, ...)``
    gives them; every other variable (parameters and BatchNorm statistics) is kept as it is
    (the same arrays). This is torchvision's ``model.fc = nn.Linear(512, num_classes)``
    (and ``model.AuxLogits.fc = ...``) for jaxcnn variables.

    Args:
      name: the registry name of the model `variables` belong to (or the linen Module).
      variables: {"params": ..., "batch_stats": ...?} of that model, heads of any size.
      num_classes: the new number of classes.
      rng: the key of the new heads' initialisation.
      input_shape: (H, W, C); default the registry's design size (required for a Module).
      **model_kwargs: the model's options (e.g. ``aux_logits=True``).

    Returns:
      New variables for the model with `num_classes` outputs.

    Raises:
      ValueError: `variables` are not those of this architecture (naming the missing,
        unexpected and mis-shaped variables outside the heads), or a bad `num_classes`.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"replace_head: num_classes must be a positive int; got {num_classes!r}")
    if isinstance(name, str):
        module, shape = _resolve(name, input_shape, {**model_kwargs, "num_classes": num_classes})
    else:
        module, shape = _resolve(name, input_shape, model_kwargs)
        module = module.clone(num_classes=num_classes)
    heads = _head_layers(module, shape)
    template = _flat(_template(module, shape))
    given = _flat(variables)
    label = name if isinstance(name, str) else type(name).__name__
    _check_against(given, template, skip=heads, what=f"replace_head: variables do not fit {label}")
    fresh = _fresh(module, shape, rng, heads)
    return _unflat({p: fresh[p] if _under(_layer(p), heads) else given[p] for p in template})


# ------------------------------------------------------------------------ weight sources
def _from_state_dict(
    name: str, state_dict: Mapping[str, Any], model_kwargs: dict, rename=()
) -> tuple[dict, dict]:
    """(jaxcnn variables of `name` with the file's class count, the model options the file
    needs) from a torch-style state dict in any naming `convert.adapt_state_dict` knows."""
    state_dict, needed = convert.adapt_state_dict(
        name, state_dict, rename=rename, model_kwargs=None
    )
    conflicts = {k: v for k, v in needed.items() if k in model_kwargs and model_kwargs[k] != v}
    if conflicts:
        given = ", ".join(f"{k}={model_kwargs[k]!r}" for k in conflicts)
        wanted = ", ".join(f"{k}={v!r}" for k, v in conflicts.items())
        raise ValueError(
            f"{name}: this checkpoint's weights give its outputs only with {wanted}; got "
            f"{given} (leave the option out: load_pretrained sets it)"
        )
    model_kwargs = {**needed, **model_kwargs}
    module, shape = _resolve(name, None, model_kwargs)
    num_classes = None
    for path, axis in _head_axes(module, shape).items():
        key = _mapping._torch_key(path[0], path[1:])
        if key in state_dict:
            # The torch layout of a (in, out) kernel is (out, in): map the axis across.
            t_shape = np.shape(state_dict[key])
            flax_shape = np.shape(_mapping._from_torch_layout(path[-1], np.empty(t_shape, np.int8)))
            if len(flax_shape) > axis:
                num_classes = int(flax_shape[axis])
                break
    kw = dict(model_kwargs)
    if num_classes is not None:
        kw["num_classes"] = num_classes
    try:
        return convert.from_torch(name, state_dict, **kw), needed
    except ValueError as e:
        unexpected = set(state_dict) - _torch_keys(_template(module, shape))
        hint = ""
        if "aux_logits" not in model_kwargs and any(
            k.startswith(_AUX_PREFIXES) for k in unexpected
        ):
            hint = (
                " The file holds auxiliary classifiers: pass aux_logits=True (and drop them "
                "afterwards if you do not want them)."
            )
        raise ValueError(f"{e}{hint}") from e


def _torch_keys(variables: Mapping[str, Any]) -> set[str]:
    """The torch state-dict keys of jaxcnn variables (or of their shapes)."""
    return {_mapping._torch_key(p[0], p[1:]) for p in _flat(variables)}


def _is_variables(source: Mapping) -> bool:
    return "params" in source and isinstance(source["params"], Mapping)


def _read_source(
    source: Any, name: str, model_kwargs: dict, rename=()
) -> tuple[str | None, dict, str, dict]:
    """(model name or None if unknown, variables, a description, the model options the
    source needs) of a weight source."""
    if isinstance(source, Mapping):
        if _is_variables(source):
            return None, dict(source), "the given variables", {}
        variables, needed = _from_state_dict(name, source, model_kwargs, rename)
        return name, variables, "the given state dict", needed
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "the weight source must be a path (a jaxcnn workdir or a weight file: "
            f"{', '.join(convert.weights.SUFFIXES)}), a state dict or a variables dict; got "
            f"{type(source).__name__}"
        )
    path = os.fspath(source)
    if os.path.isdir(path):
        from .training.checkpoint import load_run

        _, variables, info = load_run(path)
        desc = f"workdir {path} ({info['model']}, step {info['step']})"
        return info["model"], variables, desc, dict(info.get("model_kwargs") or {})
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weight file or workdir: {path}")
    variables, needed = _from_state_dict(name, convert.load_weights(path), model_kwargs, rename)
    return name, variables, path, needed


def _classes_of(variables: Mapping, module: nn.Module, shape: tuple[int, ...]) -> int | None:
    """The class count `variables`' heads are sized for (None if they have no heads)."""
    flat = _flat(variables)
    counts = {
        int(np.shape(flat[p])[axis])
        for p, axis in _head_axes(module, shape).items()
        if p in flat and len(np.shape(flat[p])) > axis
    }
    if len(counts) > 1:
        raise ValueError(f"the heads of the given variables disagree on the class count: {counts}")
    return counts.pop() if counts else None


def load_pretrained(
    name: str,
    source: Any,
    *,
    num_classes: int | None = None,
    rng: jax.Array | None = None,
    rename: Sequence[tuple[str, str]] = (),
    **model_kwargs,
) -> tuple[nn.Module, dict[str, Any]]:
    """A model and its pretrained variables, from a weight file or a jaxcnn workdir.

    Args:
      name: the registry name of the architecture (`jaxcnn.list_models()`).
      source: a weight file (any of `convert.load_weights`' formats: PyTorch's
        ``.pth``/``.pt``/``.th``/``.tar``/``.bin``/``.ckpt`` read with
        ``torch.load(weights_only=True)`` and unwrapped, ``.safetensors``, ``.npz``), a jaxcnn
        workdir (`jaxcnn.training.load_run`), or an in-memory state dict or variables dict.
        State dicts may use torchvision/timm names, carry wrapper prefixes (``module.``,
        ``model.``, ``_orig_mod.``) or come from a third-party port the registry knows
        (`convert.adapt_state_dict`); the returned model gets the options such a port
        needs (e.g. ``shortcut_pad="both"`` for akamaster/pytorch_resnet_cifar10's CIFAR
        ResNets).
      num_classes: the classes wanted; None keeps the source's. A different count needs
        `rng`: the heads are then replaced (`replace_head`).
      rng: key for new heads' initialisation.
      rename: ``(regex, replacement)`` rules for a state dict's keys
        (`convert.from_torch`).
      **model_kwargs: the model's options the weights were made with (e.g.
        ``aux_logits=True`` for torchvision's GoogLeNet file, which holds its auxiliary
        classifiers).

    Returns:
      (model, variables): ``create_model(name, num_classes=..., **options)`` and its
      variables, ready for ``model.apply(variables, x, train=False)``.

    Raises:
      ValueError: the weights are for another architecture (naming the missing, unexpected
        and mis-shaped keys), or for another class count and no `rng` was given.
      FileNotFoundError: no such file or workdir.
    """
    src_name, variables, desc, needed = _read_source(source, name, model_kwargs, rename)
    if src_name is not None and src_name != name:
        raise ValueError(
            f"load_pretrained: {desc} holds a {src_name}, not a {name} (mismatched architecture)"
        )
    # Options the source needs (a third-party port's shortcut layout, a workdir's own).
    model_kwargs = {**needed, **model_kwargs}
    module, shape = _resolve(name, None, model_kwargs)
    src_classes = _classes_of(variables, module, shape)
    if src_classes is None:
        raise ValueError(f"load_pretrained: {desc} has no classifier head for {name}")
    src_module = module.clone(num_classes=src_classes)
    _check_against(
        _flat(variables),
        _flat(_template(src_module, shape)),
        skip=(),
        what=f"load_pretrained: {desc} does not fit {name}",
    )
    if num_classes is None or num_classes == src_classes:
        return src_module, variables
    if rng is None:
        heads = _head_layers(module, shape)
        raise ValueError(
            f"load_pretrained: {desc} has {src_classes}-class heads ({', '.join(heads)}) but "
            f"num_classes={num_classes}: pass rng= to replace them with new ones "
            f"(transfer.replace_head), or num_classes={src_classes} to keep them"
        )
    new = replace_head(name, variables, num_classes, rng=rng, **model_kwargs)
    return models.create_model(name, num_classes=num_classes, **model_kwargs), new


def initialize_from(
    source: Any,
    variables: Mapping[str, Any],
    *,
    model: str,
    mapping: str = "auto",
    model_kwargs: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Initialise `variables` (a fresh init of `model`) from a weight source: ``init_from``.

    Mappings:

    * "auto": variables are matched by layer name; the heads (`head_layers`) keep their
      fresh values when the source's differ in shape (another class count) or are absent.
      Anything else missing, unexpected or mis-shaped is an error.
    * "strict": every variable must be in the source with the same shape, heads included.
    * "vgg_stages": `vgg_stage_init`, from a shallower VGG (a workdir, or a torchvision VGG
      file whose variant is recognised from its keys).

    Args:
      source: a jaxcnn workdir, a weight file (.pth/.safetensors/.npz, torchvision names),
        or a state dict / variables dict in memory.
      variables: the target model's freshly initialised variables; kept where nothing is
        copied (the training loop passes its seeded initialisation).
      model: the target's registry name.
      mapping: one of `MAPPINGS`.
      model_kwargs: the target model's options.
      input_shape: (H, W, C) the model runs at; default its design size.

    Returns:
      (variables, report): the initialised variables and {"source": description,
      "copied": [layer paths], "new": [layer paths left as initialised]} ("pairs":
      [(source layer, target layer), ...] too for "vgg_stages").

    Raises:
      ValueError: a mismatched architecture or (for "strict") class count, naming what
        differs; an unknown mapping.
    """
    if mapping not in MAPPINGS:
        raise ValueError(f"init_mapping must be one of {MAPPINGS}; got {mapping!r}")
    kw = dict(model_kwargs or {})
    if mapping == "vgg_stages":
        src_name, src_vars, desc = _read_vgg_source(source, model, kw)
        out, report = vgg_stage_init(src_name, src_vars, model, variables)
        return out, {"source": desc, **report}
    module, shape = _resolve(model, input_shape, kw)
    src_name, src_vars, desc, _ = _read_source(source, model, kw)
    if src_name is not None and src_name != model:
        hint = (
            "; to initialise a deeper VGG from a shallower one use init_mapping='vgg_stages'"
            if src_name.startswith("vgg") and model.startswith("vgg")
            else ""
        )
        raise ValueError(
            f"init_from: {desc} holds a {src_name}, but the model is {model} "
            f"(mismatched architecture){hint}"
        )
    heads = () if mapping == "strict" else _head_layers(module, shape)
    given, target = _flat(src_vars), _flat(variables)
    # Heads may differ in shape (class count) or be absent; everything else must match.
    _check_against(
        given,
        {p: v for p, v in target.items() if not _under(_layer(p), heads)},
        skip=heads,
        what=f"init_from: {desc} does not fit {model} (mismatched architecture or options)",
    )
    out, copied, new = {}, set(), set()
    for p, leaf in target.items():
        if p in given and np.shape(given[p]) == np.shape(leaf):
            out[p] = jnp.asarray(given[p], dtype=leaf.dtype)
            copied.add(_layer(p))
        else:  # a head of another class count, or one the source lacks
            out[p] = leaf
            new.add(_layer(p))
    report = {"source": desc, "copied": sorted(copied - new), "new": sorted(new)}
    return _unflat(out), report


# ---------------------------------------------------------------------- VGG's stages
def _vgg_convs(name: str) -> list[tuple[int, int, int]]:
    """(features index, stage, position in stage) of each convolution of VGG `name`."""
    from .models import vgg

    if name not in vgg.VARIANTS:
        raise ValueError(f"vgg_stages needs VGG models ({', '.join(vgg.VARIANTS)}); got {name!r}")
    cfg = vgg.CFGS[vgg.VARIANTS[name][0]]
    bn = name.endswith("_bn")
    out, i, stage, pos = [], 0, 0, 0
    for v in cfg:
        if v == "M":
            i, stage, pos = i + 1, stage + 1, 0
            continue
        out.append((i, stage, pos))
        i, pos = i + (3 if bn else 2), pos + 1
    return out


def _read_vgg_source(source: Any, target: str, kw: dict) -> tuple[str, dict, str]:
    """(VGG variant, variables, description); a file's variant is found from its keys."""
    from .models import vgg

    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        return _read_source(source, target, kw)[:3]  # the workdir names its model
    if isinstance(source, Mapping) and _is_variables(source):
        keys = _torch_keys(source)
        desc = "the given variables"
    else:
        if isinstance(source, Mapping):
            state_dict, desc = source, "the given state dict"
        else:
            state_dict, desc = convert.load_weights(source), os.fspath(source)
        keys = set(state_dict)
    for name in vgg.VARIANTS:
        module = models.create_model(name)
        if _torch_keys(_template(module, (32, 32, 3))) == keys:
            if isinstance(source, Mapping) and _is_variables(source):
                return name, dict(source), desc
            return name, _from_state_dict(name, state_dict, {})[0], desc
    raise ValueError(
        f"init_mapping='vgg_stages': {desc} is not a VGG of torchvision's layout "
        f"({', '.join(vgg.VARIANTS)})"
    )


def vgg_stage_init(
    source_name: str,
    source_variables: Mapping[str, Any],
    target_name: str,
    target_variables: Mapping[str, Any],
    *,
    num_conv: int = 4,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Initialise a deeper VGG from a trained shallower one, as Simonyan & Zisserman did.

    "To circumvent this problem [the instability of deep nets' gradients], we began with
    training the configuration A, shallow enough to be trained with random initialisation.
    Then, when training deeper architectures, we initialised the first four convolutional
    layers and the last three fully-connected layers with the layers of net A (the
    intermediate layers were initialised randomly)." (ICLR 2015, Section 3.1.)

    A's first four convolutions are conv1_1, conv2_1, conv3_1 and conv3_2 (A has one
    convolution in each of its first two stages); they go to the layers of the same stage
    and position in the deeper net, whose shapes are the same: for vgg11 -> vgg16,
    features.0 -> features.0, features.3 -> features.5, features.6 -> features.10,
    features.8 -> features.12. The fully connected layers classifier.0/3/6 are copied as
    they are (classifier.6 only if the class counts agree; otherwise it stays as
    initialised). With BatchNorm variants, each copied convolution's BatchNorm comes along.

    Args:
      source_name, target_name: VGG registry names (both with or both without BatchNorm).
      source_variables: the trained source's variables.
      target_variables: the target's initialised variables (kept where nothing is copied).
      num_conv: how many of the source's first convolutions to copy (4 in the paper).

    Returns:
      (variables, report): report holds "copied" and "new" (target layer paths) and "pairs"
      [(source layer, target layer), ...].

    Raises:
      ValueError: not VGGs, mixed BatchNorm, or a copied layer whose shapes differ.
    """
    src_convs, dst_convs = _vgg_convs(source_name), _vgg_convs(target_name)
    if source_name.endswith("_bn") != target_name.endswith("_bn"):
        raise ValueError(
            f"vgg_stages: {source_name} and {target_name} must both have BatchNorm or neither"
        )
    if not isinstance(num_conv, int) or not 1 <= num_conv <= len(src_convs):
        raise ValueError(f"num_conv must be an int in [1, {len(src_convs)}]; got {num_conv!r}")
    bn = target_name.endswith("_bn")
    where = {(stage, pos): i for i, stage, pos in dst_convs}
    pairs = []
    for i, stage, pos in src_convs[:num_conv]:
        if (stage, pos) not in where:
            raise ValueError(
                f"vgg_stages: {target_name} has no convolution at stage {stage + 1}, position "
                f"{pos + 1} for {source_name}'s features.{i}"
            )
        j = where[(stage, pos)]
        pairs.append((f"features.{i}", f"features.{j}"))
        if bn:
            pairs.append((f"features.{i + 1}", f"features.{j + 1}"))
    pairs += [(f"classifier.{k}", f"classifier.{k}") for k in (0, 3, 6)]
    src, dst = _flat(source_variables), _flat(target_variables)
    out = dict(dst)
    copied, kept_head = set(), False
    for a, b in pairs:
        a_leaves = {p[:1] + p[-1:]: v for p, v in src.items() if _layer(p) == a}
        b_leaves = {p[:1] + p[-1:]: p for p in dst if _layer(p) == b}
        if not a_leaves or set(a_leaves) != set(b_leaves):
            raise ValueError(
                f"vgg_stages: {source_name}'s {a} ({sorted('/'.join(k) for k in a_leaves)}) "
                f"does not match {target_name}'s {b} ({sorted('/'.join(k) for k in b_leaves)})"
            )
        shapes_equal = all(np.shape(a_leaves[k]) == np.shape(dst[b_leaves[k]]) for k in a_leaves)
        if not shapes_equal:
            if b == "classifier.6":  # another class count: the head stays as initialised
                kept_head = True
                continue
            raise ValueError(
                f"vgg_stages: {source_name}'s {a} and {target_name}'s {b} differ in shape"
            )
        for k, v in a_leaves.items():
            out[b_leaves[k]] = jnp.asarray(v, dtype=dst[b_leaves[k]].dtype)
        copied.add(b)
    if kept_head:
        pairs = [(a, b) for a, b in pairs if b != "classifier.6"]
    all_layers = {_layer(p) for p in dst}
    report = {"copied": sorted(copied), "new": sorted(all_layers - copied), "pairs": pairs}
    return _unflat(out), report


# --------------------------------------------------------------------- feature extraction
def extract_features(
    model: nn.Module,
    variables: Mapping[str, Any],
    data: Any,
    *,
    layer: str,
    batch_size: int = 256,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """Pooled features of one layer for a whole data set: the input of a linear probe.

    The model runs in inference mode (``train=False``) and the output of `layer` (its
    ``__call__``) is captured; a (N, H, W, C) output is averaged over H and W (global
    average pooling), a (N, C) one is returned as it is, anything else flattened.

    Args:
      model: the linen Module (e.g. from `load_pretrained` or `load_run`).
      variables: its variables.
      data: float images (N, H, W, C), normalised as the model expects, or a
        `jaxcnn.data` source (uint8 images, all of one size), which is scaled to [0, 1]
        and normalised with `mean` and `std` (default: the source's own). Its labels are
        ``[data[i]["label"] for i in range(len(data))]``.
      layer: a layer path, e.g. "fc2", "layer4.1", "features.28", "avgpool".
      batch_size: images per forward pass (the last batch is padded, so one compilation).
      mean, std: per-channel normalisation of a source, in [0, 1] units.

    Returns:
      (N, D) float32 numpy features.

    Raises:
      ValueError: an unknown layer (the message lists the model's layers), bad data.
    """
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"extract_features: layer must be a layer path string; got {layer!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"extract_features: batch_size must be a positive int; got {batch_size!r}")
    images = _images(data, mean, std)
    n = images.shape[0]

    probe = jax.eval_shape(
        functools.partial(_pooled, model, layer),
        variables,
        jax.ShapeDtypeStruct(images[:1].shape, jnp.float32),
    )
    if probe is None:
        called = _called_layers(model, variables, images[:1])
        raise ValueError(
            f"extract_features: {type(model).__name__} has no layer {layer!r}; its layers are "
            f"{_few(called, 60)}"
        )
    run = functools.partial(_pooled_jit, model, layer)
    out = []
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size]
        real = x.shape[0]
        if real < batch_size and n > batch_size:  # pad: one compiled shape for every batch
            x = np.concatenate([x, np.zeros((batch_size - real, *x.shape[1:]), x.dtype)])
        out.append(np.asarray(run(variables, jnp.asarray(x)))[:real])
    return np.concatenate(out, axis=0)


def _pooled(model: nn.Module, layer: str, variables: Mapping, x: jax.Array) -> jax.Array | None:
    """`layer`'s output for `x` (global-average-pooled if 4-D), None if no such layer ran."""

    def wanted(mdl, method_name):
        return method_name == "__call__" and "/".join(mdl.path) == layer

    _, state = model.apply(
        variables, x, train=False, capture_intermediates=wanted, mutable=["intermediates"]
    )
    found = jax.tree.leaves(state.get("intermediates", {}))
    if not found:
        return None
    y = found[0].astype(jnp.float32)
    if y.ndim == 4:
        return jnp.mean(y, axis=(1, 2))
    return y.reshape(y.shape[0], -1)


# Compiled once per (model, layer, input shape): modules hash by their fields, so repeated
# calls (one per data set, one per seed in a benchmark) reuse the compilation.
_pooled_jit = jax.jit(_pooled, static_argnums=(0, 1))


def _images(data: Any, mean, std) -> np.ndarray:
    """Float32 (N, H, W, C) model inputs from an array or a jaxcnn.data source."""
    from .data.sources import Source

    if isinstance(data, Source):
        h, w, c = data.image_shape
        if h is None or w is None:
            raise ValueError(
                f"extract_features: {data.name} has images of different sizes; resize them "
                "to one size first (e.g. with jaxcnn.data's loaders) and pass the array"
            )
        raw = np.stack([data[i]["image"] for i in range(len(data))]).astype(np.float32) / 255.0
        m = np.asarray(data.mean if mean is None else mean, np.float32).reshape(1, 1, 1, -1)
        s = np.asarray(data.std if std is None else std, np.float32).reshape(1, 1, 1, -1)
        if m.shape[-1] != c or s.shape[-1] != c:
            raise ValueError(f"extract_features: mean and std need {c} values (one per channel)")
        return (raw - m) / s
    if mean is not None or std is not None:
        raise ValueError(
            "extract_features: mean/std apply to a jaxcnn.data source; normalise arrays yourself"
        )
    images = np.asarray(data)
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(
            f"extract_features: data must be (N, H, W, C) images or a jaxcnn.data source; got "
            f"shape {images.shape}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(
            f"extract_features: image arrays must be float (normalised as the model expects); "
            f"got {images.dtype}"
        )
    return images.astype(np.float32, copy=False)


def _called_layers(model: nn.Module, variables: Mapping, x: np.ndarray) -> list[str]:
    order: list[str] = []

    def record(next_fn, args, kwargs, context):
        name = "/".join(context.module.path)
        if context.method_name == "__call__" and name and name not in order:
            order.append(name)
        return next_fn(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return order
