"""local_response_norm against torch.nn.functional, finite differences and the AlexNet formula."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcnn import ops
from tests.helpers import fd_check, from_torch_nchw, to_torch_nchw

# (C, size, alpha, beta, k): odd and even windows (even ones pad one channel less after),
# windows wider than the channel count, size 1, and AlexNet's constants.
CASES = [
    (7, 3, 1e-4, 0.75, 1.0),
    (8, 4, 1e-2, 0.5, 2.0),
    (6, 5, 5e-4, 0.75, 2.0),  # AlexNet (paper alpha 1e-4, converted)
    (3, 7, 0.3, 1.5, 1.0),  # window wider than C
    (5, 1, 0.5, 0.75, 1.0),
    (4, 2, 1.0, 1.0, 0.5),
]


def _ids(case):
    return "-".join(map(str, case))


def _torch_value_and_vjp(torch, x, ct, size, alpha, beta, k):
    xt = to_torch_nchw(torch, x).requires_grad_(True)
    y = torch.nn.functional.local_response_norm(xt, size, alpha, beta, k)
    (y * to_torch_nchw(torch, ct)).sum().backward()
    return from_torch_nchw(y), from_torch_nchw(xt.grad)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_torch_float64(x64, torch, case):
    c, size, alpha, beta, k = case
    rng = np.random.default_rng(c * 10 + size)
    # Scaled up so alpha * mean(x^2) is not negligible next to k.
    x = 3 * rng.standard_normal((2, 5, 4, c))
    ct = rng.standard_normal(x.shape)
    fn = functools.partial(ops.local_response_norm, size=size, alpha=alpha, beta=beta, k=k)

    def value_and_vjp(x, ct):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(ct)[0]

    y, g = jax.jit(value_and_vjp)(jnp.asarray(x), jnp.asarray(ct))
    want_y, want_g = _torch_value_and_vjp(torch, x, ct, size, alpha, beta, k)
    np.testing.assert_allclose(np.asarray(y), want_y, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(g), want_g, rtol=1e-12, atol=1e-15)


def test_matches_torch_float32(torch):
    x = 3 * np.random.default_rng(0).standard_normal((2, 6, 5, 16)).astype(np.float32)
    got = ops.local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0)
    assert got.dtype == jnp.float32
    want = torch.nn.functional.local_response_norm(to_torch_nchw(torch, x), 5, 5e-4, 0.75, 2.0)
    np.testing.assert_allclose(got, from_torch_nchw(want), rtol=1e-6, atol=1e-6)


def test_alexnet_paper_formula(x64):
    # Krizhevsky et al. (2012), section 3.3: b_c = a_c / (k + alpha * sum_{c'} a_{c'}^2)^beta,
    # c' from max(0, c - n/2) to min(C - 1, c + n/2), n = 5; with alpha_torch = alpha * n.
    n, alpha, beta, k = 5, 1e-4, 0.75, 2.0
    a = 10 * np.random.default_rng(1).standard_normal((1, 3, 3, 12))
    want = np.empty_like(a)
    for c in range(a.shape[-1]):
        lo, hi = max(0, c - n // 2), min(a.shape[-1] - 1, c + n // 2)
        want[..., c] = a[..., c] / (k + alpha * (a[..., lo : hi + 1] ** 2).sum(-1)) ** beta
    got = ops.local_response_norm(a, n, alpha=alpha * n, beta=beta, k=k)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 5])
def test_grad_matches_finite_differences(x64, size):
    x = 3 * np.random.default_rng(size).standard_normal((1, 3, 4, 6))
    fn = functools.partial(ops.local_response_norm, size=size, alpha=0.1, beta=0.75, k=1.0)
    fd_check(jax.jit(fn), (x,))


def test_second_order_forward_and_reverse(x64):
    x = jnp.asarray(3 * np.random.default_rng(2).standard_normal((1, 3, 4, 6)))
    fn = functools.partial(ops.local_response_norm, size=3, alpha=0.1, beta=0.75, k=1.0)
    check_grads(jax.jit(fn), (x,), order=2, modes=["fwd", "rev"])


def test_works_under_jit():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 5, 4, 8)), jnp.float32)
    fn = functools.partial(ops.local_response_norm, size=5, alpha=5e-4, beta=0.75, k=2.0)
    np.testing.assert_allclose(jax.jit(fn)(x), fn(x), rtol=1e-6, atol=1e-6)


X = np.zeros((1, 4, 4, 6), np.float32)


@pytest.mark.parametrize(
    "x, size, exc, match",
    [
        (X, 0, ValueError, r"local_response_norm: `size` must be a positive int; got 0"),
        (X, -3, ValueError, r"local_response_norm: `size` must be a positive int; got -3"),
        (X, 2.0, TypeError, r"local_response_norm: `size` must be a positive int; got 2.0"),
        (X, True, TypeError, r"local_response_norm: `size` must be a positive int; got True"),
        (X[0], 3, ValueError, r"local_response_norm: `x` must have rank 4.*NHWC"),
        (X.astype(np.int32), 3, TypeError, r"local_response_norm: `x` must have a floating"),
        ([[1.0]], 3, TypeError, r"local_response_norm: `x` must be an array"),
    ],
    ids=["zero", "negative", "float", "bool", "rank3", "int", "list"],
)
def test_errors_name_the_argument(x, size, exc, match):
    with pytest.raises(exc, match=match):
        ops.local_response_norm(x, size)
