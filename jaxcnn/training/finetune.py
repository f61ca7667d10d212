"""Fine-tuning in the training engine: frozen layers, per-layer learning rates, and a start
from trained weights.

`train_and_evaluate` turns the config keys ``freeze`` and ``freeze_all_but_last`` into layer
paths with `frozen_layers`, ``lr_multipliers`` and ``head_lr_multiplier`` into a tree of
learning-rate factors with `lr_multipliers`, and ``init_from`` and ``init_mapping`` into
initial variables with `initialize_from` (whose "vgg_stages" mapping is `vgg_stage_init`).
`jaxcnn.transfer` re-exports these four for use outside the loop. Layer paths, patterns,
heads and blocks are those of `jaxcnn.anatomy`.

Where weights come from: `jaxcnn.convert` reads torchvision/timm files (.pth through
``torch.load(weights_only=True)``, .safetensors, .npz) and names missing or unexpected keys;
`jaxcnn.training.load_run` reads a jaxcnn workdir. Nothing here downloads.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from .. import convert, models
from ..anatomy import (
    _blocks,
    _check_against,
    _few,
    _flat,
    _head_axes,
    _head_layers,
    _layer,
    _layer_paths,
    _resolve,
    _template,
    _under,
    _unflat,
)
from ..convert import mapping as _mapping
from ..models import vgg
from .checkpoint import load_run

__all__ = ["MAPPINGS", "frozen_layers", "initialize_from", "lr_multipliers", "vgg_stage_init"]

MAPPINGS = ("auto", "strict", "vgg_stages")
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


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
    frozen=...)` (BatchNorm in inference mode, its statistics bit-identical);
    `jaxcnn.training.build_engine` does all three from a config.

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


def _patterns(patterns: str | Sequence[str], name: str) -> tuple[str, ...]:
    if isinstance(patterns, str):
        patterns = (patterns,) if patterns else ()
    patterns = tuple(patterns)
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise TypeError(f"{name}: patterns must be non-empty strings; got {p!r}")
    return patterns


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


def fine_tuning(
    config: Any, model: Any, input_shape: Sequence[int]
) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """The frozen layers and per-layer learning-rate multipliers a training config asks for.

    Args:
      config: a `jaxcnn.training.TrainConfig` (its keys `freeze`, `freeze_all_but_last`,
        `lr_multipliers` and `head_lr_multiplier`).
      model: the model being trained.
      input_shape: (H, W, C) of one example.

    Returns:
      (frozen layer paths, ``lr_multipliers``' result or None when every layer trains at the
      base rate).
    """
    freezing = bool(config.freeze) or config.freeze_all_but_last >= 0
    scaling = bool(config.lr_multipliers) or config.head_lr_multiplier != 1.0
    frozen: tuple[str, ...] = ()
    if freezing:
        all_but_last = config.freeze_all_but_last
        frozen = frozen_layers(
            model,
            config.freeze,
            all_but_last=None if all_but_last < 0 else all_but_last,
            input_shape=input_shape,
        )
    multipliers = None
    if scaling:
        multipliers = lr_multipliers(
            model,
            config.lr_multipliers,
            head_multiplier=config.head_lr_multiplier,
            input_shape=input_shape,
        )
    return frozen, multipliers


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


def _vgg_convs(name: str) -> list[tuple[int, int, int]]:
    """(features index, stage, position in stage) of each convolution of VGG `name`."""
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
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        name, variables, desc, _ = _read_source(source, target, kw)
        return str(name), variables, desc  # a workdir always names its model
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
        _, variables, info = load_run(path)
        desc = f"workdir {path} ({info['model']}, step {info['step']})"
        return info["model"], variables, desc, dict(info.get("model_kwargs") or {})
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weight file or workdir: {path}")
    variables, needed = _from_state_dict(name, convert.load_weights(path), model_kwargs, rename)
    return name, variables, path, needed
