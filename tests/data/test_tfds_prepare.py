"""MNIST and CIFAR prepared by TFDS's own builders without TensorFlow (`tfds_prepare`).

Offline: tiny files in the published formats (gzip-compressed idx files; CIFAR binary
batches in a .tar.gz) stand in for the downloads. Only the network fetch of TFDS's
downloader is replaced, and it reports each URL's registered size and checksum, so TFDS's
download manager (its cache, checksum checks and bookkeeping) runs as it does for real.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import types

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")  # part of the install

from PIL import Image  # noqa: E402
from tensorflow_datasets.core.download import checksums, downloader  # noqa: E402
from tensorflow_datasets.image_classification import cifar, mnist  # noqa: E402

from jaxcnn.data import tfds_prepare, tfds_source  # noqa: E402

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
MNIST_SPLITS = {"train": (24, 1), "test": (12, 2)}  # split: (examples, seed)
CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def mnist_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 28, 28) random images (all distinct) and uint8 labels of one split."""
    n, seed = MNIST_SPLITS[split]
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, np.uint8)


def idx(array: np.ndarray) -> bytes:
    """An idx file of uint8: 0, 0, 8, ndim, then the sizes as big-endian int32, then data."""
    return bytes((0, 0, 8, array.ndim)) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()


def mnist_downloads() -> dict[str, bytes]:
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = mnist_arrays(split)
        files[f"{MNIST_URL}{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx(images))
        files[f"{MNIST_URL}{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx(labels))
    return files


# name: (URL, folder in the archive, label files and their names, train files, test files,
# examples per file). CIFAR-100's records start with the coarse label, then the fine one.
CIFAR = {
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "cifar-10-batches-bin/",
        {"batches.meta.txt": CIFAR10_NAMES},
        [f"data_batch_{i}.bin" for i in range(1, 6)],
        ["test_batch.bin"],
        4,
    ),
    "cifar100": (
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "cifar-100-binary/",
        {
            "coarse_label_names.txt": [f"coarse_{i}" for i in range(20)],
            "fine_label_names.txt": [f"fine_{i}" for i in range(100)],
        },
        ["train.bin"],
        ["test.bin"],
        7,
    ),
}


def cifar_records(name: str, file: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 32, 32, 3) random images and (n, L) labels of one CIFAR binary file."""
    *_, per_file = CIFAR[name]
    rng = np.random.default_rng([len(name), sum(map(ord, file))])
    images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
    if name == "cifar10":
        labels = rng.integers(0, 10, (per_file, 1), np.uint8)
    else:
        labels = np.stack([rng.integers(0, 20, per_file), rng.integers(0, 100, per_file)], 1)
    return images, labels.astype(np.uint8)


def cifar_binary(name: str, file: str) -> bytes:
    images, labels = cifar_records(name, file)
    chw = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels, chw], axis=1).tobytes()


def cifar_expected(name: str, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, labels) of every example of a split, in the order of the files."""
    _, _, _, train, test, _ = CIFAR[name]
    out = []
    for file in train if split == "train" else test:
        images, labels = cifar_records(name, file)
        out.extend(zip(images, labels, strict=True))
    return out


def cifar_downloads(name: str) -> dict[str, bytes]:
    url, folder, label_files, train, test, _ = CIFAR[name]
    members = {f: ("\n".join(names) + "\n\n").encode() for f, names in label_files.items()}
    members.update({f: cifar_binary(name, f) for f in (*train, *test)})
    members["readme.html"] = b"<html></html>"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        folder_info = tarfile.TarInfo(folder.rstrip("/"))
        folder_info.type = tarfile.DIRTYPE
        tar.addfile(folder_info)
        for member, data in members.items():
            info = tarfile.TarInfo(folder + member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {url: buffer.getvalue()}


def fake_fetch(served: dict[str, bytes]):
    """A stand-in for the downloader's network fetch, answering from ``served``."""
    registered = checksums.get_all_url_infos()

    def fetch(self, url, destination_path, verify=True):
        if url not in served:
            raise ConnectionError(f"Failed to resolve {url!r} (Name or service not known)")
        info = registered[url]
        path = destination_path / info.filename
        path.write_bytes(served[url])
        # The registered size and checksum: TFDS checks these against its registry.
        return downloader.DownloadResult(path=path, url_info=info)

    return fetch


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """URL -> bytes the fake server answers with; a URL not in it fails as offline."""
    served: dict[str, bytes] = {}
    monkeypatch.setattr(downloader._Downloader, "_sync_download", fake_fetch(served))
    # The TF-free path whether or not TensorFlow is installed where the tests run.
    monkeypatch.setattr(tfds_prepare, "tensorflow_installed", lambda: False)
    return served


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_mnist_prepares_without_tensorflow_and_reads_back(downloads, tmp_path):
    downloads.update(mnist_downloads())
    data_dir = str(tmp_path)
    for split in ("train", "test"):
        images, labels = mnist_arrays(split)
        src = tfds_source("mnist", split, data_dir=data_dir)
        assert len(src) == len(labels) and src.image_shape == (28, 28, 1)
        assert src.num_classes == 10 and src.mean == (0.1307,)
        expected = {img.tobytes(): int(lab) for img, lab in zip(images, labels, strict=True)}
        assert len(expected) == len(labels)  # every image is distinct
        seen = set()
        for i in range(len(src)):
            rec = src[i]
            assert rec["image"].dtype == np.uint8 and rec["image"].shape == (28, 28, 1)
            assert expected[rec["image"][:, :, 0].tobytes()] == rec["label"]
            seen.add(rec["image"].tobytes())
        assert len(seen) == len(labels)  # each written example exactly once

    # TFDS's own folder and files: what tfds.data_source reads directly, with TFDS's info.
    folder = tmp_path / "mnist" / "3.0.1"
    assert sorted(p.name for p in folder.glob("mnist-*.array_record-*")) == [
        "mnist-test.array_record-00000-of-00001",
        "mnist-train.array_record-00000-of-00001",
    ]
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info["moduleName"] == "tensorflow_datasets.image_classification.mnist"
    assert info["fileFormat"] == "array_record" and info["version"] == "3.0.1"
    direct = tfds.data_source("mnist", data_dir=data_dir)
    for split in ("train", "test"):
        src = tfds_source("mnist", split, data_dir=data_dir)
        assert len(direct[split]) == len(src)
        for i in range(len(src)):
            rec = direct[split][i]
            assert int(rec["label"]) == src[i]["label"]
            np.testing.assert_array_equal(rec["image"], src[i]["image"])


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_prepares_without_tensorflow_and_reads_back(downloads, tmp_path, name):
    downloads.update(cifar_downloads(name))
    data_dir = str(tmp_path)
    src = {split: tfds_source(name, split, data_dir=data_dir) for split in ("train", "test")}
    direct = tfds.data_source(name, data_dir=data_dir)
    for split in ("train", "test"):
        expected = cifar_expected(name, split)
        assert len(src[split]) == len(direct[split]) == len(expected)
        assert src[split].image_shape == (32, 32, 3)
        ids = set()
        for i in range(len(expected)):
            rec = direct[split][i]
            ident = text(rec["id"])
            assert ident.startswith(f"{split}_")
            image, labels = expected[int(ident.split("_")[1])]  # the id is the running index
            np.testing.assert_array_equal(rec["image"], image)
            np.testing.assert_array_equal(src[split][i]["image"], image)
            assert int(rec["label"]) == src[split][i]["label"] == int(labels[-1])
            if name == "cifar100":
                assert int(rec["coarse_label"]) == int(labels[0])
            ids.add(ident)
        assert ids == {f"{split}_{i:05d}" for i in range(len(expected))}
    # The label names come from the archive's files, as TFDS's builder reads them.
    features = tfds.builder(name, data_dir=data_dir).info.features
    _, _, label_files, *_ = CIFAR[name]
    *_, names = label_files.values()
    assert features["label"].names == names
    if name == "cifar100":
        assert features["coarse_label"].names == [f"coarse_{i}" for i in range(20)]


@pytest.fixture
def gfile_as_open(monkeypatch):
    """TFDS's MNIST and CIFAR modules read files with plain ``open`` instead of TensorFlow."""
    fake_tf = types.SimpleNamespace(
        io=types.SimpleNamespace(gfile=types.SimpleNamespace(GFile=open))
    )
    monkeypatch.setattr(mnist, "tf", fake_tf)
    monkeypatch.setattr(cifar, "tf", fake_tf)


def test_mnist_examples_are_those_of_tfds_generator(tmp_path, gfile_as_open):
    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    for split in ("train", "test"):
        images, labels = mnist_arrays(split)
        paths = {}
        for kind, array in (("images", images), ("labels", labels)):
            (tmp_path / f"{kind}.gz").write_bytes(gzip.compress(idx(array)))
            (tmp_path / kind).write_bytes(idx(array))  # as TFDS extracts it
            paths[kind] = tmp_path / kind
        theirs = list(
            mnist.MNIST._generate_examples(
                builder, len(labels), str(paths["images"]), str(paths["labels"])
            )
        )
        ours = list(
            tfds_prepare.mnist_examples(tmp_path / "images.gz", tmp_path / "labels.gz", 60_000)
        )
        assert [k for k, _ in ours] == [k for k, _ in theirs] == list(range(len(labels)))
        for (_, a), (_, b) in zip(ours, theirs, strict=True):
            assert a.keys() == b.keys() and a["label"] == b["label"]
            np.testing.assert_array_equal(decode(a["image"])[:, :, None], b["image"])


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_examples_are_those_of_tfds_generator(tmp_path, gfile_as_open, name):
    builder = tfds.builder(name, data_dir=str(tmp_path))
    label_keys = builder._cifar_info.label_keys
    _, _, _, train, test, _ = CIFAR[name]
    for prefix, files in (("train_", train), ("test_", test)):
        paths = []
        for f in files:
            (tmp_path / f).write_bytes(cifar_binary(name, f))
            paths.append(str(tmp_path / f))
        theirs = list(builder._generate_examples(prefix, iter(paths)))
        ours = list(tfds_prepare.cifar_examples(prefix, paths, label_keys))
        assert [k for k, _ in ours] == [k for k, _ in theirs] == list(range(len(theirs)))
        for (_, a), (_, b) in zip(ours, theirs, strict=True):
            assert a.keys() == b.keys() and a["id"] == b["id"]
            assert all(a[key] == b[key] for key in label_keys)
            np.testing.assert_array_equal(decode(a["image"]), b["image"])


def test_the_tensorflow_free_path_is_chosen_only_without_tensorflow(monkeypatch, tmp_path):
    import importlib.util

    installed = importlib.util.find_spec("tensorflow") is not None
    real_check = tfds_prepare.tensorflow_installed
    assert real_check() is installed
    builder = tfds.builder("mnist", data_dir=str(tmp_path), file_format="array_record")
    assert tfds_prepare._split_generators_for(builder) is tfds_prepare._mnist_split_generators
    # With TensorFlow, TFDS prepares as usual: the builder is left alone.
    monkeypatch.setattr(tfds_prepare, "tensorflow_installed", lambda: True)
    assert tfds_prepare.prepare_without_tensorflow(builder) is False
    assert "_split_generators" not in vars(builder) and not builder.is_prepared()
    if not installed:
        # TFDS's own path then needs TensorFlow to extract the downloads, and says so.
        served = mnist_downloads()
        monkeypatch.setattr(downloader._Downloader, "_sync_download", fake_fetch(served))
        with pytest.raises(ModuleNotFoundError, match="needs TensorFlow, which is not installed"):
            tfds_source("mnist", "train", data_dir=str(tmp_path))
        # Without TensorFlow, as here, tfds_source takes the TF-free path by itself.
        monkeypatch.setattr(tfds_prepare, "tensorflow_installed", real_check)
        assert len(tfds_source("mnist", "test", data_dir=str(tmp_path / "tf_free"))) == 12


def test_other_builders_and_versions_are_left_to_tfds(tmp_path):
    emnist = tfds.builder("emnist/mnist", data_dir=str(tmp_path))
    assert tfds_prepare._split_generators_for(emnist) is None  # a subclass of MNIST
    other = types.SimpleNamespace(name="mnist", version="9.9.9")
    assert tfds_prepare._split_generators_for(other) is None
    assert tfds_prepare._split_generators_for(types.SimpleNamespace()) is None


def test_offline_preparation_says_so(downloads, tmp_path):
    with pytest.raises(OSError, match=r"'cifar10' is not prepared in .*(?s:.*)Failed to resolve"):
        tfds_source("cifar10", "train", data_dir=str(tmp_path))
    builder = tfds.builder("cifar10", data_dir=str(tmp_path), file_format="array_record")
    assert not builder.is_prepared() and "_split_generators" not in vars(builder)


def test_malformed_downloads_are_named(tmp_path):
    bad = tmp_path / "images.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 8))
    with pytest.raises(ValueError, match=r"images\.gz: not an idx file of uint8 with 3 dim"):
        next(tfds_prepare.mnist_examples(bad, bad, 10))
    short = tmp_path / "batch.bin"
    short.write_bytes(b"\x01" * 3000)
    with pytest.raises(ValueError, match=r"batch\.bin: 3000 bytes is not a whole number of 3073"):
        next(tfds_prepare.cifar_examples("train_", [str(short)], ["label"]))
