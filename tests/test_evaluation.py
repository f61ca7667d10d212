"""Evaluating weights: `jaxcnn.evaluation.evaluate_weights`, `python -m train.evaluate`, the
preprocessing presets and ImageNet's class names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxcnn
from jaxcnn import convert, data
from jaxcnn.evaluation import evaluate_weights

ROOT = Path(__file__).resolve().parents[1]


def _lenet_file(torch, path, channels=1, seed=0):
    """A LeNet-5 weight file as a Lightning checkpoint ("model." keys), and its variables."""
    model = jaxcnn.create_model("lenet5", num_classes=10)
    v = model.init(jax.random.key(seed), np.zeros((1, 32, 32, channels), np.float32))
    sd = convert.to_torch("lenet5", v)
    state = {f"model.{k}": torch.from_numpy(np.array(a)) for k, a in sd.items()}
    torch.save({"state_dict": state, "epoch": 1, "global_step": 10}, path)
    return model, v


@pytest.mark.slow
def test_evaluate_equals_a_direct_computation_on_the_digits(torch, tmp_path):
    model, v = _lenet_file(torch, tmp_path / "lenet.ckpt")
    res = evaluate_weights(tmp_path / "lenet.ckpt", model="lenet5", data="digits", batch_size=100)
    # The same numbers by hand: the digits test split, resized to 32x32 and normalised with
    # the source's statistics, through the model.
    test = data.digits("test")
    imgs = np.stack([data.augment.resize(test[i]["image"], 32) for i in range(len(test))])
    x = (imgs.astype(np.float32) / 255 - np.float32(test.mean[0])) / np.float32(test.std[0])
    labels = np.asarray([test[i]["label"] for i in range(len(test))])
    logits = np.asarray(model.apply(v, x, train=False), np.float64)
    top = logits.max(1, keepdims=True)
    logp = logits - (top + np.log(np.exp(logits - top).sum(1, keepdims=True)))
    assert res["count"] == len(test) == 359
    assert res["correct"] == int((logits.argmax(1) == labels).sum())
    assert res["loss"] == pytest.approx(-logp[np.arange(359), labels].mean(), rel=1e-5)
    rank = (logits > logits[np.arange(359), labels][:, None]).sum(1)
    assert res["top5"] == pytest.approx((rank < 5).mean())
    per = {c["label"]: c for c in res["per_class"]}
    for k in range(10):
        sel = labels == k
        assert per[k]["count"] == sel.sum()
        assert per[k]["top1"] == pytest.approx((logits[sel].argmax(1) == k).mean())


def test_image_folder_with_explicit_preprocessing_and_class_names(torch, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("test",):
        for cls in ("cat", "dog"):
            d = tmp_path / "pets" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                    d / f"{i}.png"
                )
    _lenet_file(torch, tmp_path / "w.pth")
    res = evaluate_weights(
        tmp_path / "w.pth", model="lenet5", data=str(tmp_path / "pets" / "test"),
        channels=1, mean=(0.5,), std=(0.25,), eval_resize=36, json_path=tmp_path / "r.json",
    )  # fmt: skip
    assert [c["name"] for c in res["per_class"]] == ["cat", "dog"]
    assert [c["count"] for c in res["per_class"]] == [3, 3]
    assert res["preprocessing"]["mean"] == [0.5] and res["preprocessing"]["eval_resize"] == 36
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(res))


def test_errors_name_what_is_wrong(torch, tmp_path):
    _lenet_file(torch, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="unknown preprocessing preset 'imagenet21k'"):
        evaluate_weights(tmp_path / "w.pt", model="lenet5", preset="imagenet21k")
    with pytest.raises(ValueError, match=r"`model` .* is needed for a weight file"):
        evaluate_weights(tmp_path / "w.pt")
    with pytest.raises(ValueError, match="got 'no/such/folder', which is neither"):
        evaluate_weights(tmp_path / "w.pt", model="lenet5", data="no/such/folder")
    with pytest.raises(ValueError, match=r"got '\./missing', which is neither"):
        evaluate_weights(tmp_path / "w.pt", model="lenet5", data="./missing")


def test_tfds_names_may_carry_a_config():
    from jaxcnn.evaluation import _data_config

    cfg, desc = _data_config("imagenet_v2/matched-frequency", "test", "/data/tfds")
    assert (cfg["source"], cfg["name"], cfg["data_dir"]) == (
        "tfds",
        "imagenet_v2/matched-frequency",
        "/data/tfds",
    )
    assert desc == "TFDS imagenet_v2/matched-frequency (test)"


def test_presets_and_imagenet_classes(torch):
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    assert data.imagenet_classes() == list(_IMAGENET_CATEGORIES)
    p = data.preset("imagenet")
    assert (p["image_size"], p["eval_resize"]) == (224, 256)
    assert p["mean"] == (0.485, 0.456, 0.406) and p["std"] == (0.229, 0.224, 0.225)
    assert set(data.PRESETS) >= {"imagenet", "cifar10", "cifar100", "mnist"}
    p["image_size"] = 1  # a copy: the table itself is unchanged
    assert data.preset("imagenet")["image_size"] == 224


@pytest.mark.slow
def test_cli_evaluates_a_workdir_as_the_run_did(tmp_path):
    # Train briefly, then evaluate the workdir from the command line: the same test accuracy
    # as the run's own final evaluation (its model and normalisation come from the workdir).
    from jaxcnn.training import default_config, train_and_evaluate

    c = default_config()
    c.num_steps, c.batch_size, c.progress, c.tensorboard, c.plot = 30, 64, False, False, False
    run = train_and_evaluate(c, tmp_path / "wd")
    out = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--weights", str(tmp_path / "wd")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last == (
        f"top-1: {run['eval_top1'] * 100:.2f}% ({run['eval_correct']}/{run['eval_count']} correct)"
    )
    saved = json.loads((tmp_path / "wd" / "evaluation.json").read_text())
    assert saved["correct"] == run["eval_correct"] and saved["model"] == "lenet5"
    bad = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--weights", str(tmp_path / "none.pth"),
         "--model", "lenet5"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "no such weight file" in bad.stderr


def test_a_tfds_name_with_a_preset(torch, tmp_path):
    # TFDS's mock data stands in for MNIST (offline); the preset's statistics are used as given.
    tfds = pytest.importorskip("tensorflow_datasets")  # part of the install
    _lenet_file(torch, tmp_path / "w.bin")
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        res = evaluate_weights(tmp_path / "w.bin", model="lenet5", data="mnist", preset="mnist_32")
    assert res["count"] == 40 and res["data"] == "TFDS mnist (test)"
    assert res["preprocessing"]["mean"] == [0.1307] and res["preprocessing"]["std"] == [0.3081]
    assert res["preprocessing"]["image_shape"] == [32, 32, 1]
    assert 0 <= res["top1"] <= res["top5"] <= 1 and np.isfinite(res["loss"])
