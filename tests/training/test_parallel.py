"""The parallel modes on 4 fake CPU devices give the one-device result on the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcnn.training import DataParallel

ROOT = Path(__file__).resolve().parents[2]


def run_with_devices(script: Path, n: int, *args: str, timeout: int = 600) -> str:
    """Run `script` in a fresh interpreter that sees `n` CPU devices; returns its stdout."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_jit_and_pmap_match_one_device():
    out = json.loads(run_with_devices(Path(__file__).with_name("multidevice_check.py"), 4))
    assert out["devices"] == 4
    for mode in ("jit", "pmap"):
        # params, BatchNorm statistics and metrics after 3 SGD steps (float32 summation order)
        for key, diff in out[mode].items():
            assert diff < 2e-6, (mode, key, diff)
    # The control shows the check can fail: per-device BatchNorm statistics change the result.
    assert out["pmap_unsynced_bn"]["stats"] > 1e-2
    assert out["pmap_unsynced_bn"]["params"] > 1e-4


def test_bad_mode_and_batch():
    with pytest.raises(ValueError, match="parallel must be one of"):
        DataParallel("ddp")
    par = DataParallel("none")
    par.check_batch_size(7)  # one device: anything goes
    batch = par.put_batch({"image": np.zeros((3, 2, 2, 1), np.float32)})
    assert batch["image"].shape == (3, 2, 2, 1)
