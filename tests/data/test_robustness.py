"""Data loading against unusual inputs: 16-bit images, symlinked folders, a killed trainer."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from jaxcnn.data import ImageFolder, augment, create_datasets

REPO = Path(__file__).resolve().parents[2]
LINUX = sys.platform.startswith("linux")


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """A Python child running ``code`` with this checkout's jaxcnn importable."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kwargs},
    )


# ----------------------------------------------------------------------------- 16-bit images

# Values that tell scaling (round(v / 257)) from clipping (min(v, 255)) and from keeping the
# high byte (v // 256): 128 -> 0 and 129 -> 1 (the rounding boundary), 385 -> 1 (v // 256 = 1,
# but 385 / 257 = 1.498), 65407 -> 255 (v // 256 = 255 too), 32767/32768 -> 127/128.
GREY16 = np.array(
    [[0, 1, 128, 129, 255, 256, 385, 386], [32767, 32768, 50000, 65279, 65407, 65534, 65535, 7]],
    dtype=np.uint16,
)


def _expected8(v: np.ndarray) -> np.ndarray:
    return np.rint(v.astype(np.float64) / 257.0).astype(np.uint8)


def _png(path, array: np.ndarray, color_type: int) -> None:
    """A minimal 16-bit PNG (filter 0 on every row), for the colour types Pillow cannot write."""
    h, w = array.shape[:2]
    rows = array.reshape(h, -1).astype(">u2")
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _grey16_tree(root: Path) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    im = Image.fromarray(GREY16)  # Pillow writes uint16 as a 16-bit grey PNG
    assert im.mode == "I;16"
    im.save(root / "a" / "grey16.png")
    # A horizontal gradient over the whole 16-bit range, written without Pillow.
    ramp = np.tile(np.linspace(0, 65535, 40).round().astype(np.uint16), (3, 1))
    _png(root / "b" / "ramp16.png", ramp, color_type=0)


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("skip_corrupt", [False, True])
def test_16bit_grey_png_is_scaled_not_clipped(tmp_path, mode, skip_corrupt):
    _grey16_tree(tmp_path)
    src = ImageFolder(tmp_path, mode=mode, skip_corrupt=skip_corrupt)
    assert len(src) == 2 and src.skipped == ()
    c = 1 if mode == "L" else 3
    ramp = np.tile(np.linspace(0, 65535, 40).round().astype(np.uint16), (3, 1))
    for i, values in enumerate((GREY16, ramp)):
        img = src[i]["image"]
        assert img.dtype == np.uint8 and img.shape == (*values.shape, c)
        expected = np.repeat(_expected8(values)[:, :, None], c, axis=2)
        np.testing.assert_array_equal(img, expected)


def test_16bit_grey_png_through_the_loader(tmp_path):
    for split in ("train", "val"):
        _grey16_tree(tmp_path / split)
    cfg = {"source": "folder", "name": str(tmp_path), "eval_split": "val", "image_size": 8}
    cfg.update(channels=1, mean=(0.0,), std=(1.0,))
    ds = create_datasets(
        cfg, seed=0, batch_size=2, eval_batch_size=2, process_index=0, process_count=1
    )
    np.testing.assert_array_equal(ds.eval_source[0]["image"][:, :, 0], _expected8(GREY16))
    # Evaluation does not augment: GREY16 (2x8) is resized to 8x8 and divided by 255.
    expected = augment.resize(_expected8(GREY16)[:, :, None], 8).astype(np.float32) / 255
    np.testing.assert_allclose(ds.eval.batch_at(0)["image"][0], expected, rtol=1e-6)


def test_16bit_grey_from_other_pillow_modes(tmp_path):
    """Big-endian 16-bit and 32-bit integer grey images (as TIFF) scale the same way."""
    from PIL import Image

    from jaxcnn.data import sources

    big = tmp_path / "big.tif"
    Image.fromarray(GREY16.astype(">u2")).save(big)
    wide = tmp_path / "wide.tif"
    Image.fromarray(GREY16.astype(np.int32)).save(wide)
    assert (Image.open(big).mode, Image.open(wide).mode) == ("I;16B", "I")
    for path in (big, wide):
        np.testing.assert_array_equal(sources._decode(str(path), "L")[:, :, 0], _expected8(GREY16))


@pytest.mark.parametrize("color_type, channels", [(2, 3), (6, 4), (4, 2)])
def test_16bit_colour_png_is_not_clipped(tmp_path, color_type, channels):
    """Pillow decodes 16-bit colour PNGs to 8 bits itself (the high byte): within 1 of v / 257."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (6, 7, channels)).astype(np.uint16)
    values[0, :, 0] = [0, 255, 256, 385, 32768, 65279, 65535]
    (tmp_path / "a").mkdir()
    _png(tmp_path / "a" / "colour16.png", values, color_type)
    img = ImageFolder(tmp_path)[0]["image"]
    grey = values[..., :1] if color_type == 4 else values[..., :3]
    expected = np.broadcast_to(_expected8(grey), (6, 7, 3)).astype(int)
    assert img.shape == (6, 7, 3)
    assert np.abs(img.astype(int) - expected).max() <= 1
    assert img[0, -1, 0] == 255 and img[0, 0, 0] == 0


# ----------------------------------------------------------------------------- symlinks

_LIST = """
import sys
from jaxcnn.data import ImageFolder
try:
    src = ImageFolder(sys.argv[1])
except ValueError as e:
    print("ValueError:", e)
else:
    print("loaded", len(src))
"""


def _image_folder_in_child(root: Path, timeout: float = 60.0) -> str:
    """ImageFolder(root) in a child process, so that a walk that never ends fails the test."""
    proc = _python(_LIST, str(root))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"ImageFolder({str(root)!r}) did not finish within {timeout:.0f} s")
    assert proc.returncode == 0, err
    return out.strip()


def _png8(path: Path, value: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)


def _two_classes(root: Path) -> None:
    _png8(root / "cat" / "1.png")
    _png8(root / "cat" / "sub" / "2.png")
    _png8(root / "dog" / "3.png")


symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX links")


@symlinks
@pytest.mark.parametrize(
    "link, target, ancestor",
    [
        ("cat/self", ".", "cat"),  # a folder linking to itself
        ("cat/sub/up", "..", "cat"),  # to its parent, the class folder
        ("cat/sub/root", "../..", ""),  # to the image root above the class folders
    ],
)
def test_symlink_loop_is_an_error_naming_the_link(tmp_path, link, target, ancestor):
    _two_classes(tmp_path)
    os.symlink(target, tmp_path / link)
    out = _image_folder_in_child(tmp_path)
    assert out.startswith("ValueError: symlink loop: "), out
    assert f"{tmp_path / link} -> {target} leads back to " in out
    back = out.rsplit(" leads back to ", 1)[1]
    assert os.path.samefile(back, tmp_path / ancestor), out


@symlinks
def test_mutual_symlink_loop_is_an_error(tmp_path):
    _two_classes(tmp_path)
    os.symlink("../dog", tmp_path / "cat" / "to_dog")
    os.symlink("../cat", tmp_path / "dog" / "to_cat")
    out = _image_folder_in_child(tmp_path)
    # The walk of class "cat" enters dog through cat/to_dog and meets dog/to_cat.
    link = tmp_path / "cat" / "to_dog" / "to_cat"
    assert out == f"ValueError: symlink loop: {link} -> ../cat leads back to {tmp_path / 'cat'}"


@symlinks
def test_mutual_symlink_loop_inside_a_class_is_an_error(tmp_path):
    _two_classes(tmp_path)
    (tmp_path / "cat" / "a").mkdir()
    (tmp_path / "cat" / "b").mkdir()
    os.symlink("../b", tmp_path / "cat" / "a" / "to_b")
    os.symlink("../a", tmp_path / "cat" / "b" / "to_a")
    out = _image_folder_in_child(tmp_path)
    link = tmp_path / "cat" / "a" / "to_b" / "to_a"
    assert out == f"ValueError: symlink loop: {link} -> ../a leads back to {tmp_path / 'cat' / 'a'}"


@symlinks
def test_many_paths_to_a_folder_are_walked_once(tmp_path):
    """No loop, but 2**24 paths to the deepest folder: each folder is still listed once."""
    levels = 25
    for i in range(levels):
        _png8(tmp_path / "cat" / f"n{i:02d}" / "x.png")
        if i + 1 < levels:
            for name in ("a", "b"):
                os.symlink(f"../n{i + 1:02d}", tmp_path / "cat" / f"n{i:02d}" / name)
    assert _image_folder_in_child(tmp_path) == f"loaded {levels}"


@symlinks
def test_symlinked_class_folder_and_file_still_load(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _png8(elsewhere / "dogs" / "d.png")
    _png8(elsewhere / "loose.png")
    root = tmp_path / "images"
    _png8(root / "cat" / "c.png")
    os.symlink(elsewhere / "dogs", root / "dog")  # a class folder that is a link
    os.symlink(elsewhere / "loose.png", root / "cat" / "linked.png")  # a linked file
    os.symlink(elsewhere / "dogs", root / "cat" / "more")  # a linked folder inside a class
    src = ImageFolder(root)
    names = [os.path.relpath(p, root) for p in src.paths]
    assert names == ["cat/c.png", "cat/linked.png", "cat/more/d.png", "dog/d.png"]
    assert src.labels.tolist() == [0, 0, 0, 1]
    assert src[1]["image"].shape == (4, 4, 3)


@symlinks
def test_a_file_reached_through_two_links_is_listed_once(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _png8(elsewhere / "e.png")
    root = tmp_path / "images"
    _png8(root / "cat" / "a.png")
    os.symlink("a.png", root / "cat" / "b.png")  # the same file under a second name
    os.symlink(elsewhere, root / "cat" / "x")  # two links to one folder
    os.symlink(elsewhere, root / "cat" / "y")
    os.symlink(root / "cat" / "a.png", root / "cat" / "z.png")
    names = [os.path.relpath(p, root) for p in ImageFolder(root).paths]
    # The walk goes through names in sorted order; each file counts under its first path.
    assert names == ["cat/a.png", "cat/x/e.png"]


# ----------------------------------------------------------------------------- worker processes

_TRAINER = """
import os, time
from jaxcnn.data import create_datasets

ds = create_datasets(
    {"worker_count": 2}, seed=0, batch_size=32, eval_batch_size=32,
    process_index=0, process_count=1,
)
it = iter(ds.train)
for _ in range(4):
    next(it)
workers = []
for name in os.listdir("/proc"):
    if not name.isdigit():
        continue
    try:
        with open(f"/proc/{name}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{name}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        continue
    if ppid == os.getpid() and b"spawn_main" in cmdline:
        workers.append(int(name))
print(*workers, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether pid is a running process (a zombie, waiting for a new parent to reap it, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="worker processes die with their parent on Linux")
def test_worker_processes_die_with_a_killed_trainer(tmp_path):
    import select

    log = tmp_path / "trainer.log"
    with open(log, "w") as err:
        # stderr to a file: workers that outlive the trainer keep its pipes open.
        proc = _python(_TRAINER, stderr=err)
    workers: list[int] = []
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        workers = [int(p) for p in line.split()]
        assert len(workers) == 2, f"expected 2 worker pids; got {line!r}: {log.read_text()}"
        assert all(_alive(p) for p in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "workers outlived the killed trainer"
    finally:
        proc.kill()
        proc.wait()
        for pid in workers:  # never leave orphans behind, whatever the outcome
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
