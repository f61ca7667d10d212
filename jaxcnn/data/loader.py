"""Deterministic, resumable, per-process batches for training and evaluation, built on grain.

The training data is one infinite stream of global positions q = 0, 1, 2, ...:

* position q lies in epoch e = q // N (N training examples) and reads record
  ``perm_e[q % N]``, where perm_e is a permutation drawn from (seed, e) alone;
* its augmentation draws from ``default_rng([seed, 1, q])`` alone;
* global batch b is positions [b G, (b + 1) G) for the global batch size G, and process p of P
  loads only its slice [b G + p B, b G + (p + 1) B) with B = G / P.

So the sequence of global batches is a function of the seed and the data only: the same for
any number of processes and any number of grain workers, and the slices the processes load
concatenate to the batch one process would load. Batches may straddle epoch boundaries.
An iterator's state is the next position, so resuming is exact (and stays exact if the
number of processes changes).

Evaluation reads positions 0 .. N_eval - 1 in order, padded with masked copies up to a whole
number of global evaluation batches, sliced over processes the same way: one pass.

grain runs the pipeline: ``MapDataset.range`` over batch starts, ``.map`` of a picklable batch
builder (gather records, augment each, stack, normalise), ``.to_iter_dataset``, and
``.mp_prefetch`` worker processes when ``worker_count > 0``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import augment, host_resize
from .config import DataConfig
from .sources import ArraySource, Source

if TYPE_CHECKING:
    from .device_augment import AugmentSpec

__all__ = ["DataConfig", "Datasets", "EvalLoader", "TrainIterator", "TrainLoader"]

SOURCES = ("digits", "tfds", "folder", "synthetic")
AUGMENT_ON = ("device", "host")

# Purpose tags in the seed sequences, so that the permutation of epoch e and the augmentation
# of position e never share a random stream.
_PERM_TAG = 0
_AUG_TAG = 1
# The train stream is "infinite": this many global batches past the starting position.
_STREAM_BATCHES = 1 << 40


# ----------------------------------------------------------------------------- configuration


def _jitter(value: object) -> tuple[float, float, float]:
    """data.color_jitter as (brightness, contrast, saturation); one number stands for all three."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value, value)
    if not (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf")
            for v in value
        )
    ):
        raise ValueError(
            "data.color_jitter must be (brightness, contrast, saturation), three finite numbers "
            f">= 0 (or one number for all three); got {value!r}"
        )
    brightness, contrast, saturation = (float(v) for v in value)
    return brightness, contrast, saturation


def _int(cfg: DataConfig, key: str, minimum: int) -> int:
    value = getattr(cfg, key)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"data.{key} must be an int >= {minimum}; got {value!r}")
    return int(value)


def _positive_int(value, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def _local_batch(global_batch: int, process_count: int, name: str) -> int:
    if global_batch % process_count:
        nearest = max(1, global_batch // process_count) * process_count
        raise ValueError(
            f"{name} ({global_batch}) must be divisible by the number of processes "
            f"({process_count}); e.g. {name}={nearest}"
        )
    return global_batch // process_count


def _convert_stats(values: Sequence[float], to: int, *, is_std: bool) -> tuple[float, ...]:
    """A source's per-channel mean/std carried through a 1 <-> 3 channel conversion.

    Grey -> RGB repeats the value. RGB -> grey: the mean of the luma is exactly the luma of
    the means; for the std the same weighted sum is used, which is exact for perfectly
    correlated channels and an upper bound otherwise (natural images are close to the former).
    """
    values = tuple(float(v) for v in values)
    if len(values) == to:
        return values
    if len(values) == 1 and to == 3:
        return values * 3
    if len(values) == 3 and to == 1:
        return (float(np.dot(augment.LUMA_WEIGHTS, values)),)
    kind = "std" if is_std else "mean"
    raise ValueError(f"cannot convert a {len(values)}-channel {kind} to {to} channels")


# ----------------------------------------------------------------------------- transforms


def _need_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """The generator of a random training transform; `_Transform.random` says when one is built."""
    if rng is None:
        raise TypeError("rng must be a numpy.random.Generator for a random transform; got None")
    return rng


class _Transform:
    """Per-example train/eval transforms and the batched float conversion (picklable).

    With ``device=True`` the training transform only brings every image to one common size
    (`common_size`) and batches stay uint8: the random transforms and the normalisation run
    on the accelerator (`jaxcnn.data.device_augment`), inside the compiled train step.
    """

    def __init__(
        self, cfg: DataConfig, source_channels: int, channels: int, mean, std, device=False
    ):
        self.device = bool(device)
        self.size = cfg.image_size
        self.eval_resize = cfg.eval_resize
        self.padding = cfg.random_crop_padding
        self.rotation = float(cfg.random_rotation)
        self.scale = float(cfg.random_scale)
        self.rrc = bool(cfg.random_resized_crop)
        self.flip = bool(cfg.hflip)
        self.pca = float(cfg.pca_lighting)
        self.jitter = _jitter(cfg.color_jitter)
        self.source_channels = source_channels
        self.channels = channels
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        # Whether training may draw random numbers (a crop from a resize_shorter result is
        # random unless the image is square); if not, no generator is built per example.
        self.random = self.rrc or self.flip or self.pca > 0 or self.padding > 0
        self.random = self.random or any(self.jitter)
        self.random = self.random or self.rotation > 0 or self.scale > 0
        self.random = (self.random or self.eval_resize > 0) and not self.device
        # With device=True: whether the common size is a centre crop of a shorter-side resize
        # (else a plain resize), and the backend that resamples to it (`host_resize`), chosen
        # here so that worker processes use the same one.
        self.common_crop = bool(self.eval_resize or self.rrc)
        backend = cfg.host_resize
        self.host_resize = host_resize.choose_backend(backend) if self.device else None

    @property
    def common_size(self) -> int:
        """The side of the square uint8 images the host hands the device (``device=True``):
        eval_resize when set (the device crops image_size from it), else image_size."""
        return self.eval_resize or self.size

    def common(self, img: np.ndarray) -> np.ndarray:
        """Host half of the training transform when augmenting on the device: resize (and
        centre-crop, when the shorter side is resized) to common_size x common_size. An
        image already that size is passed through untouched.

        uint8 images with 1 or 3 channels are resampled once, over the region the crop keeps
        (`host_resize.resize_to_common`: within 1 level of the reference transforms with the
        "pillow" backend); other images take the reference transforms of `augment`.
        """
        c = self.common_size
        if img.shape[:2] == (c, c):
            return img
        if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] in (1, 3):
            backend = self.host_resize or "pillow"
            return host_resize.resize_to_common(img, c, crop=self.common_crop, backend=backend)
        if self.common_crop:
            return augment.center_crop(augment.resize_shorter(img, c), c)
        return augment.resize(img, c)

    def train(self, img: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        if self.device:
            return self.common(img)
        s = self.size
        if self.rrc:
            img = augment.random_resized_crop(img, s, _need_rng(rng))
        else:
            if self.eval_resize:
                img = augment.resize_shorter(img, self.eval_resize)
            elif img.shape[:2] != (s, s):
                img = augment.resize(img, s)
            if self.rotation or self.scale:
                img = augment.random_rotate_scale(img, _need_rng(rng), self.rotation, self.scale)
            if self.padding or img.shape[:2] != (s, s):
                img = augment.random_crop(img, s, self.padding, _need_rng(rng))
        if self.flip:
            img = augment.hflip(img, _need_rng(rng))
        if any(self.jitter) or self.pca:
            img = augment.to_float(img)
        if any(self.jitter):
            img = augment.color_jitter(img, _need_rng(rng), *self.jitter)
        if self.pca:
            img = augment.pca_lighting(img, _need_rng(rng), self.pca)
        return img

    def eval(self, img: np.ndarray) -> np.ndarray:
        s = self.size
        if self.eval_resize:
            return augment.center_crop(augment.resize_shorter(img, self.eval_resize), s)
        if img.shape[:2] != (s, s):
            return augment.resize(img, s)
        return img

    def finish_train(self, images: list[np.ndarray], where: str) -> np.ndarray:
        """The training batch: `finish`, or with ``device=True`` the uint8 images stacked."""
        if not self.device:
            return self.finish(images, where)
        c = self.common_size
        expected = (c, c, self.source_channels)
        for img in images:
            if img.shape != expected or img.dtype != np.uint8:
                raise ValueError(
                    f"{where}: an example is {img.dtype} {img.shape} after the host transform; "
                    f"expected uint8 {expected} to augment on the device (use "
                    'data.augment_on="host" for sources of float images)'
                )
        return np.stack(images)

    def finish(self, images: list[np.ndarray], where: str) -> np.ndarray:
        """Stack (B, S, S, C_source) uint8 or [0, 1] floats -> normalised float32 (B, S, S, C)."""
        expected = (self.size, self.size, self.source_channels)
        for img in images:
            if img.shape != expected:
                raise ValueError(
                    f"{where}: an example has shape {img.shape} after its transforms; expected "
                    f"{expected} (does the source hold images of varying channel counts?)"
                )
        scale = 1.0 / self.std
        if images[0].dtype == np.uint8:
            scale = scale / 255.0  # fused with the uint8 -> [0, 1] conversion
        x = np.stack(images).astype(np.float32, copy=False)
        if self.channels != self.source_channels:
            if self.channels == 3:
                x = np.repeat(x, 3, axis=3)
            else:
                x = (x @ augment.LUMA_WEIGHTS.astype(np.float32))[..., None]
        x *= scale.astype(np.float32)
        x -= (self.mean / self.std).astype(np.float32)
        return x


class _TrainBatches:
    """Global batch start position -> this process's slice of the batch (picklable)."""

    def __init__(self, source: Source, transform: _Transform, *, seed, global_batch, batch, rank):
        self.source = source
        self.transform = transform
        self.seed = seed
        self.global_batch = global_batch
        self.batch = batch
        self.rank = rank
        self.num_examples = len(source)
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_perms"] = {}
        del state["_lock"]  # not picklable; worker processes make their own
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> np.ndarray:
        """perm_e: the order of the records in epoch ``epoch``, a function of (seed, epoch)."""
        with self._lock:
            perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, _PERM_TAG, epoch]).permutation(
                self.num_examples
            )
            with self._lock:
                # A batch touches at most a few consecutive epochs; keep the latest four.
                self._perms[epoch] = perm
                for old in sorted(self._perms)[:-4]:
                    del self._perms[old]
        return perm

    def positions(self, start: int) -> np.ndarray:
        """The global positions this process loads for the global batch starting at ``start``."""
        return start + self.rank * self.batch + np.arange(self.batch, dtype=np.int64)

    def records(self, positions: np.ndarray) -> np.ndarray:
        """Record index of each position: perm_e[q % N] with e = q // N."""
        epochs = positions // self.num_examples
        out = np.empty_like(positions)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self.permutation(int(e))[positions[sel] % self.num_examples]
        return out

    def __call__(self, start: int) -> dict[str, np.ndarray]:
        positions = self.positions(int(start))
        index = self.records(positions)
        t = self.transform
        src = self.source
        if t.device and isinstance(src, ArraySource):
            c = t.common_size
            if src.image_shape[:2] == (c, c):
                # Nothing to do per example: the batch is one gather from the arrays.
                return {"image": src.images[index], "label": src.labels[index].astype(np.int32)}
        images = []
        labels = np.empty(self.batch, np.int32)
        # A source that decodes straight to the common size (ImageFolder: large JPEG files
        # decoded at a reduced scale, no full-size copy) does the host transform itself.
        load_common = getattr(src, "load_common", None) if t.device else None
        for j in range(self.batch):
            if load_common is not None:
                record = load_common(
                    int(index[j]), t.common_size, crop=t.common_crop, backend=t.host_resize
                )
                images.append(record["image"])
            else:
                record = src[int(index[j])]
                q = int(positions[j])
                rng = np.random.default_rng([self.seed, _AUG_TAG, q]) if t.random else None
                images.append(t.train(record["image"], rng))
            labels[j] = record["label"]
        return {"image": t.finish_train(images, src.name), "label": labels}


class _EvalBatches:
    """Evaluation batch number -> this process's slice, with a mask for the padding."""

    def __init__(self, source: Source, transform: _Transform, *, global_batch, batch, rank):
        self.source = source
        self.transform = transform
        self.global_batch = global_batch
        self.batch = batch
        self.rank = rank
        self.num_examples = len(source)

    def __call__(self, b: int) -> dict[str, np.ndarray]:
        positions = (
            int(b) * self.global_batch
            + self.rank * self.batch
            + np.arange(self.batch, dtype=np.int64)
        )
        real = positions < self.num_examples
        index = positions % self.num_examples  # padding: masked copies of real records
        images = []
        labels = np.empty(self.batch, np.int32)
        for j in range(self.batch):
            record = self.source[int(index[j])]
            images.append(self.transform.eval(record["image"]))
            labels[j] = record["label"]
        return {
            "image": self.transform.finish(images, self.source.name),
            "label": labels,
            "mask": real.astype(np.float32),
        }


# ----------------------------------------------------------------------------- grain


def _grain_iterator(batches, starts, *, worker_count: int, prefetch: int):
    """Iterate ``batches(start) for start in starts`` (a grain MapDataset.range) through grain.

    Without workers, batches are built synchronously in the calling thread: building one is
    mostly Python-level work holding the GIL, and on the 2-core reference machine a grain
    reader thread lowered digits throughput from about 40k to 23-30k examples/s through GIL
    contention. With workers, each process builds every worker_count-th batch, keeping
    ``prefetch`` of them ready, and grain returns them in order. On Linux the workers die
    with the calling process, however it ends (`_die_with_parent`).
    """
    import grain

    ds = grain.MapDataset.range(*starts).map(batches)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if worker_count == 0:
        return iter(it_ds)
    from absl import flags

    # grain's worker start-up reads an absl flag, which raises unless flags were parsed;
    # outside an absl.app program (pytest, notebooks, plain scripts) they are not, so accept
    # the defaults, as absl.app would with no command-line flags.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    options = grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=max(1, prefetch)
    )
    init = functools.partial(_die_with_parent, os.getpid()) if _LINUX else None
    it_ds = it_ds.mp_prefetch(options, worker_init_fn=init)
    return _CopyOut(iter(it_ds))


_LINUX = sys.platform.startswith("linux")
# The signal the kernel sends a worker process when the thread that started it exits
# (prctl PR_SET_PDEATHSIG). Not SIGKILL itself: grain starts workers from its own threads,
# which end (on close, at the end of an evaluation pass) before the workers have shut down
# cleanly, so the handler first checks that the parent process is really gone.
_PARENT_DEATH_SIGNAL = "SIGUSR2"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int, worker_index: int, worker_count: int) -> None:
    """Make this grain worker process die with the process that started it (Linux only).

    grain calls it first thing in each worker. Without it a worker whose trainer was killed
    (SIGKILL, the out-of-memory killer) never learns of it: it waits on its full output queue
    for minutes, holding its memory. Best effort: where prctl is unavailable nothing changes.

    Args:
      parent_pid: the pid of the process that iterates the loader (and starts the workers).
      worker_index, worker_count: passed by grain; unused.
    """
    import ctypes
    import signal

    del worker_index, worker_count
    sig = getattr(signal, _PARENT_DEATH_SIGNAL)

    def on_parent_death(signum, frame):
        if os.getppid() != parent_pid:  # reparented: the whole parent process is gone
            os.kill(os.getpid(), signal.SIGKILL)

    signal.signal(sig, on_parent_death)
    signal.siginterrupt(sig, False)  # restart interrupted system calls, as if nothing came
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        arg = ctypes.c_ulong
        failed = libc.prctl(_PR_SET_PDEATHSIG, arg(sig), arg(0), arg(0), arg(0)) != 0
    except (OSError, AttributeError):
        failed = True
    if failed:
        signal.signal(sig, signal.SIG_DFL)
        return
    # The parent may have died before prctl took effect, and then no signal will come.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


class _CopyOut:
    """Batches from worker processes copied out of shared memory into ordinary arrays.

    grain hands over worker output as arrays backed by shared-memory blocks that are unlinked
    when the array is garbage collected; one kept alive until interpreter exit is reported as
    leaked. A copy per batch (a memcpy, small next to building the batch) makes batches plain
    numpy arrays with ordinary lifetimes.
    """

    def __init__(self, it):
        self._it = it

    def __iter__(self):
        return self

    def __next__(self):
        return {k: np.array(v, copy=True) for k, v in next(self._it).items()}

    def close(self):
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


_registered = False


def _register_with_grain() -> None:
    """Make TrainIterator a virtual grain.DatasetIterator (an ABC), once.

    grain's checkpoint handlers (``grain.checkpoint.CheckpointSave``/``CheckpointRestore`` for
    orbax) save ``get_state()`` as JSON for instances of DatasetIterator. Registering rather
    than subclassing keeps grain out of ``import jaxcnn.data``.
    """
    global _registered
    if not _registered:
        import grain

        grain.DatasetIterator.register(TrainIterator)
        _registered = True


class TrainLoader:
    """The infinite training stream of this process: iterate it for `TrainIterator`s.

    Attributes:
      global_batch_size: G, examples per step over all processes.
      batch_size: B = G / process_count, examples per batch of this process.
      num_examples: N, the size of the training set.
      steps_per_epoch: N // G, at least 1.
      seed: the seed the stream is a function of.
    """

    def __init__(self, batches: _TrainBatches, *, worker_count: int, prefetch: int):
        self._batches = batches
        self.global_batch_size = batches.global_batch
        self.batch_size = batches.batch
        self.num_examples = batches.num_examples
        self.seed = batches.seed
        self.worker_count = worker_count
        self.prefetch = prefetch
        self.steps_per_epoch = max(1, self.num_examples // self.global_batch_size)

    def __iter__(self) -> TrainIterator:
        """A fresh iterator from position 0."""
        return TrainIterator(self)

    def iterator(self, state: dict | None = None) -> TrainIterator:
        """A fresh iterator, resumed from ``state`` (from `TrainIterator.get_state`) if given."""
        it = TrainIterator(self)
        if state is not None:
            it.set_state(state)
        return it

    def batch_at(self, position: int) -> dict[str, np.ndarray]:
        """This process's slice of the global batch that starts at ``position``, built directly.

        Args:
          position: a global stream position (step * global_batch_size for step-aligned
            batches).

        Returns:
          {"image": float32 (B, S, S, C), "label": int32 (B,)}.
        """
        if not isinstance(position, (int, np.integer)) or position < 0:
            raise ValueError(f"position must be a non-negative int; got {position!r}")
        return self._batches(int(position))

    def _grain(self, position: int):
        g = self.global_batch_size
        starts = (position, position + g * _STREAM_BATCHES, g)
        return _grain_iterator(
            self._batches, starts, worker_count=self.worker_count, prefetch=self.prefetch
        )


class TrainIterator:
    """Batches of the training stream: ``{"image": float32 (B, S, S, C), "label": int32 (B,)}``.

    ``get_state()`` is ``{"position": next global position, "seed", "num_train"}`` (JSON);
    ``set_state`` on any iterator of a loader with the same seed and training set continues
    with bitwise-identical batches.
    """

    def __init__(self, loader: TrainLoader):
        _register_with_grain()
        self._loader = loader
        self._position = 0
        self._it = None
        self._closed = False

    def __iter__(self) -> TrainIterator:
        return self

    @property
    def position(self) -> int:
        """The global position the next batch starts at."""
        return self._position

    @property
    def step(self) -> int:
        """Batches consumed from position 0 (position // global_batch_size)."""
        return self._position // self._loader.global_batch_size

    def start_prefetch(self) -> None:
        """Start the worker processes (if any) now rather than at the first ``next``.

        grain's checkpoint handler calls this after restoring the state.
        """
        if self._it is None and not self._closed:
            self._it = self._loader._grain(self._position)

    def __next__(self) -> dict[str, np.ndarray]:
        if self._closed:
            raise ValueError("this TrainIterator is closed")
        self.start_prefetch()
        it = self._it
        assert it is not None  # start_prefetch opens one on an iterator that is not closed
        batch = next(it)
        self._position += self._loader.global_batch_size
        return batch

    def get_state(self) -> dict[str, int]:
        return {
            "position": int(self._position),
            "seed": int(self._loader.seed),
            "num_train": int(self._loader.num_examples),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, Mapping) or "position" not in state:
            raise ValueError(f"state must be a dict from TrainIterator.get_state(); got {state!r}")
        for key, mine in (("seed", self._loader.seed), ("num_train", self._loader.num_examples)):
            if key in state and int(state[key]) != mine:
                raise ValueError(
                    f"state was saved by a loader with {key}={state[key]}, but this loader has "
                    f"{key}={mine}: the stream would not continue where it stopped"
                )
        position = state["position"]
        if not isinstance(position, (int, np.integer)) or position < 0:
            raise ValueError(f"state['position'] must be a non-negative int; got {position!r}")
        self._drop()
        self._position = int(position)

    def _drop(self):
        it = getattr(self, "_it", None)  # __del__ may run on a half-built object
        if it is not None:
            self._it = None
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """Stop any prefetching threads and worker processes (idempotent)."""
        self._drop()
        self._closed = True

    def __del__(self):
        self._drop()


class EvalLoader:
    """One evaluation pass per iteration; ``len()`` is the number of batches.

    Batches are ``{"image": float32 (B, S, S, C), "label": int32 (B,), "mask": float32 (B,)}``,
    mask 1 for real examples and 0 for padding; over all processes and batches every example
    has mask 1 exactly once.
    """

    def __init__(self, batches: _EvalBatches, *, worker_count: int, prefetch: int):
        self._batches = batches
        self.global_batch_size = batches.global_batch
        self.batch_size = batches.batch
        self.num_examples = batches.num_examples
        self.worker_count = worker_count
        self.prefetch = prefetch
        self.num_batches = -(-self.num_examples // self.global_batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        return _grain_iterator(
            self._batches,
            (0, self.num_batches, 1),
            worker_count=self.worker_count,
            prefetch=self.prefetch,
        )

    def batch_at(self, index: int) -> dict[str, np.ndarray]:
        """Evaluation batch ``index`` (0 .. len - 1) of this process, built directly."""
        if not isinstance(index, (int, np.integer)) or not 0 <= index < self.num_batches:
            raise ValueError(f"index must be an int in [0, {self.num_batches}); got {index!r}")
        return self._batches(int(index))


# ----------------------------------------------------------------------------- datasets


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Datasets:
    """What `create_datasets` returns: the two loaders and what the model needs to know.

    Read-only; compared by identity.

    Attributes:
      train: `TrainLoader` (infinite, resumable).
      eval: `EvalLoader` (one padded, masked pass per iteration).
      num_classes: number of classes the labels range over.
      image_shape: (H, W, C) of the images the model sees.
      augment: with ``data.augment_on="device"`` (the default), the
        `device_augment.AugmentSpec` that turns a training batch's uint8 images,
        (B, common, common, C_source), into what the model sees: apply
        ``device_augment.augment_batch(images, key, augment)`` on the device, with a key
        derived from (seed, step). None with ``"host"``: training batches arrive augmented
        and normalised, as evaluation batches always do.
      num_train: training examples (after any skipped files).
      num_eval: evaluation examples.
      mean: per-channel mean used for normalisation, [0, 1] units.
      std: per-channel std used for normalisation.
      steps_per_epoch: num_train // global batch size, at least 1.
      train_source, eval_source: the `Source` objects.
      source_names: (train source name, eval source name).
      skipped: paths of undecodable files left out (train, then eval); empty unless
        ``skip_corrupt``.
      host_resize: with ``data.augment_on="device"``, the backend (and versions) that brings
        training images to the common size (`jaxcnn.data.host_resize`: "pillow ...", or
        "opencv ..." with ``data.host_resize="opencv"``, or "auto" and OpenCV installed);
        None with ``"host"``.
      description: one line describing all of the above.
      process_index, process_count: the slice of every global batch this process loads.
      batch_size: the global training batch size (over all processes).
      eval_batch_size: the global evaluation batch size (over all processes).
      seed: the seed the training order and augmentation are functions of.
    """

    train: TrainLoader
    eval: EvalLoader
    num_classes: int
    image_shape: tuple[int, int, int]
    augment: AugmentSpec | None
    num_train: int
    num_eval: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    steps_per_epoch: int
    train_source: Source
    eval_source: Source
    source_names: tuple[str, str]
    skipped: tuple[str, ...]
    host_resize: str | None
    description: str
    process_index: int
    process_count: int
    batch_size: int
    eval_batch_size: int
    seed: int

    def __repr__(self) -> str:
        return f"Datasets({self.description})"


def _build_sources(cfg: DataConfig, *, channels: int | None, pca: float):
    from . import sources

    kind = cfg.source
    if kind == "digits":
        return sources.digits(cfg.train_split), sources.digits(cfg.eval_split)
    if kind == "tfds":
        name = cfg.name
        if not isinstance(name, str) or not name:
            raise ValueError('data.name must be a TFDS data set name when data.source == "tfds"')
        kw = {"data_dir": cfg.data_dir}
        train = sources.tfds_source(name, cfg.train_split, **kw)
        return train, sources.tfds_source(name, cfg.eval_split, **kw)
    if kind == "folder":
        import os

        root = cfg.name
        if not isinstance(root, (str, os.PathLike)) or not os.fspath(root):
            raise ValueError('data.name must be the folder root when data.source == "folder"')
        # Decode straight to grey when grey is wanted, unless PCA lighting needs RGB first.
        mode = "L" if channels == 1 and not pca else "RGB"
        skip = bool(cfg.skip_corrupt)
        train = sources.ImageFolder(
            os.path.join(root, cfg.train_split), skip_corrupt=skip, mode=mode
        )
        evaluation = sources.ImageFolder(
            os.path.join(root, cfg.eval_split),
            skip_corrupt=skip,
            mode=mode,
            classes=train.classes,
        )
        return train, evaluation
    if kind == "synthetic":
        n = _int(cfg, "synthetic_examples", 1)
        c = channels or 3
        k = cfg.num_classes or 1000
        shape = (cfg.image_size, cfg.image_size, c)
        return sources.synthetic(n, shape, k, seed=0), sources.synthetic(n, shape, k, seed=1)
    raise ValueError(f"data.source must be one of {SOURCES}; got {kind!r}")


def create_datasets(
    data_cfg: DataConfig | Any,
    *,
    seed: int,
    batch_size: int,
    eval_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Datasets:
    """Build the training and evaluation loaders of one process from the `data` config section.

    Train transform: decode -> random_resized_crop, or [resize_shorter(eval_resize) | resize to
    image_size if sizes differ] + random rotation/scale (random_rotation, random_scale) +
    random_crop(image_size, random_crop_padding) -> hflip -> float [0, 1] -> color_jitter ->
    pca_lighting -> channel conversion -> normalise. Where it runs is ``data.augment_on``:
    "device" (the default) leaves the host only decoding and bringing images to one size
    (``Datasets.augment`` says what the device does with them); "host"
    does it all here, per example, in numpy. Eval transform (always on the host):
    resize_shorter(eval_resize) + center_crop(image_size), or a plain resize to image_size if
    eval_resize is 0 and sizes differ -> channel conversion -> normalise.

    Sources by ``data.source``: "digits" (splits "train"/"test"/"all"); "tfds" (``data.name``
    and ``data.data_dir``, splits as TFDS spells them); "folder" (``data.name`` is a root
    holding one class-per-subfolder tree per split, ``root/<train_split>`` and
    ``root/<eval_split>``, labelled by the training tree's classes); "synthetic"
    (``data.synthetic_examples`` random image_size images per split, the training split drawn
    from seed 0 and the evaluation split from seed 1, independently of ``seed``).

    Args:
      data_cfg: the `data` section of the training config: a `DataConfig` (every key, its
        default and meaning), or a ConfigDict or mapping of its keys (missing keys take their
        defaults).
      seed: non-negative int; the data order and augmentation are functions of it.
      batch_size: global training batch size G, divisible by process_count.
      eval_batch_size: global evaluation batch size, divisible by process_count.
      process_index: this process, default ``jax.process_index()``.
      process_count: number of processes, default ``jax.process_count()``.

    Returns:
      `Datasets`.
    """
    cfg = DataConfig.from_any(data_cfg)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    seed = int(seed)
    batch_size = _positive_int(batch_size, "batch_size")
    eval_batch_size = _positive_int(eval_batch_size, "eval_batch_size")
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    process_count = _positive_int(process_count, "process_count")
    if not isinstance(process_index, (int, np.integer)) or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index must be an int in [0, {process_count}); got {process_index!r}"
        )
    local = _local_batch(batch_size, process_count, "batch_size")
    eval_local = _local_batch(eval_batch_size, process_count, "eval_batch_size")

    # Static checks, before any data is touched.
    if cfg.source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}; got {cfg.source!r}")
    if cfg.augment_on not in AUGMENT_ON:
        raise ValueError(f"data.augment_on must be one of {AUGMENT_ON}; got {cfg.augment_on!r}")
    if cfg.host_resize not in ("auto", *host_resize.BACKENDS):
        raise ValueError(
            f"data.host_resize must be one of {('auto', *host_resize.BACKENDS)}; "
            f"got {cfg.host_resize!r}"
        )
    _jitter(cfg.color_jitter)
    size = _int(cfg, "image_size", 1)
    eval_resize = _int(cfg, "eval_resize", 0)
    padding = _int(cfg, "random_crop_padding", 0)
    _int(cfg, "num_classes", 0)
    worker_count = _int(cfg, "worker_count", 0)
    prefetch = _int(cfg, "prefetch", 0)
    channels = cfg.channels
    if channels not in (None, 1, 3):
        raise ValueError(f"data.channels must be None, 1 or 3; got {channels!r}")
    pca = cfg.pca_lighting
    if not isinstance(pca, (int, float)) or isinstance(pca, bool) or pca < 0:
        raise ValueError(f"data.pca_lighting must be a float >= 0; got {pca!r}")
    rotation, scale = cfg.random_rotation, cfg.random_scale
    if (
        not isinstance(rotation, (int, float))
        or isinstance(rotation, bool)
        or not (0 <= rotation <= 180)
    ):
        raise ValueError(f"data.random_rotation must be degrees in [0, 180]; got {rotation!r}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 <= scale < 1:
        raise ValueError(f"data.random_scale must be a float in [0, 1); got {scale!r}")
    if cfg.random_resized_crop and padding:
        raise ValueError(
            "data.random_resized_crop and data.random_crop_padding are alternatives; got both "
            f"(random_crop_padding={padding})"
        )
    if eval_resize and eval_resize < size:
        raise ValueError(
            f"data.eval_resize ({eval_resize}) must be >= data.image_size ({size}): the "
            f"{size}x{size} crops are taken from images whose shorter side is eval_resize "
            "(0 turns it off)"
        )

    train_src, eval_src = _build_sources(cfg, channels=channels, pca=float(pca))
    src_c = train_src.channels
    if eval_src.channels != src_c:
        raise ValueError(
            f"train and eval sources differ in channels: {train_src.name} has {src_c}, "
            f"{eval_src.name} has {eval_src.channels}"
        )
    out_c = channels or src_c
    if out_c != src_c and src_c not in (1, 3):
        raise ValueError(f"data.channels={channels} needs a 1- or 3-channel source; got {src_c}")
    if any(_jitter(cfg.color_jitter)) and src_c not in (1, 3):
        raise ValueError(
            f"data.color_jitter needs 1- or 3-channel images; {train_src.name} has {src_c}"
        )
    if pca and src_c != 3:
        raise ValueError(
            f"data.pca_lighting needs RGB images; {train_src.name} has {src_c} channel(s)"
        )
    num_classes = train_src.num_classes
    if cfg.num_classes:
        if cfg.num_classes < max(train_src.num_classes, eval_src.num_classes):
            raise ValueError(
                f"data.num_classes ({cfg.num_classes}) is smaller than the source's "
                f"{max(train_src.num_classes, eval_src.num_classes)} classes"
            )
        num_classes = int(cfg.num_classes)
    elif eval_src.num_classes > num_classes:
        num_classes = eval_src.num_classes
    if len(train_src) == 0 or len(eval_src) == 0:
        raise ValueError(
            f"empty split: {train_src.name} has {len(train_src)}, {eval_src.name} has "
            f"{len(eval_src)} examples"
        )

    mean = _convert_stats(train_src.mean, out_c, is_std=False)
    std = _convert_stats(train_src.std, out_c, is_std=True)
    if cfg.mean is not None:
        mean = _user_stats(cfg.mean, "mean", out_c)
    if cfg.std is not None:
        std = _user_stats(cfg.std, "std", out_c)
        if min(std) <= 0:
            raise ValueError(f"data.std must be positive; got {cfg.std!r}")

    device = cfg.augment_on == "device"
    transform = _Transform(cfg, src_c, out_c, mean, std, device=device)
    spec = None
    if device:
        from .device_augment import AugmentSpec

        spec = AugmentSpec.from_config(
            cfg,
            mean=mean,
            std=std,
            source_channels=src_c,
            channels=out_c,
            input_hw=(transform.common_size, transform.common_size),
        )
    train_batches = _TrainBatches(
        train_src, transform, seed=seed, global_batch=batch_size, batch=local, rank=process_index
    )
    eval_batches = _EvalBatches(
        eval_src, transform, global_batch=eval_batch_size, batch=eval_local, rank=process_index
    )
    train = TrainLoader(train_batches, worker_count=worker_count, prefetch=prefetch)
    evaluation = EvalLoader(eval_batches, worker_count=worker_count, prefetch=prefetch)
    skipped = tuple(train_src.skipped) + tuple(eval_src.skipped)
    description = (
        f"train {train_src.name} ({len(train_src)} examples), eval {eval_src.name} "
        f"({len(eval_src)} examples), {num_classes} classes, images {size}x{size}x{out_c}, "
        f"batch {batch_size} (eval {eval_batch_size}) over {process_count} process(es)"
    )
    if skipped:
        description += f", {len(skipped)} corrupt files skipped"
    resize = None
    if transform.host_resize is not None:  # chosen exactly when augmenting on the device
        resize = host_resize.describe(transform.host_resize)
        description += f", host resize {resize}"
        logging.getLogger(__name__).info("training images resized on the host by %s", resize)
    return Datasets(
        train=train,
        eval=evaluation,
        num_classes=num_classes,
        image_shape=(size, size, out_c),
        augment=spec,
        num_train=len(train_src),
        num_eval=len(eval_src),
        mean=mean,
        std=std,
        steps_per_epoch=train.steps_per_epoch,
        train_source=train_src,
        eval_source=eval_src,
        source_names=(train_src.name, eval_src.name),
        skipped=skipped,
        host_resize=resize,
        description=description,
        process_index=int(process_index),
        process_count=process_count,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
    )


def _user_stats(value, name: str, channels: int) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as e:
        raise ValueError(f"data.{name} must be a sequence of floats; got {value!r}") from e
    if len(vals) != channels:
        raise ValueError(f"data.{name} must have one value per channel ({channels}); got {value!r}")
    return vals
