"""XLA compiler options that make these networks faster, applied per compiled function.

    import jax, jaxcnn
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False),
                      compiler_options=jaxcnn.compiler_options())

The training engine (`jaxcnn.training.DataParallel`) passes them to every step it compiles
with `jax.jit` (modes "jit" and "none"; `jax.pmap` takes no compiler options); code that jits
a model itself passes them as above.

Why per function and not through ``XLA_FLAGS``: an ``XLA_FLAGS`` entry is read once, when the
backend starts, and an option this jaxlib does not know aborts the process. Options given to
`jax.jit` apply to that function only, leave the user's other code alone, and an unknown
one is a catchable error, so `compiler_options` checks them once and drops them if this
jaxlib rejects them.

The options, and the evidence for each (`benchmarks/README.md` has the profiles):

* CPU, ``xla_cpu_experimental_ynn_fusion_type=""`` (no YNNPACK fusions). jaxlib 0.10's
  XLA:CPU turns convolutions and the elementwise work around them into YNNPACK kernels. For
  these networks they are slower than XLA's own: ResNet-18's batch-1 forward pass took 49-62
  ms with them and 23-24 ms without, ResNet-50's 77-88 ms and 50-52 ms, and LeNet-5's conv1
  kernel gradient 7.1 ms against 1.1 ms (2-core x86-64, jaxlib 0.10.2). Results agree to
  float32 rounding.
* GPU and TPU: none; XLA's defaults there are what the benchmarks measure.

Set ``JAXCNN_XLA_OPTIONS=0`` to get XLA's defaults everywhere (for A/B timing, or to report
a bug). An option the user sets in ``XLA_FLAGS`` is left to the user's value.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator

import jax
import jax.numpy as jnp

# Per platform: option -> value, as `jax.jit(..., compiler_options=...)` takes them.
RECOMMENDED: dict[str, dict[str, str]] = {
    "cpu": {"xla_cpu_experimental_ynn_fusion_type": ""},
}
# For programs that run once, such as a model's initialisation: LLVM's optimisation level 1
# instead of 2. Initialising LeNet-5 compiled in 0.75 s instead of 1.9 s, ResNet-18 in 1.9 s
# instead of 4.0 s and GoogLeNet in 6.3 s instead of 14.7 s, with bit-identical parameters
# (2-core x86-64, jaxlib 0.10.2; tests/test_xla.py checks the equality). Level 0 would be
# faster still but changes the last bit of some initial values (no multiply-add fusion).
RECOMMENDED_RUN_ONCE: dict[str, dict[str, str]] = {
    "cpu": {"xla_backend_optimization_level": "1"},
}
ENV_SWITCH = "JAXCNN_XLA_OPTIONS"


def run_once_compiler_options(platform: str | None = None) -> dict[str, str]:
    """`compiler_options` plus the options for programs that run once (initialisation): they
    compile faster and compute the same values, to the bit, as XLA's defaults.

    Only CPU has such options so far (``RECOMMENDED_RUN_ONCE``); elsewhere this is
    `compiler_options`. ``JAXCNN_XLA_OPTIONS=0`` and ``XLA_FLAGS`` apply as there.
    """
    if _switched_off():
        return {}
    platform = (platform or jax.default_backend()).lower()
    user_flags = os.environ.get("XLA_FLAGS", "")
    extra = {k: v for k, v in _accepted(platform, "run_once").items() if f"--{k}" not in user_flags}
    return {**compiler_options(platform), **extra}


def _switched_off() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")


def compiler_options(platform: str | None = None) -> dict[str, str]:
    """The compiler options jaxcnn recommends for `platform`, as `jax.jit` takes them.

    Args:
      platform: "cpu", "gpu", "cuda", "rocm" or "tpu"; default: JAX's default backend.

    Returns:
      A new dict (possibly empty) of option name -> value: empty when ``JAXCNN_XLA_OPTIONS=0``,
      minus the options already named in ``XLA_FLAGS``, and minus any this jaxlib rejects
      (checked once per process by compiling a small function, with a warning naming it).
    """
    if _switched_off():
        return {}
    platform = (platform or jax.default_backend()).lower()
    options = _accepted(platform)
    user_flags = os.environ.get("XLA_FLAGS", "")
    return {k: v for k, v in options.items() if f"--{k}" not in user_flags}


@functools.cache
def _accepted(platform: str, kind: str = "step") -> dict[str, str]:
    options = (RECOMMENDED if kind == "step" else RECOMMENDED_RUN_ONCE).get(platform, {})
    if not options:
        return {}
    try:
        # This process's own device: in a multi-process run the first global one may not be.
        device = jax.local_devices(backend=platform)[0]
    except RuntimeError:  # that backend is not available here: nothing to check it against
        return dict(options)
    accepted = {}
    x = jax.device_put(jnp.ones((2, 6, 6, 1), jnp.float32), device)
    w = jnp.ones((3, 3, 1, 1), jnp.float32)

    def probe(x):  # a convolution, so a pass the option configures actually runs
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    for name, value in options.items():
        try:
            jax.jit(probe, compiler_options={name: value}).lower(x).compile()
        except Exception as err:  # jaxlib rejects it (a renamed or removed option)
            why = (str(err).splitlines() or [type(err).__name__])[0][:200]
            warnings.warn(
                f"jaxcnn: this jaxlib ({jax.__version__}) rejects the XLA option {name}={value!r}; "
                f"compiling without it ({why})",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        accepted[name] = value
    return accepted


# ------------------------------------------------------------- persistent compilation cache
_CACHE_DIR_SET_HERE: str | None = None


def _current_cache_dir() -> str | None:
    """JAX's ``jax_compilation_cache_dir`` setting (None or "" when unset)."""
    # JAX adds its options to Config at import (setattr), so pyright does not know them;
    # config.read() refuses options with a context manager and says to read the attribute.
    return jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue]


def enable_compilation_cache(directory: str | os.PathLike) -> str:
    """Turn on JAX's persistent compilation cache in `directory` for this process.

    Compiled programs are written there and read back by any later process that compiles the
    same program (same model, shapes, options, jaxlib and device), so a resumed or repeated
    run skips XLA's compilation: tens of seconds for the larger models on a GPU. The training
    engine uses it for the length of a run (`compilation_cache`) with its workdir's
    ``compile_cache/`` (or the config's ``compilation_cache`` folder).

    A cache folder the user chose (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config.update("jax_compilation_cache_dir", ...)``) wins: it is left as it is.
    JAX's own thresholds apply (only programs that took at least
    ``jax_persistent_cache_min_compile_time_secs``, 1 s by default, to compile are stored).

    Args:
      directory: the cache folder; created if missing.

    Returns:
      The cache folder in use.
    """
    current = _current_cache_dir()
    if current and current != _CACHE_DIR_SET_HERE:
        return current  # the user's own choice
    path = os.path.abspath(os.fspath(directory))
    os.makedirs(path, exist_ok=True)
    _set_cache_dir(path)
    return path


def _set_cache_dir(path: str | None) -> None:
    global _CACHE_DIR_SET_HERE
    if path == (_current_cache_dir() or None):
        return
    from jax.experimental.compilation_cache import compilation_cache as cc

    jax.config.update("jax_compilation_cache_dir", path)
    cc.reset_cache()  # re-read the setting at the next compilation
    _CACHE_DIR_SET_HERE = path


@contextlib.contextmanager
def compilation_cache(directory: str | os.PathLike) -> Iterator[str]:
    """`enable_compilation_cache` for the length of a ``with`` block; afterwards the
    process's previous setting (usually none) is back, so later compilations in the same
    session (a notebook) do not keep writing into this folder."""
    previous = _current_cache_dir()
    path = enable_compilation_cache(directory)
    try:
        yield path
    finally:
        if previous != _current_cache_dir():
            _set_cache_dir(previous or None)
