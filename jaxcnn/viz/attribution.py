"""Projections to pixels: gradient saliency, deconvnet, guided backprop, Grad-CAM, occlusion.

What each answers, for an input x and a target (a class logit, or one unit of a layer):

* `saliency` (Simonyan et al., 2014): the gradient d target / d x.
* `deconvnet` (Zeiler & Fergus, 2014): the same backward pass except that at every ReLU the
  signal is rectified, ``relu(g)``, instead of being masked by where the forward input was
  positive. It shows what pattern the target is tuned to, largely independent of x.
* `guided_backprop` (Springenberg et al., 2015): both at once, ``g * (x > 0) * (g > 0)``:
  only the positive evidence that actually flowed in this forward pass.
* `grad_cam` (Selvaraju et al., 2017): a layer's maps weighted by the spatial mean of the
  target's gradient with respect to them, rectified; coarse but class-discriminative.
* `occlusion` (Zeiler & Fergus, 2014, section 4.2): slide a grey square over the input and
  record how much the target class's probability drops.

How the backward rules are swapped in, without hooks or model surgery: the forward pass is
traced to a jaxpr (`jax.make_jaxpr`) and re-evaluated by a small interpreter that replaces
every activation by a `jax.custom_vjp` function with the rule's backward pass, then
differentiated with `jax.vjp`. An activation is recognised by what it computes, not by how
it was called: a ReLU is any ``max(x, 0)`` (which is what `jax.nn.relu` / `flax.linen.relu`,
`jnp.maximum(x, 0)` all trace to; `jax.nn.relu` wraps it in a `custom_jvp` call, which is
replaced whole), a tanh is the ``tanh`` primitive. So this works for every registered model
whatever module calls the ReLU, reused or not (hook-based tools, which attach to
`nn.ReLU` modules, miss functional ReLUs and break on shared ones), and nothing global is
patched. Activations inside `custom_vjp` functions or control-flow primitives (none in the
zoo) are left as they are.

tanh networks (LeNet-5): the papers define the rules for ReLUs only. Here the same
rectification is applied at every tanh: deconvnet passes ``relu(g)`` (as for a ReLU, the
local derivative is dropped), guided backprop passes ``tanh'(x) * relu(g)``. For a ReLU
both reduce to the papers' rules exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.extend import core as jcore

from . import activations as _act

__all__ = [
    "GradCAM",
    "Occlusion",
    "deconvnet",
    "grad_cam",
    "guided_backprop",
    "occlusion",
    "saliency",
]

RULES = ("gradient", "deconvnet", "guided")

# ----------------------------------------------------------------------------- backward rules


def _relu(x):
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _rectified(fn, derivative, rule: str):
    """`fn` with the backward pass of `rule` ("deconvnet" or "guided"), as a custom_vjp."""

    @jax.custom_vjp
    def act(x):
        return fn(x)

    def fwd(x):
        y = fn(x)
        return y, (x, y)

    def bwd(res, g):
        x, y = res
        g = _relu(g)  # both rules pass only positive signal down
        if rule == "guided":
            g = g * derivative(x, y)
        return (g,)

    act.defvjp(fwd, bwd)
    return act


_RULE_FUNCTIONS = {
    (kind, rule): _rectified(fn, d, rule)
    for kind, fn, d in (
        ("relu", _relu, lambda x, y: (x > 0).astype(x.dtype)),
        ("tanh", jnp.tanh, lambda x, y: 1 - y * y),
    )
    for rule in ("deconvnet", "guided")
}

# Primitives that call a sub-jaxpr with the equation's operands: inlined, so that activations
# inside jitted helpers are replaced too.
_CALLS = {"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint"}


def _is_zero(v) -> bool:
    if not isinstance(v, jcore.Literal):
        return False
    val = np.asarray(v.val)
    return val.size == 1 and val.reshape(()) == 0


def _sub(eqn):
    """(jaxpr, consts) that a call equation runs, or None."""
    for key in ("jaxpr", "call_jaxpr"):
        sub = eqn.params.get(key)
        if sub is not None and hasattr(sub, "eqns"):
            return sub, ()
        if sub is not None and hasattr(sub, "jaxpr"):
            return sub.jaxpr, sub.consts
    return None


def _relu_operand(eqn) -> int | None:
    """Index of the operand a ReLU equation rectifies, or None if it is not a ReLU.

    A ReLU is ``max(v, 0)`` with 0 a literal, or a call (jit, custom_jvp) whose whole body is
    one: `jax.nn.relu` traces to ``custom_jvp_call[jit[max x 0.0]]``.
    """
    name = eqn.primitive.name
    if name == "max" and len(eqn.invars) == 2:
        a, b = eqn.invars
        if _is_zero(b) and not isinstance(a, jcore.Literal):
            return 0
        if _is_zero(a) and not isinstance(b, jcore.Literal):
            return 1
        return None
    if (name in _CALLS or name == "custom_jvp_call") and len(eqn.invars) == 1:
        sub = _sub(eqn)
        if sub is None:
            return None
        jaxpr, consts = sub
        if consts or len(jaxpr.eqns) != 1 or len(jaxpr.invars) != 1 or len(jaxpr.outvars) != 1:
            return None
        (inner,) = jaxpr.eqns
        k = _relu_operand(inner)
        if k is not None and inner.invars[k] is jaxpr.invars[0]:
            if inner.outvars[0] is jaxpr.outvars[0]:
                return 0
    return None


def _evaluate(jaxpr, consts, args, rule: str) -> list:
    """Evaluate `jaxpr` with every ReLU and tanh given the backward pass of `rule`."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, val in zip(jaxpr.constvars, consts, strict=True):
        env[v] = val
    for v, val in zip(jaxpr.invars, args, strict=True):
        env[v] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        k = _relu_operand(eqn)
        if k is not None:
            outs = [_RULE_FUNCTIONS["relu", rule](invals[k])]
        elif name == "tanh":
            outs = [_RULE_FUNCTIONS["tanh", rule](invals[0])]
        elif name in _CALLS and (call := _sub(eqn)) is not None:
            sub, sub_consts = call
            outs = _evaluate(sub, sub_consts, invals, rule)
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            if isinstance(params, tuple):  # (subfuns, params) in older JAX releases
                subfuns, params = params
                invals = [*subfuns, *invals]
            ans = eqn.primitive.bind(*invals, **params)
            outs = ans if eqn.primitive.multiple_results else [ans]
        for v, val in zip(eqn.outvars, outs, strict=True):
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


def with_rule(f, rule: str):
    """`f(*args)` whose activations backpropagate with `rule` ("gradient" leaves f as it is).

    Args:
      f: a function of arrays (pytrees allowed) returning one array.
      rule: "gradient", "deconvnet" or "guided".

    Returns:
      A function with the same forward values as `f`; its derivatives follow `rule`.
    """
    if rule not in RULES:
        raise ValueError(f"with_rule: `rule` must be one of {RULES}; got {rule!r}")
    if rule == "gradient":
        return f

    def g(*args):
        closed = jax.make_jaxpr(f)(*args)
        (out,) = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args), rule)
        return out

    return g


# ----------------------------------------------------------------------------- targets


def _class_targets(target, n: int, num_classes: int, fn: str) -> np.ndarray:
    """(N,) int32 class indices, -1 meaning "the predicted class"."""
    if target is None:
        return np.full((n,), -1, np.int32)
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full((n,), t)
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(
            f"{fn}: `target` must be None (the predicted class), an int or (N,) = ({n},) ints; "
            f"got {target!r}"
        )
    if t.min() < 0 or t.max() >= num_classes:
        raise ValueError(
            f"{fn}: `target` must hold classes in [0, {num_classes}); got {t.tolist()}"
        )
    return t.astype(np.int32)


def _positions(position, n: int, hw: tuple[int, int], fn: str) -> np.ndarray:
    """(N, 2) int32 unit positions, -1 meaning "where the unit is largest"."""
    if position is None:
        return np.full((n, 2), -1, np.int32)
    p = np.asarray(position)
    if p.shape == (2,):
        p = np.broadcast_to(p, (n, 2))
    if p.shape != (n, 2) or not np.issubdtype(p.dtype, np.integer):
        raise ValueError(
            f"{fn}: `position` must be None (the unit's maximum), (row, col) or (N, 2) ints; "
            f"got {position!r}"
        )
    if (p < 0).any() or (p[:, 0] >= hw[0]).any() or (p[:, 1] >= hw[1]).any():
        raise ValueError(
            f"{fn}: `position` must lie in the layer's {hw[0]}x{hw[1]} map; got {p.tolist()}"
        )
    return p.astype(np.int32)


def _selector(y: jax.Array, target: jax.Array, position: jax.Array) -> jax.Array:
    """One-hot cotangent of `y` at the target of every example.

    y (N, K) logits: class ``target[n]`` (argmax where -1). y (N, h, w, C) activations: channel
    ``target[n]`` (the channel with the largest activation where -1) at ``position[n]`` (that
    channel's argmax where -1).
    """
    n = y.shape[0]
    if y.ndim == 2:
        t = jnp.where(target < 0, jnp.argmax(y, axis=1), target)
        return jax.nn.one_hot(t, y.shape[1], dtype=y.dtype)
    _, h, w, c = y.shape
    t = jnp.where(target < 0, jnp.argmax(jnp.max(y, axis=(1, 2)), axis=1), target)
    maps = jnp.take_along_axis(y, t.reshape(n, 1, 1, 1), axis=3)[..., 0]  # (N, h, w)
    flat = jnp.argmax(maps.reshape(n, h * w), axis=1)
    i = jnp.where(position[:, 0] < 0, flat // w, position[:, 0])
    j = jnp.where(position[:, 1] < 0, flat % w, position[:, 1])
    oh = jax.nn.one_hot(i, h, dtype=y.dtype)[:, :, None, None]
    ow = jax.nn.one_hot(j, w, dtype=y.dtype)[:, None, :, None]
    oc = jax.nn.one_hot(t, c, dtype=y.dtype)[:, None, None, :]
    return oh * ow * oc


# ----------------------------------------------------------------------------- projections


def _project_impl(model, layer, rule, fn, variables, x, target, position):
    def f(variables, x):
        logits, act = _act.forward(model, variables, x, layer, fn=fn)
        if layer is None:
            return logits
        assert act is not None  # forward returns a named layer's output (or raises)
        return act

    g = with_rule(f, rule)
    y, vjp = jax.vjp(lambda x: g(variables, x), x)
    (gx,) = vjp(_selector(y, target, position))
    return gx


_project_jit = jax.jit(_project_impl, static_argnums=(0, 1, 2, 3))


def _project(model, variables, x, target, layer, position, rule, fn):
    x = _act.check_images(x, fn)
    n = x.shape[0]
    if layer is None:
        _, logits_shape = _act.trace_shapes(model, tuple(x.shape))
        t = _class_targets(target, n, logits_shape[-1], fn)
        p = _positions(None, n, (1, 1), fn)
    else:
        shape = _act.checked_layer_shape(model, layer, x.shape, fn)
        if len(shape) not in (2, 4):
            raise ValueError(
                f"{fn}: layer {layer!r} has output shape {shape}; expected (N, h, w, C) or (N, F)"
            )
        t = _class_targets(target, n, shape[-1], fn)  # a channel of the layer
        if len(shape) == 4:
            p = _positions(position, n, shape[1:3], fn)
        else:
            if position is not None:
                raise ValueError(
                    f"{fn}: `position` needs a spatial layer; {layer!r} has output {shape}"
                )
            p = _positions(None, n, (1, 1), fn)
    return _project_jit(model, layer, rule, fn, variables, x, jnp.asarray(t), jnp.asarray(p))


_PROJECTION_ARGS = """
    Args:
      model: a linen Module taking ``(x, train=False)``; any registered model.
      variables: its variables.
      x: (N, H, W, C) float input, normalised as in training.
      target: without `layer`: the class whose logit is projected, None for the predicted
        class, an int for all images or (N,) ints. With `layer`: the channel of that layer,
        None for the channel with the largest activation in each image.
      layer: project one unit of this layer (module path) instead of a class logit, as
        Zeiler & Fergus project a single activation with all others set to zero.
      position: with a spatial `layer`: the unit's (row, col) in the map, or (N, 2); None for
        where the channel is largest.

    Returns:
      (N, H, W, C) float array, the projection onto the input pixels.

    Raises:
      ValueError: an unknown `layer` (listing the valid ones), or a target or position out
        of range.
"""


def saliency(model: nn.Module, variables, x, target=None, *, layer=None, position=None):
    """Plain gradient of the target with respect to the input (Simonyan et al., 2014)."""
    return _project(model, variables, x, target, layer, position, "gradient", "saliency")


def deconvnet(model: nn.Module, variables, x, target=None, *, layer=None, position=None):
    """Zeiler & Fergus's deconvnet projection: ReLUs pass back ``relu(g)``."""
    return _project(model, variables, x, target, layer, position, "deconvnet", "deconvnet")


def guided_backprop(model: nn.Module, variables, x, target=None, *, layer=None, position=None):
    """Guided backpropagation (Springenberg et al., 2015): ReLUs pass ``g * (x > 0) * (g > 0)``."""
    return _project(model, variables, x, target, layer, position, "guided", "guided_backprop")


for _f in (saliency, deconvnet, guided_backprop):
    if _f.__doc__ is not None:  # None under python -OO
        _f.__doc__ += "\n" + _PROJECTION_ARGS


# ----------------------------------------------------------------------------- Grad-CAM


class GradCAM(NamedTuple):
    """What `grad_cam` returns (arrays on the host).

    Attributes:
      heatmap: (N, H, W) the map brought to input resolution, each value placed at the
        centre of its unit's receptive field and interpolated linearly between centres.
      cam: (N, h, w) ``relu(sum_c weights[n, c] * A[n, :, :, c])`` at the layer's resolution.
      weights: (N, C) the spatial means of d logit / d A.
      target: (N,) the classes explained.
    """

    heatmap: np.ndarray
    cam: np.ndarray
    weights: np.ndarray
    target: np.ndarray


def _grad_cam_impl(model, layer, variables, x, delta, target):
    def f(delta):
        logits, act = _act.forward(model, variables, x, layer, delta=delta, fn="grad_cam")
        assert act is not None  # forward returns a named layer's output (or raises)
        return logits, act

    logits, vjp, act = jax.vjp(f, delta, has_aux=True)
    t = jnp.where(target < 0, jnp.argmax(logits, axis=1), target)
    (g,) = vjp(jax.nn.one_hot(t, logits.shape[1], dtype=logits.dtype))
    weights = jnp.mean(g, axis=(1, 2))  # (N, C)
    cam = jax.nn.relu(jnp.sum(act * weights[:, None, None, :], axis=3))
    return cam, weights, t


_grad_cam_jit = jax.jit(_grad_cam_impl, static_argnums=(0, 1))


def _interpolation_matrix(n_out: int, n_in: int, first: float, step: float) -> np.ndarray:
    """(n_out, n_in) weights of linear interpolation from samples at ``first + i * step``.

    Pixels beyond the first or last sample take its value (no extrapolation).
    """
    u = np.clip((np.arange(n_out) - first) / step, 0, n_in - 1)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = u - lo
    m = np.zeros((n_out, n_in), np.float64)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def grad_cam(model: nn.Module, variables, x, layer: str, target=None) -> GradCAM:
    """Grad-CAM (Selvaraju et al., 2017) at a convolutional layer.

    The gradient of the target logit with respect to the layer's output is taken by adding a
    zero perturbation to that output through `flax.linen.intercept_methods` and
    differentiating with respect to it, so any layer of any model works unchanged.

    Args:
      model: a linen Module taking ``(x, train=False)``.
      variables: its variables.
      x: (N, H, W, C) float input.
      layer: module path of a layer with (N, h, w, C) output, typically the last
        convolutional block ("pool2" in LeNet-5, "features.12" in AlexNet, "layer4.1" in ResNet-18).
      target: class per image: None for the predicted class, an int, or (N,) ints.

    Returns:
      `GradCAM` with the input-resolution `heatmap` (N, H, W), the coarse `cam`, the channel
      `weights` and the `target` classes.

    Raises:
      ValueError: unknown `layer` (listing the valid ones), a layer without spatial output,
        or a target out of range.
    """
    x = _act.check_images(x, "grad_cam")
    shape = _act.checked_layer_shape(model, layer, x.shape, "grad_cam")
    if len(shape) != 4:
        raise ValueError(
            f"grad_cam: `layer` must have a spatial (N, h, w, C) output; {layer!r} has {shape}"
        )
    _, logits_shape = _act.trace_shapes(model, tuple(x.shape))
    t = _class_targets(target, x.shape[0], logits_shape[-1], "grad_cam")
    delta = jnp.zeros(shape, x.dtype)
    cam, weights, t = _grad_cam_jit(model, layer, variables, x, delta, jnp.asarray(t))
    cam = np.asarray(cam, np.float64)
    geom = _act.receptive_field(model, layer, x.shape)
    size = x.shape[1:3]
    mats = []
    for a in range(2):
        if geom is None:  # spread the map evenly over the image
            step = size[a] / shape[1 + a]
            first = step / 2 - 0.5
        else:  # a unit's value belongs at the centre of its receptive field
            step = geom.jump[a]
            first = geom.start[a] + (geom.rf[a] - 1) / 2
        mats.append(_interpolation_matrix(size[a], shape[1 + a], first, step))
    heat = np.einsum("Hh,nhw,Ww->nHW", mats[0], cam, mats[1])
    return GradCAM(
        heatmap=heat.astype(np.float32),
        cam=cam.astype(np.float32),
        weights=np.asarray(weights),
        target=np.asarray(t),
    )


# ----------------------------------------------------------------------------- occlusion


@dataclasses.dataclass(frozen=True)
class Occlusion:
    """What `occlusion` returns (host arrays).

    Attributes:
      prob: (N, gh, gw) probability of the target class with the square's top-left corner at
        (rows[i], cols[j]).
      baseline: (N,) the probability without occlusion.
      drop: (N, gh, gw) ``baseline - prob``: how much covering that square costs.
      heatmap: (N, H, W) per pixel, the mean drop over the squares that cover it.
      rows, cols: top-left corners of the square along each axis.
      size: the square's side; target: (N,) the classes.
    """

    prob: np.ndarray
    baseline: np.ndarray
    drop: np.ndarray
    heatmap: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    size: int
    target: np.ndarray


def _occluded_probs_impl(model, variables, image, masks, fill, target):
    m = masks[..., None]  # (B, H, W, 1)
    xs = image[None] * (1 - m) + fill.reshape(1, 1, 1, -1) * m
    logits = model.apply(variables, xs, train=False)
    return jax.nn.softmax(logits, axis=-1)[:, target]


_occluded_probs = jax.jit(_occluded_probs_impl, static_argnums=(0,))


def _probs_impl(model, variables, x):
    return jax.nn.softmax(model.apply(variables, x, train=False), axis=-1)


_probs = jax.jit(_probs_impl, static_argnums=(0,))


def _corners(n: int, size: int, stride: int) -> np.ndarray:
    c = list(range(0, n - size + 1, stride))
    if c[-1] != n - size:  # so that the last row/column of pixels is covered too
        c.append(n - size)
    return np.asarray(c)


def occlusion(
    model: nn.Module,
    variables,
    x,
    target=None,
    *,
    size: int | None = None,
    stride: int | None = None,
    fill: float | Sequence[float] = 0.0,
    batch_size: int = 128,
) -> Occlusion:
    """Occlusion sensitivity (Zeiler & Fergus, 2014, section 4.2, Figure 7).

    A square of side `size` filled with `fill` is slid over each image with step `stride`;
    for each placement the softmax probability of the target class is recorded. Where the
    probability drops, the network was using what the square hides.

    Args:
      model: a linen Module taking ``(x, train=False)``.
      variables: its variables.
      x: (N, H, W, C) float input, normalised as in training.
      target: the true class per image (None: the predicted class; an int; or (N,) ints).
      size: side of the square; default a quarter of the smaller image side (8 at 32x32).
      stride: step between placements; default ``max(1, size // 4)``.
      fill: the square's value in the model's input space, a float or one per channel. The
        default 0 is grey, the data mean, for inputs normalised with the data's mean and std.
      batch_size: occluded copies evaluated per call.

    Returns:
      `Occlusion` with the probability map, the drop and a per-pixel heatmap.

    Raises:
      ValueError: bad `size`, `stride`, `fill` or `target`.
    """
    x = _act.check_images(x, "occlusion")
    n, h, w, c = x.shape
    if size is None:
        size = max(1, round(min(h, w) / 4))
    if not isinstance(size, int | np.integer) or not 1 <= size <= min(h, w):
        raise ValueError(f"occlusion: `size` must be an int in [1, {min(h, w)}]; got {size!r}")
    if stride is None:
        stride = max(1, size // 4)
    if not isinstance(stride, int | np.integer) or stride < 1:
        raise ValueError(f"occlusion: `stride` must be a positive int; got {stride!r}")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"occlusion: `batch_size` must be a positive int; got {batch_size!r}")
    fill_arr = np.asarray(fill, np.float32).reshape(-1)
    if fill_arr.size not in (1, c):
        raise ValueError(f"occlusion: `fill` must be a float or {c} floats; got {fill!r}")
    fill_arr = np.broadcast_to(fill_arr, (c,)).astype(np.asarray(x).dtype)

    base = np.asarray(_probs(model, variables, x))  # (N, K)
    t = _class_targets(target, n, base.shape[1], "occlusion")
    t = np.where(t < 0, base.argmax(axis=1), t).astype(np.int32)
    baseline = base[np.arange(n), t]

    rows, cols = _corners(h, size, stride), _corners(w, size, stride)
    masks = np.zeros((len(rows), len(cols), h, w), np.float32)
    for i, r in enumerate(rows):
        for j, q in enumerate(cols):
            masks[i, j, r : r + size, q : q + size] = 1
    masks = masks.reshape(-1, h, w)
    p = masks.shape[0]
    b = min(batch_size, p)
    pad = (-p) % b  # whole batches only: one compilation
    padded = np.concatenate([masks, np.zeros((pad, h, w), np.float32)]) if pad else masks
    probs = np.empty((n, p), np.float32)
    fill_j = jnp.asarray(fill_arr)
    for k in range(n):
        out = [
            np.asarray(
                _occluded_probs(
                    model, variables, x[k], jnp.asarray(padded[s : s + b]), fill_j, int(t[k])
                )
            )
            for s in range(0, p + pad, b)
        ]
        probs[k] = np.concatenate(out)[:p]
    prob = probs.reshape(n, len(rows), len(cols))
    drop = baseline[:, None, None] - prob
    # Per pixel: mean drop of the squares covering it (every pixel is covered by >= 1 square).
    cover = masks.reshape(len(rows), len(cols), h, w)
    heat = np.einsum("nij,ijhw->nhw", drop, cover) / cover.sum(axis=(0, 1))[None]
    return Occlusion(
        prob=prob,
        baseline=baseline.astype(np.float32),
        drop=drop.astype(np.float32),
        heatmap=heat.astype(np.float32),
        rows=rows,
        cols=cols,
        size=int(size),
        target=t,
    )
