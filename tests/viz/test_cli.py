"""`python -m train.visualize` end to end on a tiny trained run (`trained_run`, conftest.py).

The figures themselves are `jaxcnn.viz.report`'s (test_report.py); here: the flags reach it,
the paths are printed, and errors exit with status 1 and a message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.viz.expected import DEFAULT_REPORT

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "train.visualize", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_visualize_writes_every_figure(trained_run):
    proc = run_cli(f"--workdir={trained_run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    viz_dir = trained_run / "viz"
    assert sorted(os.listdir(viz_dir)) == sorted(DEFAULT_REPORT)
    printed = proc.stdout.split()
    for name, (min_w, min_h) in DEFAULT_REPORT.items():
        path = viz_dir / name
        assert str(path) in printed
        with Image.open(path) as im:
            im.load()  # decodes the whole PNG
            assert im.format == "PNG"
            w, h = im.size
            assert min_w <= w <= 4000 and min_h <= h <= 4000, (name, im.size)
            assert np.unique(np.asarray(im.convert("L"))).size > 16, f"{name} looks blank"


def test_visualize_reports_a_missing_run(tmp_path):
    proc = run_cli(f"--workdir={tmp_path / 'nothing'}")
    assert proc.returncode == 1
    assert "config.json not found" in proc.stderr


def test_visualize_reports_a_bad_count(tmp_path):
    proc = run_cli(f"--workdir={tmp_path}", "--num_units=0")
    assert proc.returncode == 1
    assert "`num_units` must be an int >= 1; got 0" in proc.stderr


@pytest.mark.slow
def test_visualize_reports_an_unknown_layer(trained_run, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(f"--workdir={trained_run}", f"--out={out}", "--layers=conv1,nosuch")
    assert proc.returncode == 1
    assert "has no layer 'nosuch'" in proc.stderr and "conv2" in proc.stderr
    assert not out.exists()
