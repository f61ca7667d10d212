"""The TFDS path with a real builder: prepared by TFDS into ArrayRecord files, then read by
`tfds_source` and trained on by `train_and_evaluate`, all without TensorFlow.

`tfds.testing.mock_data` (tests/data/test_sources.py) skips the builder, its preparation and
the files; here a tiny data set of learnable class-dependent bars goes through all of them.
"""

from __future__ import annotations

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")  # part of the install

from PIL import Image  # noqa: E402

from jaxcnn.data import create_datasets, tfds_source  # noqa: E402
from jaxcnn.training import default_config, train_and_evaluate  # noqa: E402

NAME = "jaxcnn_test_bars"  # registered by the class name below
SIZE = 32  # LeNet-5's input size, so the loader does not resize
SPLITS = {"train": (300, 1), "test": (100, 2)}  # split: (examples, seed)


def bars(num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32) images and their labels: class k is a bright two-row bar at rows
    3k + 1 and 3k + 2, of random extent, on dim uniform noise (so no two images are equal)."""
    images = np.empty((num_examples, SIZE, SIZE), np.uint8)
    labels = np.arange(num_examples, dtype=np.int64) % 10
    for i in range(num_examples):
        rng = np.random.default_rng([seed, i])
        img = rng.integers(0, 81, size=(SIZE, SIZE), dtype=np.uint8)
        left, right = rng.integers(0, 9), rng.integers(24, SIZE + 1)
        row = 3 * int(labels[i]) + 1
        img[row : row + 2, left:right] = rng.integers(200, 256, size=(2, right - left))
        images[i] = img
    return images, labels


class _Bars(tfds.core.GeneratorBasedBuilder):
    """The bars as a TFDS data set (abstract: TFDS registers only the concrete subclasses).

    Images go to TFDS as Pillow images: TFDS encodes those with Pillow, while arrays it
    would encode with TensorFlow.
    """

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(SIZE, SIZE, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _generate_examples(self, num_examples: int, seed: int):
        images, labels = bars(num_examples, seed)
        for i in range(num_examples):
            yield i, {"image": Image.fromarray(images[i]), "label": int(labels[i])}


class JaxcnnTestBars(_Bars):
    """Made locally: preparing it downloads nothing."""

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(n, s) for split, (n, s) in SPLITS.items()}


class JaxcnnTestOfflineBars(_Bars):
    """Fails as a builder does whose download cannot reach its server."""

    def _split_generators(self, dl_manager):
        raise ConnectionError("Failed to resolve 'data.example' (Name or service not known)")


class JaxcnnTestArrayBars(_Bars):
    """Hands TFDS arrays, as most catalog builders (MNIST, CIFAR) do: TensorFlow encodes them."""

    def _split_generators(self, dl_manager):
        return {"train": self._generate_arrays()}

    def _generate_arrays(self):
        images, labels = bars(20, 3)
        for i in range(20):
            yield i, {"image": images[i][:, :, None], "label": int(labels[i])}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir holding the bars, prepared as `tfds.data_source` needs them."""
    root = tmp_path_factory.mktemp("tfds")
    builder = JaxcnnTestBars(data_dir=str(root), file_format="array_record")
    builder.download_and_prepare()
    assert builder.name == NAME
    assert sorted(p.name.split(".")[0] for p in builder.data_path.glob("*.array_record*")) == [
        f"{NAME}-test",
        f"{NAME}-train",
    ]
    return str(root)


def by_pixels(split: str) -> dict[bytes, int]:
    """Generated example's pixels -> its label, for one split (TFDS shuffles the records)."""
    images, labels = bars(*SPLITS[split])
    table = {img.tobytes(): int(label) for img, label in zip(images, labels, strict=True)}
    assert len(table) == len(labels)  # every image is distinct
    return table


def test_tfds_source_reads_the_prepared_builder(data_dir):
    for split, (n, _) in SPLITS.items():
        src = tfds_source(NAME, split, data_dir=data_dir)
        assert len(src) == n and src.num_classes == 10 and src.image_shape == (SIZE, SIZE, 1)
        assert src.name == f"tfds:{NAME}/{split}" and src.mean == (0.5,) and src.std == (0.5,)
        table = by_pixels(split)
        seen = set()
        for i in range(n):
            rec = src[i]
            img = rec["image"]
            assert img.dtype == np.uint8 and img.shape == (SIZE, SIZE, 1)
            assert isinstance(rec["label"], int) and table[img.tobytes()] == rec["label"]
            seen.add(img.tobytes())
        assert len(seen) == n  # each generated example exactly once


def test_tfds_source_prepares_an_unprepared_builder(tmp_path):
    # With a data_dir, `tfds.data_source` alone would prepare TFRecord files (which need
    # TensorFlow to write and have no random access); tfds_source asks for ArrayRecord.
    src = tfds_source(NAME, "test", data_dir=str(tmp_path))
    assert len(src) == 100 and src.image_shape == (SIZE, SIZE, 1)
    assert list(tmp_path.glob(f"{NAME}/1.0.0/{NAME}-test.array_record*"))
    rec = src[7]
    assert by_pixels("test")[rec["image"].tobytes()] == rec["label"]


def test_tfds_source_says_why_preparing_failed(tmp_path):
    with pytest.raises(
        OSError,
        match=r"'jaxcnn_test_offline_bars' is not prepared in .*(?s:.*)"
        r"Failed to resolve.*offline, prepare it on a machine where that works",
    ):
        tfds_source("jaxcnn_test_offline_bars", "train", data_dir=str(tmp_path))
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match=r"needs TensorFlow, which is not install"):
            tfds_source("jaxcnn_test_array_bars", "train", data_dir=str(tmp_path))
    else:
        assert len(tfds_source("jaxcnn_test_array_bars", "train", data_dir=str(tmp_path))) == 20


def bars_config(data_dir: str):
    c = default_config()
    c.model = "lenet5"
    c.data.source = "tfds"
    c.data.name = NAME
    c.data.data_dir = data_dir
    c.data.image_size = SIZE
    c.batch_size = 30
    c.eval_batch_size = 64
    c.num_steps = 30  # 3 epochs of the 300 training images
    c.optimizer.learning_rate = 0.05
    c.eval_every_epochs = 100.0  # once, at the end
    c.log_every_steps = 10
    c.keep_checkpoints = 1
    c.progress = False
    c.tensorboard = False
    c.plot = False
    return c


def test_the_loader_yields_the_generated_examples(data_dir):
    c = bars_config(data_dir)
    ds = create_datasets(c.data, seed=0, batch_size=c.batch_size, eval_batch_size=64)
    assert (ds.num_train, ds.num_eval, ds.num_classes) == (300, 100, 10)
    assert ds.image_shape == (SIZE, SIZE, 1)

    def pixels(x):  # the loader's normalisation, (x / 255 - 0.5) / 0.5, undone
        return np.rint((np.asarray(x)[..., 0] * 0.5 + 0.5) * 255).astype(np.uint8)

    test = by_pixels("test")
    seen = []
    for b in range(len(ds.eval)):
        batch = ds.eval.batch_at(b)
        for img, label, real in zip(
            pixels(batch["image"]), batch["label"], batch["mask"], strict=True
        ):
            if real:
                assert test[img.tobytes()] == label
                seen.append(img.tobytes())
    assert len(seen) == 100 and set(seen) == set(test)  # one pass over the test split
    train = by_pixels("train")
    batch = ds.train.batch_at(0)
    # Training batches hold the records' own uint8 pixels: the device augments them.
    assert batch["image"].shape == (30, SIZE, SIZE, 1) and batch["image"].dtype == np.uint8
    for img, label in zip(batch["image"][..., 0], batch["label"], strict=True):
        assert train[img.tobytes()] == label


@pytest.mark.slow
def test_train_and_evaluate_on_the_prepared_builder(data_dir, tmp_path):
    res = train_and_evaluate(bars_config(data_dir), tmp_path / "run")
    assert res["step"] == 30 and not res["preempted"]
    assert res["eval_count"] == 100 and np.isfinite(res["eval_loss"])
    assert res["eval_top1"] >= 0.6, res  # chance is 0.1; the bars are easy
