"""Per-layer shapes, parameters, MACs and receptive fields of a model (`jaxcnn.summary`).

Nothing is computed on real data: the model is traced abstractly (`jax.make_jaxpr` on
`ShapeDtypeStruct`s), and the jaxpr is walked once.

* Layers are the innermost Flax modules the forward pass calls (their names are the torch
  paths, e.g. ``features.0``); their output shapes are recorded as they are called.
* MACs (multiply-accumulates) are counted where they happen: every convolution, and every
  matrix product with a parameter operand (fully connected layers). This is the convention
  of torchvision's published "GFLOPS" (which are MACs): normalisation, activation, pooling
  and additions are not counted.
* The receptive field of every intermediate value is followed through convolutions,
  pooling windows, pads, slices and elementwise ops: for each spatial axis the size ``rf`` of
  the input region one output unit sees, the ``jump`` (distance in input pixels between
  adjacent units: the product of the strides so far) and ``start``, the input coordinate of
  the first unit's region (negative where it begins in padding). Unit i then sees input
  pixels [start + i * jump, start + i * jump + rf - 1], clipped to the image. After an
  operation that is not a sliding window (a flatten, an adaptive pool whose bins are not
  all equal, a gather) it is unknown (None); after a global pool it covers the whole input.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.extend import core as jcore


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Receptive-field geometry of one value, per spatial axis (H, W)."""

    rf: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]

    def window(self, i: int, j: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Input rows and columns [lo, hi) that output unit (i, j) sees (may exceed the image)."""
        r0 = self.start[0] + i * self.jump[0]
        c0 = self.start[1] + j * self.jump[1]
        return (r0, r0 + self.rf[0]), (c0, c0 + self.rf[1])


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One row of the summary.

    Attributes:
      name: the layer's path, dotted (the torch name for ported models), e.g. "layer1.0.conv1".
      kind: the module class, e.g. "Conv", "BatchNorm", "MaxPool".
      output_shape: shape of the layer's output for the summarised input.
      params: number of parameters the layer owns.
      macs: multiply-accumulates per forward pass of the whole batch.
      conv_macs, dense_macs: `macs` split into convolutions and matrix products.
      geometry: receptive field, jump and start of the output, or None when not a sliding
        window of the input.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    conv_macs: int
    dense_macs: int
    geometry: Geometry | None

    @property
    def receptive_field(self) -> tuple[int, int] | None:
        return None if self.geometry is None else self.geometry.rf

    @property
    def jump(self) -> tuple[int, int] | None:
        return None if self.geometry is None else self.geometry.jump


@dataclasses.dataclass(frozen=True)
class Summary:
    """Result of `summary`; `str()` gives the table."""

    model: str
    input_shape: tuple[int, ...]
    layers: tuple[LayerInfo, ...]
    total_params: int
    total_macs: int

    def layer(self, name: str) -> LayerInfo:
        """The row of layer `name`; ValueError listing the layer names if there is none."""
        for row in self.layers:
            if row.name == name:
                return row
        raise ValueError(
            f"{self.model} has no layer {name!r}; its layers are: "
            + ", ".join(r.name for r in self.layers)
        )

    @property
    def conv_macs(self) -> int:
        return sum(r.conv_macs for r in self.layers)

    @property
    def dense_macs(self) -> int:
        return sum(r.dense_macs for r in self.layers)

    @property
    def conv_params(self) -> int:
        return sum(r.params for r in self.layers if r.conv_macs)

    @property
    def dense_params(self) -> int:
        return sum(r.params for r in self.layers if r.dense_macs)

    def __str__(self) -> str:
        head = ("layer", "type", "output shape", "params", "MACs", "RF", "jump")
        rows: list[tuple[str, ...]] = [head]
        for r in self.layers:
            g = r.geometry
            rows.append(
                (
                    r.name,
                    r.kind,
                    "x".join(map(str, r.output_shape)),
                    f"{r.params:,}",
                    _si(r.macs),
                    "-" if g is None else f"{g.rf[0]}x{g.rf[1]}",
                    "-" if g is None else f"{g.jump[0]}x{g.jump[1]}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        right = {3, 4, 5, 6}
        lines = [
            "  ".join(
                c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
            )
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        tp, tm = max(self.total_params, 1), max(self.total_macs, 1)
        lines += [
            "-" * len(lines[0]),
            f"{self.model}, input {'x'.join(map(str, self.input_shape))}: "
            f"{self.total_params:,} parameters, {_si(self.total_macs)} MACs",
            f"  convolutions:     {100 * self.conv_params / tp:5.1f}% of parameters, "
            f"{100 * self.conv_macs / tm:5.1f}% of MACs",
            f"  fully connected:  {100 * self.dense_params / tp:5.1f}% of parameters, "
            f"{100 * self.dense_macs / tm:5.1f}% of MACs",
        ]
        return "\n".join(lines)


def _si(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f}{unit}"
    return str(n)


def summary(
    name_or_model: str | nn.Module,
    input_shape: tuple[int, int, int, int] | None = None,
    **model_kwargs,
) -> Summary:
    """Per-layer output shape, parameters, MACs, receptive field and jump, and totals.

    Args:
      name_or_model: a registered model name or a linen Module taking `(x, train=False)`.
      input_shape: (N, H, W, C); default (1, *input_size) of the registered model (e.g.
        (1, 224, 224, 3)); required for a Module.
      **model_kwargs: passed to `create_model` when a name is given.

    Returns:
      A `Summary`; print it for the table.
    """
    from .models import create_model, get_spec

    if isinstance(name_or_model, str):
        spec = get_spec(name_or_model)
        model = create_model(name_or_model, **model_kwargs)
        label = name_or_model
        if input_shape is None:
            input_shape = (1, *spec.input_size)
    elif isinstance(name_or_model, nn.Module):
        if model_kwargs:
            raise TypeError("summary: model keyword arguments need a model name, not a Module")
        if input_shape is None:
            raise ValueError("summary: `input_shape` (N, H, W, C) is required for a Module")
        model, label = name_or_model, type(name_or_model).__name__
    else:
        raise TypeError(
            f"summary: expected a model name or a linen Module; got {type(name_or_model)}"
        )
    in_shape = tuple(int(d) for d in input_shape)
    if len(in_shape) != 4:
        raise ValueError(f"summary: `input_shape` must be (N, H, W, C); got {in_shape}")

    x = jax.ShapeDtypeStruct(in_shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)

    calls: dict[tuple[str, ...], tuple[str, tuple[int, ...]]] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            shape = tuple(getattr(out, "shape", ()))
            calls.setdefault(tuple(context.module.path), (type(context.module).__name__, shape))
        return out

    def forward(variables, x):
        with nn.intercept_methods(record):
            return model.apply(variables, x, train=False)

    closed = jax.make_jaxpr(forward)(variables, x)
    # make_jaxpr's inputs are the leaves of (variables, x) in pytree order.
    flat_vars = jax.tree_util.tree_flatten_with_path(variables)[0]
    n_vars = len(flat_vars)
    param_idx = {i for i, (kp, _) in enumerate(flat_vars) if str(kp[0].key) == "params"}
    jaxpr = closed.jaxpr
    walker = _Walker()
    for i, v in enumerate(jaxpr.invars):
        if i in param_idx:
            walker.param_derived.add(v)
    walker.geom[jaxpr.invars[n_vars]] = Geometry((1, 1), (1, 1), (0, 0))
    walker.walk(jaxpr, prefix=())

    # Layers: the innermost modules called (a module whose path prefixes another is a block).
    paths = list(calls)
    leaves = [p for p in paths if p and not any(q[: len(p)] == p and q != p for q in paths)]
    leaf_set = set(leaves)
    params_per_layer = _params_per_path(variables.get("params", {}))
    rows = []
    for p in leaves:
        kind, shape = calls[p]
        stats = walker.by_scope.get(p)
        if stats is None:
            # The layer emitted no operation (an identity, e.g. an adaptive pool to the size it
            # is given): its output is its input, in call order the previous layer's output.
            prev = rows[-1] if rows else None
            if prev is not None and prev.output_shape == shape:
                stats = _Scope(last_geometry=prev.geometry)
            else:
                stats = _Scope()
        rows.append(
            LayerInfo(
                name=".".join(p),
                kind=kind,
                output_shape=shape,
                params=params_per_layer.get(p, 0),
                macs=stats.conv_macs + stats.dense_macs,
                conv_macs=stats.conv_macs,
                dense_macs=stats.dense_macs,
                geometry=stats.last_geometry,
            )
        )
    # Parameters of modules the evaluation pass never calls (auxiliary classifiers run only in
    # training) or that own parameters beside their children: listed, so the rows add up.
    for p, n in params_per_layer.items():
        if p not in leaf_set:
            kind, shape = calls.get(p, ("not run in evaluation", ()))
            rows.append(LayerInfo(".".join(p), kind, shape, n, 0, 0, 0, None))
    total_params = sum(math.prod(v.shape) for v in jax.tree.leaves(variables.get("params", {})))
    return Summary(
        model=label,
        input_shape=in_shape,
        layers=tuple(rows),
        total_params=int(total_params),
        total_macs=int(walker.total_macs),
    )


def _params_per_path(params) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for kp, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        path = tuple(str(k.key) for k in kp[:-1])
        out[path] = out.get(path, 0) + math.prod(leaf.shape)
    return out


@dataclasses.dataclass
class _Scope:
    conv_macs: int = 0
    dense_macs: int = 0
    last_geometry: Geometry | None = None


_WINDOW_PRIMS = {"reduce_window_max", "reduce_window_min", "reduce_window_sum", "reduce_window"}
_STRUCTURAL_NONSPATIAL = {"dot_general", "transpose", "gather", "dynamic_slice", "reshape"}


class _Walker:
    """Walks a jaxpr: receptive-field geometry per variable, MACs per module scope."""

    def __init__(self):
        self.geom: dict[Any, Geometry | None] = {}
        self.spatial: dict[Any, tuple[int, int, int]] = {}  # var -> (N, H, W) it refers to
        self.param_derived: set = set()
        self.by_scope: dict[tuple[str, ...], _Scope] = {}
        self.total_macs = 0

    # -- helpers
    def _g(self, v):
        return None if isinstance(v, jcore.Literal) else self.geom.get(v)

    def _scope(self, eqn, prefix) -> tuple[str, ...]:
        stack = str(eqn.source_info.name_stack)
        parts = tuple(p for p in stack.split("/") if p) if stack else ()
        return prefix + parts

    def _module_path(self, scope: tuple[str, ...]) -> tuple[str, ...]:
        # The first element of a Flax name stack is the top module's class name.
        return scope[1:]

    def walk(self, jaxpr, prefix):
        for eqn in jaxpr.eqns:
            scope = self._scope(eqn, prefix)
            sub = _subjaxpr(eqn)
            if sub is not None:
                self._walk_call(eqn, sub, scope)
            else:
                self._eqn(eqn, scope)
            path = self._module_path(scope)
            if path and eqn.outvars:
                # In program order, so a layer ends up with the geometry of its output.
                self.by_scope.setdefault(path, _Scope()).last_geometry = self._g(eqn.outvars[0])

    def _walk_call(self, eqn, sub, scope):
        inner = sub.jaxpr if hasattr(sub, "jaxpr") else sub
        args = eqn.invars[len(eqn.invars) - len(inner.invars) :]
        for outer, iv in zip(args, inner.invars, strict=True):
            if not isinstance(outer, jcore.Literal):
                self.geom[iv] = self.geom.get(outer)
                if outer in self.param_derived:
                    self.param_derived.add(iv)
        self.walk(inner, scope)
        for ov, iv in zip(eqn.outvars, inner.outvars, strict=True):
            self.geom[ov] = None if isinstance(iv, jcore.Literal) else self.geom.get(iv)
            if iv in self.param_derived:
                self.param_derived.add(ov)

    def _add_macs(self, scope, n, kind):
        path = self._module_path(scope)
        self.total_macs += n
        st = self.by_scope.setdefault(path, _Scope())
        if kind == "conv":
            st.conv_macs += n
        else:
            st.dense_macs += n

    def _eqn(self, eqn, scope):
        prim = eqn.primitive.name
        ins = [v for v in eqn.invars if not isinstance(v, jcore.Literal)]
        if ins and all(v in self.param_derived for v in ins):
            for o in eqn.outvars:
                self.param_derived.add(o)
            return  # computing on parameters only (casts, Winograd kernel transforms)
        out = eqn.outvars[0]
        out_shape = tuple(out.aval.shape)

        if prim == "conv_general_dilated":
            lhs, rhs = eqn.invars
            k = rhs.aval.shape  # HWIO in jaxcnn
            self._add_macs(scope, math.prod(out_shape) * math.prod(k[:-1]), "conv")
            g = self._g(lhs)
            p = eqn.params
            if g is not None and tuple(p["lhs_dilation"]) == (1, 1):
                g = _window_geometry(
                    g,
                    k[:2],
                    p["window_strides"],
                    [lo for lo, _ in p["padding"]],
                    p["rhs_dilation"],
                )
            else:
                g = None
            self.geom[out] = g
            return

        if prim == "dot_general":
            a, b = eqn.invars
            if a in self.param_derived or b in self.param_derived:
                (ca, _), _ = eqn.params["dimension_numbers"]
                contracted = math.prod(a.aval.shape[d] for d in ca)
                self._add_macs(scope, math.prod(out_shape) * contracted, "dense")
            self.geom[out] = None
            return

        if prim in _WINDOW_PRIMS:
            src = eqn.invars[0]
            g = self._g(src)
            p = eqn.params
            dims = p["window_dimensions"]
            if (
                g is not None
                and len(dims) == 4
                and dims[0] == dims[3] == 1
                and all(d == 1 for d in p.get("base_dilation", (1, 1, 1, 1)))
            ):
                self.geom[out] = _window_geometry(
                    g,
                    dims[1:3],
                    p["window_strides"][1:3],
                    [lo for lo, _ in p["padding"][1:3]],
                    p.get("window_dilation", (1, 1, 1, 1))[1:3],
                )
            else:
                self.geom[out] = None
            for o in eqn.outvars[1:]:
                self.geom[o] = self.geom[out]
            return

        if prim == "pad":
            g = self._g(eqn.invars[0])
            cfg = eqn.params["padding_config"]
            if g is not None and len(cfg) == 4 and all(c[2] == 0 for c in cfg[1:3]):
                start = _hw(g.start[a] - cfg[1 + a][0] * g.jump[a] for a in range(2))
                self.geom[out] = Geometry(g.rf, g.jump, start)
            else:
                self.geom[out] = None
            return

        if prim == "slice":
            g = self._g(eqn.invars[0])
            starts = eqn.params["start_indices"]
            strides = eqn.params["strides"] or (1,) * len(starts)
            if g is not None and len(starts) == 4:
                self.geom[out] = Geometry(
                    g.rf,
                    _hw(g.jump[a] * strides[1 + a] for a in range(2)),
                    _hw(g.start[a] + starts[1 + a] * g.jump[a] for a in range(2)),
                )
            else:
                self.geom[out] = None
            return

        if prim in _STRUCTURAL_NONSPATIAL:
            self.geom[out] = None
            return

        # Elementwise-like: the output's (N, H, W) is an input's (N, H, W). Combining several
        # aligned inputs (residual additions, concatenations) sees the union of their fields.
        cands = []
        for v in ins:
            g = self.geom.get(v)
            if g is not None and len(v.aval.shape) >= 3 and len(out_shape) >= 3:
                if tuple(v.aval.shape[:3]) == out_shape[:3]:
                    cands.append(g)
        for o in eqn.outvars:
            self.geom[o] = _union(cands) if cands else None


def _hw(per_axis: Iterable[int]) -> tuple[int, int]:
    """The (H, W) pair of a value computed per spatial axis (a generator over range(2))."""
    h, w = per_axis
    return h, w


def _window_geometry(g: Geometry, kernel, stride, pad_lo, dilation) -> Geometry:
    return Geometry(
        rf=_hw(g.rf[a] + (kernel[a] - 1) * dilation[a] * g.jump[a] for a in range(2)),
        jump=_hw(g.jump[a] * stride[a] for a in range(2)),
        start=_hw(g.start[a] - pad_lo[a] * g.jump[a] for a in range(2)),
    )


def _union(gs: list[Geometry]) -> Geometry:
    if len(gs) == 1:
        return gs[0]
    start = _hw(min(g.start[a] for g in gs) for a in range(2))
    end = _hw(max(g.start[a] + g.rf[a] for g in gs) for a in range(2))
    jump = _hw(max(g.jump[a] for g in gs) for a in range(2))
    return Geometry(_hw(end[a] - start[a] for a in range(2)), jump, start)


def _subjaxpr(eqn):
    """The jaxpr a call-like equation (pjit, custom_jvp/vjp, remat, ...) runs, if any."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is not None and (hasattr(sub, "eqns") or hasattr(sub, "jaxpr")):
            return sub
    return None


__all__ = ["Geometry", "LayerInfo", "Summary", "summary"]
