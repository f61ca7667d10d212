"""Shared test utilities: finite-difference gradients, torch <-> NHWC conversions, and
dotted-key config overrides."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def fd_check(fn, args, argnums=(0,), *, eps=1e-6, rtol=1e-6, atol=1e-8, seed=0):
    """Check reverse-mode gradients of `fn` against central finite differences, elementwise.

    Must run under float64 (the `x64` fixture). The scalar checked is
    L(args) = sum(fn(*args) * ct) for a fixed random cotangent `ct`, so every entry of the
    Jacobian-transpose-vector product is compared, not just a reduction. All perturbations
    of one argument are evaluated in a single vmapped, jitted call, which holds an identity
    matrix of size x.size ** 2: keep each checked argument to a few hundred elements.
    """
    args = [jnp.asarray(a, jnp.float64) for a in args]
    assert all(a.dtype == jnp.float64 for a in args), "fd_check needs the x64 fixture"
    fn = jax.jit(fn)  # op-by-op dispatch would dominate the run time of these small checks
    out = fn(*args)
    ct = jnp.asarray(np.random.default_rng(seed).standard_normal(out.shape))

    def loss(*a):
        return jnp.sum(fn(*a) * ct)

    grads = jax.grad(loss, argnums=argnums)(*args)
    for k, argnum in enumerate(argnums):
        x = args[argnum]
        basis = jnp.eye(x.size, dtype=x.dtype).reshape((x.size, *x.shape))

        def shifted(delta, argnum=argnum):
            a = list(args)
            a[argnum] = a[argnum] + delta
            return loss(*a)

        batched = jax.jit(jax.vmap(shifted))
        numeric = (batched(eps * basis) - batched(-eps * basis)) / (2 * eps)
        np.testing.assert_allclose(
            np.asarray(grads[k]).ravel(),
            np.asarray(numeric),
            rtol=rtol,
            atol=atol,
            err_msg=f"gradient of argument {argnum} disagrees with finite differences",
        )
    return grads


def to_torch_nchw(torch, x):
    """NHWC numpy/JAX array -> torch NCHW tensor (same dtype)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def from_torch_nchw(t):
    """torch NCHW tensor -> numpy NHWC array."""
    return t.detach().numpy().transpose(0, 2, 3, 1)


def to_torch_oihw(torch, w):
    """HWIO kernel -> torch Conv2d weight (C_out, C_in // groups, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(w).transpose(3, 2, 0, 1)))


def set_keys(config, overrides: dict):
    """Set dotted keys ("optimizer.learning_rate") of a ConfigDict in place; returns it."""
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return config
