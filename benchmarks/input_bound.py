"""Is training input-bound? The engine's step rate from JPEG files against synthetic data.

    python benchmarks/input_bound.py --device gpu                       # ResNet-50, bf16, 256
    python benchmarks/input_bound.py --small                            # the CPU form (CI)

Two measurements, each in its own process, with the same model, batch, dtype and
augmentation (ImageNet's: random-resized crop to 224 and flip, on the device):

* ``jpeg``: the training engine (`python -m train`) on photo-like JPEG files around 500x375
  on disk (`benchmarks.decoders.write_jpegs`), read, decoded and resized by the host pipeline
  with ``--workers`` grain processes (default: one per core). Its images/s is the median of
  the engine's own ``images_per_s`` rows in ``metrics.jsonl`` (the first interval, which
  includes compilation, is left out);
* ``device``: the same compiled train step (augmentation included) run back to back on one
  batch already on the device: the rate the device sustains when the input costs nothing.

The ratio jpeg / device is the figure: 1.0 means the input pipeline keeps up with the device.
Rows: one per measurement, the ratio on the jpeg row; machine, date and commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._perf_common import git_commit, machine_info, write_jsonl  # noqa: E402

CLASSES = 10


def _config_flags(args, data: list[str], workdir: str) -> list[str]:
    steps = args.log_every * (args.intervals + 1)
    return [
        f"--workdir={workdir}",
        f"--config.model={args.model}",
        f"--config.batch_size={args.batch}",
        f"--config.eval_batch_size={args.batch}",
        f"--config.dtype={args.dtype}",
        f"--config.num_steps={steps}",
        f"--config.log_every_steps={args.log_every}",
        "--config.eval_every_epochs=1000000.0",  # one evaluation, at the end
        "--config.checkpoint_every_epochs=1000000.0",  # one checkpoint, at the end
        "--config.progress=False",
        "--config.plot=False",
        "--config.tensorboard=False",
        "--config.data.augment_on=device",
        f"--config.data.image_size={args.image_size}",
        f"--config.data.eval_resize={args.eval_resize}",
        "--config.data.random_resized_crop=True",
        "--config.data.hflip=True",
        # The default job's digit distortions off: ImageNet's augmentation only.
        "--config.data.random_crop_padding=0",
        "--config.data.random_rotation=0.0",
        "--config.data.random_scale=0.0",
        f"--config.data.num_classes={CLASSES}",
        *data,
    ]


def run(args, name: str, data: list[str]) -> dict:
    """One engine run: the median of its images_per_s rows (first interval excluded)."""
    with tempfile.TemporaryDirectory(prefix=f"jaxcnn-input-bound-{name}-") as tmp:
        workdir = os.path.join(tmp, "run")
        cmd = [sys.executable, "-m", "train", *_config_flags(args, data, workdir)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, cwd=ROOT, env=_env(args), timeout=args.timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{name} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]
    if not rates:
        raise RuntimeError(f"{name}: no images_per_s rows after the first interval")
    return _summary(name, rates)


def _env(args) -> dict:
    env = dict(os.environ)
    if args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _summary(name: str, rates: list[float]) -> dict:
    return {
        "data": name,
        "images_per_s": statistics.median(rates),
        "images_per_s_min": min(rates),
        "images_per_s_max": max(rates),
        "intervals": len(rates),
    }


def device_rate(args) -> dict:
    """The engine's train step (device augmentation included) on one device-resident batch,
    in a subprocess of this script (``--device-worker``)."""
    flags = {
        "--device": args.device,
        "--model": args.model,
        "--batch": args.batch,
        "--dtype": args.dtype,
        "--image-size": args.image_size,
        "--eval-resize": args.eval_resize,
        "--log-every": args.log_every,
        "--intervals": args.intervals,
    }
    cmd = [sys.executable, __file__, "--device-worker"]
    cmd += [f"{k}={v}" for k, v in flags.items()]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env=_env(args), timeout=args.timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"device worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("{"))
    return json.loads(line)


def _device_worker(args) -> None:
    import jax
    import numpy as np

    from jaxcnn.data import DataConfig
    from jaxcnn.data.device_augment import AugmentSpec
    from jaxcnn.training import InputSpec, TrainConfig, build_engine

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    size, common = args.image_size, args.eval_resize
    data = DataConfig(image_size=size, eval_resize=common, random_resized_crop=True, hflip=True)
    spec = AugmentSpec.from_config(
        data, mean=mean, std=std, source_channels=3, channels=3, input_hw=(common, common)
    )
    config = TrainConfig(
        model=args.model,
        dtype=args.dtype,
        batch_size=args.batch,
        eval_batch_size=args.batch,
        num_steps=1000,
        data=data,
    )
    engine = build_engine(
        config,
        InputSpec(
            image_shape=(size, size, 3), num_classes=CLASSES, steps_per_epoch=100, augment=spec
        ),
    )
    par, state, step = engine.par, engine.state, engine.train_step
    rng = np.random.default_rng(0)
    batch = par.put_batch(
        {
            "image": rng.integers(0, 256, (args.batch, common, common, 3), dtype=np.uint8),
            "label": rng.integers(0, CLASSES, args.batch).astype(np.int32),
        }
    )
    for _ in range(2):  # compile, warm up
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    rates = []
    for _ in range(args.intervals):
        t = time.perf_counter()
        for _ in range(args.log_every):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        rates.append(args.log_every * args.batch / (time.perf_counter() - t))
    print(json.dumps(_summary("device", rates)), flush=True)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--small", action="store_true", help="tiny shapes on the CPU (CI form)")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--eval-resize", type=int, default=256)
    p.add_argument("--jpegs", type=int, default=2560, help="JPEG files written (10 classes)")
    p.add_argument("--workers", type=int, default=None, help="grain workers (default: cores)")
    p.add_argument("--log-every", type=int, default=10, help="steps per images/s interval")
    p.add_argument("--intervals", type=int, default=5, help="intervals measured per run")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--json", help="append the rows to this JSON-lines file")
    p.add_argument("--device-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.small:
        args.device, args.model, args.batch, args.dtype = "cpu", "resnet18", 4, "float32"
        args.image_size, args.eval_resize, args.jpegs = 32, 36, 40
        args.log_every, args.intervals = 2, 2
        args.workers = 1 if args.workers is None else args.workers
    if args.workers is None:
        args.workers = len(os.sched_getaffinity(0))
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    from benchmarks.decoders import write_jpegs

    if args.device_worker:
        _device_worker(args)
        return 0
    rows = [device_rate(args)]
    print(f"device: {rows[0]['images_per_s']:.1f} images/s (median)", flush=True)
    with tempfile.TemporaryDirectory(prefix="jaxcnn-input-bound-jpegs-") as tmp:
        write_jpegs(Path(tmp) / "train", args.jpegs, classes=CLASSES, seed=0)
        write_jpegs(Path(tmp) / "test", CLASSES, classes=CLASSES, seed=1)
        data = [
            "--config.data.source=folder",
            f"--config.data.name={tmp}",
            f"--config.data.worker_count={args.workers}",
        ]
        rows.append(run(args, "jpeg", data))
        print(f"jpeg: {rows[1]['images_per_s']:.1f} images/s (median)", flush=True)
    ratio = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    rows[1]["ratio_to_device"] = ratio
    info = {
        "benchmark": "input_bound",
        **{k: getattr(args, k) for k in ("device", "model", "batch", "dtype", "workers")},
        "image_size": args.image_size,
        "jpeg_files": args.jpegs,
        **machine_info(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
    }
    rows = [{**info, **r} for r in rows]
    print(f"jpeg / device: {ratio:.2f} ({args.model}, batch {args.batch}, {args.workers} workers)")
    if args.json:
        write_jsonl(args.json, rows, append=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
