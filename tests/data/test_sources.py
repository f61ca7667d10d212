"""Sources: the bundled digits split, in-memory arrays, image folders, TFDS (mocked), synthetic."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from jaxcnn.data import ArraySource, ImageFolder, digits, sources, synthetic, tfds_source

# ----------------------------------------------------------------------------- digits


def test_digits_split_sizes_and_balance():
    train, test, full = digits("train"), digits("test"), digits("all")
    assert (len(train), len(test), len(full)) == (1438, 359, 1797)
    for src in (train, test, full):
        assert src.num_classes == 10 and src.image_shape == (32, 32, 1)
        rec = src[0]
        assert rec["image"].dtype == np.uint8 and rec["image"].shape == (32, 32, 1)
        assert isinstance(rec["label"], int)
    per_class_all = np.bincount(full.labels, minlength=10)
    per_class_test = np.bincount(test.labels, minlength=10)
    np.testing.assert_array_equal(per_class_test, np.round(0.2 * per_class_all))
    np.testing.assert_array_equal(np.bincount(train.labels) + per_class_test, per_class_all)


def test_digits_split_follows_the_specification_and_is_fixed():
    from sklearn.datasets import load_digits

    target = load_digits().target
    rng = np.random.Generator(np.random.PCG64(0))
    test_index = []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(target == c))
        test_index.extend(members[: round(0.2 * members.size)])
    test_index = np.sort(np.array(test_index))
    _, labels, is_test = sources._digits_arrays()
    np.testing.assert_array_equal(np.flatnonzero(is_test), test_index)
    np.testing.assert_array_equal(digits("test").labels, labels[test_index])
    # A fingerprint of the split, so that any change to it is a visible, deliberate one.
    assert test_index[:5].tolist() == [5, 9, 12, 14, 16]
    assert zlib.crc32(test_index.astype(np.int64).tobytes()) == 4030033373


def test_digits_pixels_are_bilinear_upsamples_of_sklearn(torch):
    from sklearn.datasets import load_digits

    small = torch.from_numpy(load_digits().images[:20] / 16.0)[:, None]
    big = torch.nn.functional.interpolate(small, size=(32, 32), mode="bilinear")
    expected = np.rint(big[:, 0].numpy() * 255).astype(np.uint8)
    ours = digits("all").images[:20, :, :, 0]
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    assert ours.max() == 255 and ours.min() == 0


def test_digits_are_read_as_sklearn_loads_them_with_or_without_its_file(monkeypatch):
    import importlib.util

    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = sources._sklearn_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    # Where scikit-learn's data file cannot be found, load_digits itself is used.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    images, labels = sources._sklearn_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)


def test_digits_upsampling_equals_the_per_image_numpy_resize():
    from jaxcnn.data.augment import _resize_numpy

    raw, _ = sources._sklearn_digits()
    big = np.stack([_resize_numpy(im[:, :, None] / 16.0, 32, 32) for im in raw[::7]])
    expected = np.clip(np.rint(big * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(sources._digits_arrays()[0][::7], expected)


def test_digits_normalisation_constants_are_the_train_split_statistics():
    x = digits("train").images.astype(np.float64) / 255.0
    np.testing.assert_allclose(sources.DIGITS_MEAN, [x.mean()], rtol=1e-8)
    np.testing.assert_allclose(sources.DIGITS_STD, [x.std()], rtol=1e-8)
    assert digits("test").mean == sources.DIGITS_MEAN


def test_digits_unknown_split():
    with pytest.raises(ValueError, match='split must be "train", "test" or "all"; got \'val\''):
        digits("val")


# ----------------------------------------------------------------------------- arrays


def test_array_source_grey_and_statistics():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 5), dtype=np.uint8)
    src = ArraySource(images, [0, 1, 2, 1, 0, 4])
    assert src.image_shape == (4, 5, 1) and src.num_classes == 5 and len(src) == 6
    np.testing.assert_allclose(src.mean, [images.mean() / 255], rtol=1e-12)
    np.testing.assert_allclose(src.std, [images.std() / 255], rtol=1e-12)
    assert src[-1]["label"] == 4 and src[3]["image"].shape == (4, 5, 1)
    with pytest.raises(IndexError, match="index 6 out of range"):
        src[6]
    with pytest.raises(TypeError, match="index must be an int"):
        src[1.0]


@pytest.mark.parametrize(
    "images, labels, kwargs, error, match",
    [
        (np.zeros((2, 4, 4, 1), np.float32), [0, 1], {}, TypeError, "images must be uint8"),
        (np.zeros((2, 4), np.uint8), [0, 1], {}, ValueError, r"images must have shape"),
        (np.zeros((2, 4, 4, 1), np.uint8), [0, 1, 2], {}, ValueError, r"labels must have shape"),
        (np.zeros((2, 4, 4, 1), np.uint8), [0.0, 1.0], {}, TypeError, "labels must be integers"),
        (np.zeros((2, 4, 4, 1), np.uint8), [0, -1], {}, ValueError, "labels must be >= 0"),
        (np.zeros((2, 4, 4, 1), np.uint8), [0, 3], {"num_classes": 3}, ValueError, "max label"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, 1], {"mean": (0.5,)}, ValueError, "per channel"),
        (np.zeros((2, 4, 4, 1), np.uint8), [0, 1], {"std": (0.0,)}, ValueError, "positive"),
    ],
)
def test_array_source_validation(images, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        ArraySource(images, labels, **kwargs)


# ----------------------------------------------------------------------------- folders


def _write_tree(root, corrupt=False):
    """cat: 2 png + 1 JPEG (upper-case), dog: 1 png in a subfolder, plus things to ignore."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def save(path, size):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)

    save(os.path.join(root, "cat", "b.png"), (5, 6))
    save(os.path.join(root, "cat", "a.png"), (7, 4))
    save(os.path.join(root, "cat", "C.JPEG"), (8, 8))
    save(os.path.join(root, "dog", "sub", "x.png"), (3, 3))
    with open(os.path.join(root, "dog", "notes.txt"), "w") as f:
        f.write("not an image")
    save(os.path.join(root, ".ipynb_checkpoints", "y.png"), (3, 3))
    if corrupt:
        with open(os.path.join(root, "cat", "bad.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 definitely not a jpeg")
        # A truncated PNG: a valid header, so only decoding it finds the problem.
        png = os.path.join(root, "dog", "cut.png")
        save(png, (32, 32))
        with open(png, "rb") as f:
            data = f.read()
        with open(png, "wb") as f:
            f.write(data[: len(data) // 2])


def test_image_folder_classes_order_and_decoding(tmp_path):
    _write_tree(tmp_path)
    src = ImageFolder(tmp_path)
    assert src.classes == ("cat", "dog") and src.num_classes == 2
    names = [os.path.relpath(p, tmp_path) for p in src.paths]
    assert names == ["cat/C.JPEG", "cat/a.png", "cat/b.png", os.path.join("dog", "sub", "x.png")]
    assert src.labels.tolist() == [0, 0, 0, 1]
    assert src[1]["image"].shape == (7, 4, 3) and src[1]["image"].dtype == np.uint8
    assert src.image_shape == (None, None, 3) and src.mean == (0.5,) * 3
    grey = ImageFolder(tmp_path, mode="L")
    assert grey[0]["image"].shape == (8, 8, 1) and grey.channels == 1


def test_image_folder_corrupt_file_raises_naming_it(tmp_path):
    _write_tree(tmp_path, corrupt=True)
    src = ImageFolder(tmp_path)
    bad = next(i for i, p in enumerate(src.paths) if p.endswith("bad.jpg"))
    with pytest.raises(ValueError, match=r"could not decode image file '.*bad\.jpg'"):
        src[bad]
    cut = next(i for i, p in enumerate(src.paths) if p.endswith("cut.png"))
    with pytest.raises(ValueError, match=r"cut\.png"):
        src[cut]


def test_image_folder_skip_corrupt_counts_and_is_deterministic(tmp_path):
    _write_tree(tmp_path, corrupt=True)
    with pytest.warns(UserWarning, match="skipped 2 corrupt files"):
        src = ImageFolder(tmp_path, skip_corrupt=True)
    assert sorted(os.path.basename(p) for p in src.skipped) == ["bad.jpg", "cut.png"]
    assert len(src) == 4 and all(src[i]["image"].ndim == 3 for i in range(len(src)))
    with pytest.warns(UserWarning):
        again = ImageFolder(tmp_path, skip_corrupt=True)
    assert again.paths == src.paths and again.labels.tolist() == src.labels.tolist()


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="root must be an existing folder"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="has no class subfolders"):
        ImageFolder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match=r"class folder '.*empty_class' has no image files"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match='mode must be "RGB" or "L"'):
        ImageFolder(tmp_path, mode="CMYK")


def test_image_folder_with_given_classes(tmp_path):
    _write_tree(tmp_path / "val")
    os.rename(tmp_path / "val" / "cat", tmp_path / "val" / "zebra")
    with pytest.raises(ValueError, match=r"class folders \['zebra'\] that are not among"):
        ImageFolder(tmp_path / "val", classes=("cat", "dog"))
    src = ImageFolder(tmp_path / "val", classes=("ant", "dog", "zebra"))
    assert src.num_classes == 3 and sorted(set(src.labels.tolist())) == [1, 2]


# ----------------------------------------------------------------------------- TFDS (mocked)


@pytest.fixture
def mock_tfds():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.mark.parametrize(
    "name, shape, mean",
    [("mnist", (28, 28, 1), (0.1307,)), ("cifar10", (32, 32, 3), (0.4914, 0.4822, 0.4465))],
)
def test_tfds_source_under_mock_data(mock_tfds, name, shape, mean):
    src = tfds_source(name, "train")
    assert len(src) == 24 and src.num_classes == 10 and src.image_shape == shape
    assert src.mean == mean and src.name == f"tfds:{name}/train"
    rec = src[5]
    assert rec["image"].shape == shape and rec["image"].dtype == np.uint8
    assert isinstance(rec["label"], int) and 0 <= rec["label"] < 10
    assert len(tfds_source(name, "test")) == 24


def test_tfds_source_unknown_normalisation_and_bad_features(mock_tfds):
    assert tfds_source("kmnist", "train").std == (0.5,)
    with pytest.raises(ValueError, match=r"must have features \"image\" and \"label\"; it has"):
        tfds_source("celeb_a", "train")
    with pytest.raises(ValueError, match="name must be a non-empty TFDS data set name"):
        tfds_source("", "train")


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_is_lazy_and_deterministic():
    src = synthetic(10**12, image_shape=(16, 12, 3), num_classes=7, seed=3)  # nothing allocated
    assert len(src) == 10**12 and src.image_shape == (16, 12, 3)
    a, b = src[10**12 - 1], src[10**12 - 1]
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["image"].dtype == np.uint8 and a["image"].shape == (16, 12, 3)
    labels = {src[i]["label"] for i in range(200)}
    assert labels == set(range(7))
    assert not np.array_equal(src[0]["image"], synthetic(5, (16, 12, 3), 7, seed=4)[0]["image"])
    with pytest.raises(ValueError, match="num_examples must be a positive int"):
        synthetic(0)
