"""The transfer benchmark's quick mode runs, and the fine-tuning configs say what they do."""

from __future__ import annotations

import importlib.util
import os

import pytest

from benchmarks import transfer_digits

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "train", "configs")


@pytest.mark.slow
def test_transfer_digits_quick_mode(capsys):
    result = transfer_digits.main(["--quick"])
    out = capsys.readouterr().out
    assert "| labelled / class | (a) from scratch | (b) linear probe" in out
    rows = result["rows"]
    assert [(r["k"], r["seed"]) for r in rows] == [(k, s) for k in (5, 10, 50) for s in (0, 1)]
    for r in rows:
        for s in transfer_digits.STRATEGIES:
            assert 0.0 <= r[s] <= 1.0
    # The source task is learnt (5 classes; chance is 20%), and every strategy learns the
    # target task from 50 examples per class well above chance.
    assert result["source_accuracy"] > 0.9
    for s in transfer_digits.STRATEGIES:
        assert min(r[s] for r in rows if r["k"] == 50) > 0.6, s
    assert result["frozen_top"] == ["conv1", "conv2"]
    assert result["target_test_images"] == 179


def test_few_shot_draws_k_per_class_reproducibly():
    import numpy as np

    y = np.repeat(np.arange(5), 20)
    x = np.arange(100, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32)
    xa, ya = transfer_digits.few_shot(x, y, 3, seed=1)
    xb, yb = transfer_digits.few_shot(x, y, 3, seed=1)
    assert (np.bincount(ya) == 3).all() and (xa == xb).all() and (ya == yb).all()
    xc, _ = transfer_digits.few_shot(x, y, 3, seed=2)
    assert not (xa == xc).all()


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["finetune_resnet18_cifar10", "finetune_vgg16_from_vgg11"])
def test_finetune_configs_state_command_hardware_and_what_was_not_run(name):
    module = _load(name)
    doc = " ".join(module.__doc__.split())
    assert f"python -m train --config=train/configs/{name}.py" in doc
    assert "Hardware" in doc and "Expected result" in doc
    assert "not measured here" in doc and "reproduced" in doc
    c = module.get_config()
    assert c.init_from and c.init_mapping in ("auto", "vgg_stages")


def test_finetune_resnet18_config_transfers_from_torchvisions_file():
    c = _load("finetune_resnet18_cifar10").get_config()
    assert c.model == "resnet18" and c.init_from == "resnet18-f37072fd.pth"
    assert c.head_lr_multiplier == 10.0 and c.freeze_all_but_last == -1
    assert tuple(c.data.mean) == (0.485, 0.456, 0.406)  # what the pretrained weights expect
    assert c.data.num_classes == 10


def test_vgg_staged_config_uses_the_stage_mapping():
    c = _load("finetune_vgg16_from_vgg11").get_config()
    assert (c.model, c.init_mapping) == ("vgg16", "vgg_stages")
