"""The loader: global-position determinism, process slicing, resumption, eval masks, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxcnn.data import DataConfig, create_datasets, digits, tfds_source

# Random crops and flips on: every determinism check below covers augmentation too.
AUGMENTED = {"random_crop_padding": 2, "hflip": True}


def make(data=None, *, seed=0, batch_size=128, eval_batch_size=100, index=0, count=1):
    """The loader with the host pipeline (the reference of the device one), unless `data`
    says otherwise."""
    if data is None or isinstance(data, dict):
        data = {"augment_on": "host", **(data or {})}
    return create_datasets(
        data,
        seed=seed,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        process_index=index,
        process_count=count,
    )


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_every_shape_of_the_data_section_builds_the_same_datasets():
    from jaxcnn.training import default_config

    # The CLI's ConfigDict section, the typed section, and a saved config.json's mapping.
    section = default_config().data
    section.augment_on = "host"
    a = make(section)
    b = make(DataConfig(augment_on="host"))
    c = make(DataConfig(augment_on="host").to_dict())
    for other in (b, c):
        assert_batches_equal([a.train.batch_at(0)], [other.train.batch_at(0)])
    with pytest.raises(ValueError, match=r"data: unknown keys \['imagesize'\]"):
        make({"imagesize": 28})


def test_default_digits_datasets():
    ds = make()
    assert ds.num_classes == 10 and ds.image_shape == (32, 32, 1)
    assert (ds.num_train, ds.num_eval) == (1438, 359)
    assert ds.steps_per_epoch == ds.train.steps_per_epoch == 1438 // 128
    assert ds.skipped == () and ds.source_names == ("digits/train", "digits/test")
    assert "1438 examples" in ds.description
    batch = next(iter(ds.train))
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (128, 32, 32, 1)
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (128,)
    evals = list(ds.eval)
    assert len(evals) == len(ds.eval) == 4
    assert {k: (v.shape, v.dtype) for k, v in evals[0].items()} == {
        "image": ((100, 32, 32, 1), np.float32),
        "label": ((100,), np.int32),
        "mask": ((100,), np.float32),
    }
    # Normalised by the train statistics: the test split is close to zero mean, unit std.
    images = np.concatenate([b["image"][b["mask"] > 0] for b in evals])
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05


def test_unaugmented_batches_are_the_permuted_records():
    ds = make(batch_size=100)
    src = digits("train")
    batches = ds.train._batches
    n = len(src)
    first, second = batches.records(np.arange(n)), batches.records(np.arange(n, 2 * n))
    # Each epoch visits every example exactly once, in a different order.
    assert sorted(first.tolist()) == list(range(n)) == sorted(second.tolist())
    assert not np.array_equal(first, second)
    # Batch 14 straddles the first epoch boundary (positions 1400..1499).
    order = np.concatenate([first, second])
    batch = ds.train.batch_at(1400)
    expected = src.images[order[1400:1500]].astype(np.float32) / 255
    expected = (expected - src.mean[0]) / src.std[0]
    np.testing.assert_allclose(batch["image"], expected, atol=1e-5)
    np.testing.assert_array_equal(batch["label"], src.labels[order[1400:1500]])


def test_same_seed_same_batches_different_seed_different():
    a, b, c = make(AUGMENTED), make(AUGMENTED), make(AUGMENTED, seed=1)
    first = take(iter(a.train), 3)
    assert_batches_equal(first, take(iter(b.train), 3))
    other = take(iter(c.train), 3)
    assert not np.array_equal(first[0]["label"], other[0]["label"])
    # Augmentation alone also depends on the seed: same records, different pixels.
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    # And it is really random: two epochs of the same records differ in pixels.
    recs = a.train._batches.records(np.arange(2 * 1438))
    e0, e1 = recs[:1438], recs[1438:]
    i = int(np.flatnonzero(e1 == e0[0])[0])
    first_visit, second_visit = a.train.batch_at(0), a.train.batch_at(1438 + i)
    assert first_visit["label"][0] == second_visit["label"][0]
    assert not np.array_equal(first_visit["image"][0], second_visit["image"][0])


@pytest.mark.parametrize("count", [2, 4])
def test_process_slices_concatenate_to_the_single_process_batch(count):
    single = make(AUGMENTED, batch_size=64, eval_batch_size=80)
    parts = [
        make(AUGMENTED, batch_size=64, eval_batch_size=80, index=p, count=count)
        for p in range(count)
    ]
    assert all(p.train.batch_size == 64 // count for p in parts)
    # Steps 0, 1 and 22..23 (positions 1408..1535 cross the first epoch boundary at 1438).
    for step in (0, 1, 22, 23):
        whole = single.train.batch_at(step * 64)
        sliced = [p.train.batch_at(step * 64) for p in parts]
        joined = {k: np.concatenate([s[k] for s in sliced]) for k in whole}
        assert_batches_equal([joined], [whole])
    whole_eval = list(single.eval)
    sliced_eval = [list(p.eval) for p in parts]
    assert all(len(s) == len(whole_eval) == 5 for s in sliced_eval)
    for b, whole in enumerate(whole_eval):
        joined = {k: np.concatenate([s[b][k] for s in sliced_eval]) for k in whole}
        assert_batches_equal([joined], [whole])


def test_iterator_matches_batch_at():
    ds = make(AUGMENTED, batch_size=96)
    it = iter(ds.train)
    got = take(it, 16)  # crosses the epoch boundary at position 1438
    assert_batches_equal(got, [ds.train.batch_at(96 * s) for s in range(16)])
    assert it.get_state()["position"] == 16 * 96 and it.step == 16
    it.close()


def test_resume_from_state_is_bitwise_identical_across_an_epoch_boundary():
    ds = make(AUGMENTED)
    it = iter(ds.train)
    take(it, 10)
    state = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
    continued = take(it, 4)  # steps 10..13: the epoch boundary is inside step 11
    fresh = make(AUGMENTED)
    resumed = fresh.train.iterator(state)
    assert_batches_equal(take(resumed, 4), continued)
    # set_state on a used iterator rewinds it.
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 1), continued[:1])
    for i in (it, resumed):
        i.close()


def test_grain_checkpoint_handler_saves_and_restores_the_iterator(tmp_path):
    """The engine may checkpoint the iterator with grain's orbax handler."""
    import grain
    from etils import epath

    ds = make(AUGMENTED, batch_size=64)
    it = iter(ds.train)
    take(it, 25)  # past the epoch boundary at position 1438
    assert isinstance(it, grain.DatasetIterator)
    handler = grain.checkpoint.CheckpointHandler()
    handler.save(epath.Path(tmp_path), it)
    restored = iter(make(AUGMENTED, batch_size=64).train)
    handler.restore(epath.Path(tmp_path), restored)
    assert restored.position == 25 * 64
    assert_batches_equal(take(restored, 2), take(it, 2))
    for i in (it, restored):
        i.close()


def test_state_from_another_seed_or_data_is_rejected():
    it = iter(make(seed=0).train)
    other = iter(make(seed=1).train)
    with pytest.raises(ValueError, match="seed=0, but this loader has seed=1"):
        other.set_state(it.get_state())
    with pytest.raises(ValueError, match="state must be a dict"):
        other.set_state({"step": 3})


def test_eval_covers_every_example_once():
    src = digits("test")
    for count in (1, 2):
        parts = [make(eval_batch_size=64, index=p, count=count) for p in range(count)]
        assert len(parts[0].eval) == 6  # ceil(359 / 64)
        seen_labels, masks = [], []
        for batches in zip(*[list(p.eval) for p in parts], strict=True):
            for b in batches:
                masks.append(b["mask"])
                seen_labels.append(b["label"])
        mask = np.concatenate(masks)
        # Positions 0..383 in order: the first 359 real, the rest masked padding.
        np.testing.assert_array_equal(mask, (np.arange(384) < 359).astype(np.float32))
        np.testing.assert_array_equal(np.concatenate(seen_labels)[:359], src.labels)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches():
    """grain worker processes: same stream, same state semantics."""
    ref = make(AUGMENTED, batch_size=64)
    workers = make({**AUGMENTED, "worker_count": 2}, batch_size=64)
    it = iter(workers.train)
    got = take(it, 5)
    state = it.get_state()
    it.close()
    plain = iter(ref.train)
    assert_batches_equal(got, take(plain, 5))
    resumed = workers.train.iterator(state)
    assert_batches_equal(take(resumed, 1), take(plain, 1))
    resumed.close()
    assert type(got[0]["image"]) is np.ndarray  # copied out of grain's shared memory


def test_channels_and_user_normalisation():
    ds = make({"channels": 3, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    assert ds.image_shape == (32, 32, 3) and ds.mean == (0.5,) * 3
    x = ds.eval.batch_at(0)["image"]
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    raw = digits("test").images[:100].astype(np.float32) / 255
    np.testing.assert_allclose(x[..., :1], (raw - 0.5) / 0.25, atol=1e-5)
    # Without user values the grey statistics are repeated per channel.
    assert make({"channels": 3}).mean == digits("train").mean * 3


def test_resize_for_a_different_image_size():
    ds = make({"image_size": 20, "random_crop_padding": 2})
    assert ds.train.batch_at(0)["image"].shape == (128, 20, 20, 1)
    assert ds.eval.batch_at(0)["image"].shape == (100, 20, 20, 1)
    ds = make({"image_size": 24, "eval_resize": 28})  # resize_shorter then (random|centre) crop
    assert ds.train.batch_at(0)["image"].shape == (128, 24, 24, 1)
    assert ds.eval.batch_at(0)["image"].shape == (100, 24, 24, 1)


def test_synthetic_rgb_with_all_augmentations():
    cfg = {
        "source": "synthetic",
        "synthetic_examples": 40,
        "image_size": 24,
        "random_resized_crop": True,
        "hflip": True,
        "pca_lighting": 0.1,
        "num_classes": 5,
        "eval_resize": 28,
    }
    ds = make(cfg, batch_size=16, eval_batch_size=16)
    assert ds.num_classes == 5 and ds.image_shape == (24, 24, 3)
    a = take(iter(ds.train), 4)  # 64 positions: crosses the boundary at 40
    assert_batches_equal(a, take(iter(make(cfg, batch_size=16, eval_batch_size=16).train), 4))
    assert all(np.isfinite(b["image"]).all() and b["label"].max() < 5 for b in a)
    assert len(list(ds.eval)) == 3


def test_tfds_through_the_loader():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = make({"source": "tfds", "name": "mnist", "random_crop_padding": 2}, batch_size=8)
        batch = next(iter(ds.train))
        evals = list(ds.eval)
    assert ds.image_shape == (32, 32, 1) and ds.mean == (0.1307,) and ds.num_train == 30
    assert batch["image"].shape == (8, 32, 32, 1)
    assert sum(float(b["mask"].sum()) for b in evals) == 30


def test_variable_size_images_crop_from_the_shorter_side_resize():
    """imagenette (mocked) has images of varying shapes: eval_resize == image_size still needs
    a random crop along the longer side in training and a centre crop in evaluation."""
    import tensorflow_datasets as tfds

    cfg = {"source": "tfds", "name": "imagenette", "eval_split": "validation"}
    cfg.update(image_size=16, eval_resize=16, hflip=False)
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        shapes = {tfds_source("imagenette", "train")[i]["image"].shape for i in range(10)}
        ds = make(cfg, batch_size=10, eval_batch_size=10)
        a, b = ds.train.batch_at(0), make(cfg, batch_size=10, eval_batch_size=10).train.batch_at(0)
        evals = list(ds.eval)
    assert len(shapes) > 1  # really of varying size
    assert ds.image_shape == (16, 16, 3) and ds.mean == (0.485, 0.456, 0.406)
    assert a["image"].shape == (10, 16, 16, 3)
    assert_batches_equal([a], [b])
    assert evals[0]["image"].shape == (10, 16, 16, 3) and evals[0]["mask"].sum() == 10


def test_folder_through_the_loader_reports_skipped_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for cls in ("a", "b"):
            os.makedirs(tmp_path / split / cls)
            for i in range(n):
                img = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)
                Image.fromarray(img).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cfg = {"source": "folder", "name": str(tmp_path), "eval_split": "val", "image_size": 8}
    plain = make(cfg, batch_size=4, eval_batch_size=2)
    with pytest.raises(ValueError, match=r"could not decode image file .*broken\.png"):
        for start in (0, 4):  # positions 0..7 visit all 7 training files
            plain.train.batch_at(start)
    with pytest.warns(UserWarning, match="skipped 1 corrupt files"):
        ds = make({**cfg, "skip_corrupt": True}, batch_size=4, eval_batch_size=2)
    assert [os.path.basename(p) for p in ds.skipped] == ["broken.png"]
    assert "1 corrupt files skipped" in ds.description and ds.num_train == 6
    assert ds.train.batch_at(4)["image"].shape == (4, 8, 8, 3)
    assert ds.eval.batch_at(0)["label"].tolist() == [0, 1]


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        ({}, {"batch_size": 129, "count": 2}, r"batch_size \(129\) must be divisible by the"),
        ({}, {"eval_batch_size": 99, "count": 2}, r"eval_batch_size \(99\) must be divisible"),
        ({"source": "imagenet"}, {}, r"data.source must be one of .*'imagenet'"),
        ({"sorce": "digits"}, {}, r"unknown keys \['sorce'\]"),
        ({"image_size": 32, "eval_resize": 28}, {}, r"eval_resize \(28\) must be >= data.image"),
        ({"random_resized_crop": True, "random_crop_padding": 4}, {}, "alternatives"),
        ({"pca_lighting": 0.1}, {}, r"pca_lighting needs RGB images; digits/train has 1"),
        ({"random_rotation": 200.0}, {}, r"random_rotation must be degrees in \[0, 180\]"),
        ({"random_scale": 1.0}, {}, r"random_scale must be a float in \[0, 1\); got 1.0"),
        ({"channels": 2}, {}, "data.channels must be None, 1 or 3; got 2"),
        ({"mean": (0.5, 0.5)}, {}, r"data.mean must have one value per channel \(1\)"),
        ({"std": (0.0,)}, {}, "data.std must be positive"),
        ({"num_classes": 5}, {}, r"num_classes \(5\) is smaller than the source's 10"),
        ({"image_size": 0}, {}, "data.image_size must be an int >= 1; got 0"),
        ({"source": "tfds"}, {}, "data.name must be a TFDS data set name"),
        ({"source": "folder"}, {}, "data.name must be the folder root"),
        ({}, {"seed": -1}, "seed must be a non-negative int"),
        ({}, {"index": 2, "count": 2}, r"process_index must be an int in \[0, 2\); got 2"),
    ],
)
def test_configuration_errors(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(data, **kwargs)


def test_bad_config_type():
    with pytest.raises(TypeError, match=r"data: expected a config section .* got int"):
        create_datasets(3, seed=0, batch_size=8, eval_batch_size=8)


# ----------------------------------------------------------------- augment_on="device"
def test_device_mode_leaves_the_host_only_the_common_size():
    """The default: training batches are the records' uint8 pixels, in the same order as the
    host pipeline's, and `Datasets.augment` says what the device does with them."""
    from jaxcnn.data import device_augment

    ds = make({"augment_on": "device", **AUGMENTED}, batch_size=100)
    host = make(AUGMENTED, batch_size=100)
    src = digits("train")
    batch = ds.train.batch_at(1400)
    order = host.train._batches.records(np.arange(1400, 1500))
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (100, 32, 32, 1)
    np.testing.assert_array_equal(batch["image"], src.images[order])
    np.testing.assert_array_equal(batch["label"], host.train.batch_at(1400)["label"])
    spec = ds.augment
    assert isinstance(spec, device_augment.AugmentSpec)
    assert (spec.input_hw, spec.image_size, spec.random_crop_padding, spec.hflip) == (
        (32, 32),
        32,
        2,
        True,
    )
    np.testing.assert_allclose(spec.mean, ds.mean, rtol=1e-6)
    np.testing.assert_allclose(spec.std, ds.std, rtol=1e-6)
    assert host.augment is None
    # Evaluation stays on the host, identical in both modes.
    assert_batches_equal([ds.eval.batch_at(0)], [host.eval.batch_at(0)])
    out = device_augment.augment_batch(batch["image"], device_augment_key(), spec)
    assert out.shape == (100, 32, 32, 1) and out.dtype == np.float32


def device_augment_key():
    import jax

    return jax.random.PRNGKey(0)


@pytest.mark.parametrize(
    "data,common",
    [
        ({"image_size": 20, "random_crop_padding": 2}, 20),  # resized to image_size
        ({"image_size": 24, "eval_resize": 28}, 28),  # the device crops 24 from 28
        ({"image_size": 24, "random_resized_crop": True}, 24),
    ],
)
def test_device_mode_common_sizes(data, common):
    ds = make({"augment_on": "device", **data}, batch_size=16, eval_batch_size=16)
    batch = ds.train.batch_at(0)
    assert batch["image"].shape == (16, common, common, 1) and batch["image"].dtype == np.uint8
    assert ds.augment.input_hw == (common, common)
    size = data["image_size"]
    assert ds.eval.batch_at(0)["image"].shape == (16, size, size, 1)
    from jaxcnn.data import device_augment

    out = device_augment.augment_batch(batch["image"], device_augment_key(), ds.augment)
    assert out.shape == (16, size, size, 1)


def test_augment_on_must_be_device_or_host():
    with pytest.raises(ValueError, match=r"data.augment_on must be one of \('device', 'host'\)"):
        make({"augment_on": "gpu"})
