"""Test configuration: JAX in strict mode, float64 on request, torch as the reference, and a
persistent compilation cache shared by a test run's workers and by later runs.

* Rank promotion raises (`jax_numpy_rank_promotion="raise"`): an accidental broadcast of a
  (C,) bias against (N, H, W, C) activations is a bug we want to see, not silently accept.
* float64 is off by default (as for users) and switched on per test with the `x64` fixture,
  which finite-difference gradient checks use.
* Most of the suite's time is XLA compiling models. Compiled programs are kept on disk
  (JAX's persistent compilation cache, through `jaxcnn.enable_compilation_cache`) in one
  folder per jax/jaxlib version and machine, under pytest's cache folder
  (``.pytest_cache/d/jax_compilation_cache``) or under ``$JAXCNN_TEST_CACHE``; every xdist
  worker and every later test run reads it. A hit loads the executable XLA compiled for the
  same program, options and device, so results are the same to the bit.
  ``JAXCNN_TEST_CACHE=0`` switches it off; a cache folder set through JAX's own
  ``JAX_COMPILATION_CACHE_DIR`` is used as it is. Code under test that sets its own folder
  (the training engine's ``compile_cache/``) has it for its duration, as outside the tests.
* Under xdist (`pytest -n auto`, ``--dist loadgroup``) the tests that use a module-scoped
  fixture (a trained workdir, a torch model, initialised variables) run on one worker, so the
  fixture is built once, not once per worker; every other test goes to whichever worker is
  free (`pytest_collection_modifyitems` below).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

CACHE_ENV = "JAXCNN_TEST_CACHE"
# Every program is written, however quickly it compiled (JAX's default threshold is 1 s): the
# suite's many small programs (eager operations, small models) add up, and reading one back
# is cheaper than compiling it. Left unbounded (JAX's default): with a bound, JAX rescans
# the whole folder on every write, which costs more than it saves at thousands of entries.
# (Without a bound JAX takes no lock: a worker that reads an entry another is still writing
# fails to decompress it, warns, and compiles the program itself.)
CACHE_MIN_COMPILE_S = 0.0


def compilation_cache_folder(config: pytest.Config) -> Path | None:
    """The test run's compilation cache folder, or None when it is switched off."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() in ("0", "off", "false", "no"):
        return None
    if chosen:
        base = Path(chosen)
    elif getattr(config, "cache", None) is not None:  # pytest's cacheprovider
        base = config.cache.mkdir("jax_compilation_cache")
    else:
        return None
    import jaxlib

    return base / f"jax{jax.__version__}-jaxlib{jaxlib.__version__}-{platform.machine()}"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, for runs without pytest-xdist (`-p no:xdist -o addopts=`).
    config.addinivalue_line("markers", "xdist_group(name): run on the same xdist worker")
    folder = compilation_cache_folder(config)
    if folder is None or jax.config.jax_compilation_cache_dir:  # off, or the user's own
        return
    from jaxcnn.xla import enable_compilation_cache

    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    enable_compilation_cache(folder)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every test that uses a module- (or class-) scoped fixture in its module's xdist
    group, and one that uses a package-scoped fixture in its package's. (Session-scoped ones,
    such as `torch`, are cheap here; grouping their users would serialise the suite.)"""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        scopes = {defs[-1].scope for defs in info.name2fixturedefs.values() if defs} if info else ()
        path = item.nodeid.split("::")[0]
        if "package" in scopes:
            item.add_marker(pytest.mark.xdist_group(path.rpartition("/")[0]))
        elif scopes & {"module", "class"}:
            item.add_marker(pytest.mark.xdist_group(path))


def pytest_report_header(config: pytest.Config) -> str:
    folder = jax.config.jax_compilation_cache_dir
    return f"jax compilation cache: {folder or f'off ({CACHE_ENV}=0 or no pytest cache)'}"


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
