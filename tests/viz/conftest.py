"""A tiny trained run shared by the report and command-line tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def lenet_digits_config():
    """train/configs/lenet_digits.py's config, loaded by path as `python -m train` does."""
    path = ROOT / "train" / "configs" / "lenet_digits.py"
    spec = importlib.util.spec_from_file_location("_viz_test_lenet_digits", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One epoch of the default job (about 15 s): a real checkpoint and config.json."""
    from jaxcnn.training import train_and_evaluate

    workdir = tmp_path_factory.mktemp("viz_run")
    config = lenet_digits_config()
    config.num_epochs = 1.0
    config.progress = False
    train_and_evaluate(config, str(workdir))
    return workdir
