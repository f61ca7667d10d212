"""Operations whose best form depends on the backend, chosen when the program is lowered.

Some operations are fastest in a different form on each backend: XLA:CPU sums an activation
over its leading axes 10-20x faster as a matrix product than as a reduction, while GPUs want
the plain reduction, and the cheapest max-pool gradient that keeps PyTorch's tie rule on CPU
is a gather that XLA:GPU runs slowly. `lax.platform_dependent` would put both forms in every
program and pick one in a `case` op at run time; in a network with a thousand such sites
that multiplies lowering and compile time. An operation made by `platform_op` is instead a
JAX primitive with one lowering per platform: the jit's own target decides which form is
emitted, and the program holds no `case`. (A `jax.export` for several platforms at once
still selects per site with a `case`, as JAX does for every platform-specific rule.)

Both forms are plain JAX functions of the same arguments and must compute the same function
(tests check them against each other and against PyTorch); only how fast they run differs.
Differentiation rules are the caller's to attach (`jax.interpreters.ad`), since they are the
same whichever form runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

try:  # public since JAX 0.4; kept working if it moves
    from jax.core import ShapedArray
except ImportError:  # pragma: no cover
    from jax._src.core import ShapedArray


def platform_op(
    name: str,
    *,
    cpu: Callable[..., jax.Array],
    default: Callable[..., jax.Array],
) -> Primitive:
    """A primitive computing ``cpu(*args, **params)`` on CPU and ``default(...)`` elsewhere.

    Args:
      name: the primitive's name (as it appears in jaxprs: "jaxcnn_" + name).
      cpu: the CPU form; args are arrays, params static keyword arguments (hashable).
      default: the form for every other backend (GPU, TPU).

    Returns:
      The primitive: ``prim.bind(*arrays, **params)`` evaluates it. Its abstract value
      (shape, dtype) is the default form's; eager calls compile it for the arguments' device.
    """
    prim = Primitive(f"jaxcnn_{name}")

    def abstract_eval(*avals, **params):
        out = jax.eval_shape(functools.partial(default, **params), *avals)
        # Under shard_map the output varies over the mesh axes its inputs vary over.
        vma = frozenset().union(*(getattr(a, "vma", frozenset()) for a in avals))
        if vma:
            # `vma` is the keyword of the JAX releases whose avals carry `.vma`; the installed
            # JAX's ShapedArray has no such keyword (nor avals a `.vma`), so pyright flags it.
            return ShapedArray(out.shape, out.dtype, vma=vma)  # pyright: ignore[reportCallIssue]
        return ShapedArray(out.shape, out.dtype)

    prim.def_abstract_eval(abstract_eval)

    @functools.cache
    def compiled(params: tuple):
        return jax.jit(functools.partial(prim.bind, **dict(params)))

    def impl(*args, **params):
        # Eagerly: one small jitted program per parameter set, placed with its arguments;
        # compiled even under `jax.disable_jit()`, whose jit would call this impl again.
        with jax.disable_jit(False):
            return compiled(tuple(sorted(params.items())))(*args)

    prim.def_impl(impl)
    mlir.register_lowering(prim, mlir.lower_fun(cpu, multiple_results=False), platform="cpu")
    mlir.register_lowering(prim, mlir.lower_fun(default, multiple_results=False))
    return prim


def batch_leading(prim: Primitive, fold: Callable, unfold: Callable) -> None:
    """A vmap rule for a primitive whose array arguments share one leading axis to fold into.

    Every argument is given the batch axis first (unbatched ones are broadcast), `fold`
    merges it into the arguments' own leading axis (``fold(args, size, **params) -> (args,
    params)``), the primitive runs once, and ``unfold(out, size, **params)`` (the original
    params) splits the result back.
    """

    def rule(args, dims, **params):
        size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
        moved = []
        for a, d in zip(args, dims, strict=True):
            if d is None:
                a = jax.numpy.broadcast_to(a, (size, *a.shape))
            else:
                a = jax.numpy.moveaxis(a, d, 0)
            moved.append(a)
        if size == 0 or any(a.size == 0 for a in moved):  # nothing to compute; no reshapes
            one = jax.eval_shape(
                lambda *a: prim.bind(*a, **params),
                *(jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in moved),
            )
            return jax.numpy.zeros((size, *one.shape), one.dtype), 0
        folded, new_params = fold(moved, size, **params)
        return unfold(prim.bind(*folded, **new_params), size, **params), 0

    batching.primitive_batchers[prim] = rule
