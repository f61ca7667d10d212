"""`jaxcnn.viz.report`: the figures of a trained run, written as files."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxcnn import viz
from jaxcnn.viz.report import _pick_depths, _pick_images
from tests.viz.expected import DEFAULT_REPORT


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG, decoded in full; asserts that it is not blank."""
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        assert np.unique(np.asarray(im.convert("L"))).size > 16, f"{path} looks blank"
        return im.size


@pytest.mark.slow
def test_report_writes_the_default_figures_in_order(trained_run, tmp_path):
    out = tmp_path / "figures"
    before = sorted(trained_run.rglob("*"))
    written = viz.report(trained_run, out)
    assert written == [str(out / name) for name in DEFAULT_REPORT]
    assert sorted(os.listdir(out)) == sorted(DEFAULT_REPORT)
    assert sorted(trained_run.rglob("*")) == before  # out_dir given: nothing in the workdir
    for name, (min_w, min_h) in DEFAULT_REPORT.items():
        w, h = png_size(out / name)
        assert min_w <= w <= 4000 and min_h <= h <= 4000, (name, (w, h))


@pytest.mark.slow
def test_report_follows_its_arguments(trained_run, tmp_path):
    # A str workdir, the best checkpoint, one layer, fewer units, patches and images.
    out = tmp_path / "small"
    written = viz.report(
        str(trained_run),
        str(out),
        best=True,
        layers=["conv2"],
        num_units=2,
        k=3,
        num_images=2,
        max_images=50,
        gradcam_layer="conv1",
    )
    names = [os.path.basename(p) for p in written]
    assert names == [
        "filters.png",
        "filters_conv2.png",
        "top_patches_conv2.png",
        "feature_maps_conv2.png",
        "attributions.png",
    ]
    assert sorted(os.listdir(out)) == sorted(names)
    # Two units of three patches in one row, against six units of nine in two rows; two
    # attribution rows against four.
    _, small_h = png_size(out / "top_patches_conv2.png")
    assert small_h < DEFAULT_REPORT["top_patches_conv2.png"][1]
    _, attr_h = png_size(out / "attributions.png")
    assert attr_h < DEFAULT_REPORT["attributions.png"][1]


@pytest.mark.slow
def test_report_defaults_to_the_viz_folder_of_the_workdir(trained_run, tmp_path):
    workdir = tmp_path / "run"  # a copy: the shared run stays as trained
    shutil.copytree(trained_run, workdir)
    written = viz.report(workdir, layers=["fc1"], num_units=1, k=1, num_images=1)
    assert written and all(p.startswith(str(workdir / "viz") + os.sep) for p in written)
    assert "top_patches_fc1.png" in os.listdir(workdir / "viz")
    # fc1 has no spatial map: no feature-map figure.
    assert not any("feature_maps" in p for p in written)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kwargs", "arg", "name"),
    [
        ({"layers": ["conv1", "nosuch"]}, "layers", "nosuch"),
        ({"gradcam_layer": "conv9"}, "gradcam_layer", "conv9"),
    ],
)
def test_report_rejects_an_unknown_layer_before_writing(trained_run, tmp_path, kwargs, arg, name):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=f"`{arg}`: lenet5 has no layer '{name}'") as e:
        viz.report(trained_run, out, **kwargs)
    assert "conv1, " in str(e.value) and "fc1" in str(e.value)  # the valid names
    assert not out.exists()


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_report_needs_a_run_directory(tmp_path, make):
    workdir = tmp_path / "run"
    if make == "empty":
        workdir.mkdir()
    with pytest.raises(FileNotFoundError, match=r"`workdir`: .*config\.json not found"):
        viz.report(workdir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_needs_a_checkpoint(tmp_path):
    with open(tmp_path / "config.json", "w", encoding="utf-8") as f:
        json.dump({"model": "lenet5"}, f)
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        viz.report(tmp_path)


def test_report_rejects_an_unreadable_config(tmp_path):
    (tmp_path / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="not a saved config"):
        viz.report(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_units": 0}, "`num_units` must be an int >= 1; got 0"),
        ({"k": 2.5}, "`k` must be an int >= 1; got 2.5"),
        ({"num_images": True}, "`num_images` must be an int >= 1; got True"),
        ({"max_images": -1}, "`max_images` must be an int >= 0; got -1"),
    ],
)
def test_report_rejects_bad_counts(tmp_path, kwargs, message):
    # Checked before the workdir is read.
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        viz.report(tmp_path / "missing", **kwargs)


@pytest.mark.parametrize("layers", ["conv1", ["conv1", 2]])
def test_report_rejects_layers_that_are_not_a_list_of_names(tmp_path, layers):
    with pytest.raises(TypeError, match="`layers` must be None or a sequence of layer names"):
        viz.report(tmp_path, layers=layers)


def test_report_rejects_a_gradcam_layer_that_is_not_a_name(tmp_path):
    with pytest.raises(TypeError, match="`gradcam_layer` must be None or a layer name; got 3"):
        viz.report(tmp_path, gradcam_layer=3)  # type: ignore[arg-type]


def test_pick_depths_spreads_from_first_to_last():
    assert _pick_depths(["a", "b"]) == ["a", "b"]
    assert _pick_depths(list("abcde")) == ["a", "c", "e"]
    assert _pick_depths(list("abcdef")) == ["a", "c", "f"]  # round(2.5) == 2


def test_pick_images_prefers_distinct_labels_and_skips_padding():
    labels = np.array([3, 3, 1, 1, 2, 0])
    mask = np.array([1, 1, 1, 1, 1, 0])
    assert _pick_images(labels, mask, 3) == [0, 2, 4]
    # More than there are distinct labels: the rest in data order; never a masked one.
    assert _pick_images(labels, mask, 4) == [0, 1, 2, 4]
    assert _pick_images(labels, mask, 10) == [0, 1, 2, 3, 4]
