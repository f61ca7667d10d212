"""Test configuration: JAX in strict mode, float64 on request, torch as the reference.

* Rank promotion raises (`jax_numpy_rank_promotion="raise"`): an accidental broadcast of a
  (C,) bias against (N, H, W, C) activations is a bug we want to see, not silently accept.
* float64 is off by default (as for users) and switched on per test with the `x64` fixture,
  which finite-difference gradient checks use.
"""

from __future__ import annotations

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats enabled in JAX."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def torch():
    """The reference implementation. Part of the `test` extra; the tests need it."""
    import torch as _torch

    _torch.set_num_threads(1)
    return _torch
