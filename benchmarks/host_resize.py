"""The host half of device-side augmentation: JPEG file -> common-size uint8, per variant.

    python benchmarks/host_resize.py                      # 200 generated photos, the table
    python benchmarks/host_resize.py --out benchmarks/results/host_resize_cpu.jsonl
    python benchmarks/host_resize.py --sizes 1280x960,960x1280,1600x1200 --n 60  # large files

With ``data.augment_on="device"`` the loader's host work per training image is: read the file,
decode it, bring it to ``--size`` x ``--size`` (a centre crop of a shorter-side resize, as
``random_resized_crop`` or ``eval_resize`` configure it). Variants, on the same files:

* ``decode``: `jaxcnn.data.ImageFolder`'s decode alone (Pillow), the floor of the others;
* ``reference``: that decode, then ``augment.center_crop(augment.resize_shorter(img, size),
  size)`` (Pillow's antialiased bilinear over the whole image, then the crop);
* ``pillow_array``: that decode, then `jaxcnn.data.host_resize.resize_to_common` with Pillow
  (one resample of the region the crop keeps: the path of in-memory sources);
* ``pillow``: `host_resize.decode_to_common` with Pillow, what ImageFolder does (the same
  resample from Pillow's image, and files at least twice the size the crop needs decoded at
  1/2, 1/4 or 1/8 scale in the DCT domain);
* ``opencv_array``, ``opencv``: the same two with OpenCV, when installed (its resample of
  Pillow's full decode, and its own decode with DCT scaling).

Each variant's output is compared with the reference's on the same file (largest and mean
absolute difference in 0..255 levels, bit-identical images). Times are the median over
``--repeats`` passes over all files, the variants' passes interleaved, single-threaded, files
read from the page cache; ``cpu_ms_per_image`` is CPU time, which another process competing
for the cores inflates less than wall time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _perf_common as common
from benchmarks.decoders import DEFAULT_SIZES, image_set_description, write_jpegs


def variants(size: int) -> dict:
    """name -> (path -> uint8 (size, size, 3)), or name -> the reason it cannot run."""
    from jaxcnn.data import augment, host_resize
    from jaxcnn.data.sources import _decode

    out = {
        "decode": lambda p: _decode(p, "RGB"),
        "reference": lambda p: augment.center_crop(
            augment.resize_shorter(_decode(p, "RGB"), size), size
        ),
        "pillow_array": lambda p: host_resize.resize_to_common(
            _decode(p, "RGB"), size, crop=True, backend="pillow"
        ),
        "pillow": lambda p: host_resize.decode_to_common(
            p, "RGB", size, crop=True, backend="pillow"
        ),
    }
    try:
        import cv2  # noqa: F401
    except ImportError as e:
        out["opencv_array"] = out["opencv"] = f"not installed ({e})"
    else:
        out["opencv_array"] = lambda p: host_resize.resize_to_common(
            _decode(p, "RGB"), size, crop=True, backend="opencv"
        )
        out["opencv"] = lambda p: host_resize.decode_to_common(
            p, "RGB", size, crop=True, backend="opencv"
        )
    return out


def run(paths: list[str], size: int, repeats: int) -> list[dict]:
    from jaxcnn.data import host_resize

    funcs = variants(size)
    live = {k: f for k, f in funcs.items() if callable(f)}
    refs = [live["reference"](p) for p in paths]
    rows = []
    stats = {}
    for name, f in live.items():
        outs = [f(p) for p in paths]  # also the warm-up
        st = {}
        if name != "decode":
            d = [
                np.abs(o.astype(np.int16) - r.astype(np.int16))
                for o, r in zip(outs, refs, strict=True)
            ]
            st = {
                "max_abs_diff": int(max(x.max() for x in d)),
                "mean_abs_diff": float(np.mean([x.mean() for x in d])),
                "identical_to_reference": f"{sum(int(x.max() == 0) for x in d)}/{len(d)}",
            }
        stats[name] = (st, [], [])
    order = list(live)
    for r in range(repeats):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            f = live[name]
            t0, c0 = time.perf_counter(), time.process_time()
            for p in paths:
                f(p)
            stats[name][1].append(time.perf_counter() - t0)
            stats[name][2].append(time.process_time() - c0)
    n = len(paths)
    ref_cpu = np.median(stats["reference"][2])
    for name, f in funcs.items():
        if not callable(f):
            rows.append({"variant": name, "skipped": f})
            continue
        st, wall, cpu = stats[name]
        row = {
            "variant": name,
            "ms_per_image": 1e3 * float(np.median(wall)) / n,
            "cpu_ms_per_image": 1e3 * float(np.median(cpu)) / n,
            "vs_reference_cpu": float(ref_cpu / np.median(cpu)),
            **st,
        }
        if name in ("pillow", "pillow_array", "opencv", "opencv_array"):
            row["backend"] = host_resize.describe(name.split("_")[0])
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| variant | ms/image | CPU ms/image | vs reference (CPU) | max diff | mean diff "
        "| identical |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['variant']} | skipped: {r['skipped']} ||||||")
            continue
        diff = ["", "", ""]
        if "mean_abs_diff" in r:
            diff = [r["max_abs_diff"], f"{r['mean_abs_diff']:.3f}", r["identical_to_reference"]]
        lines.append(
            f"| {r['variant']} | {r['ms_per_image']:.2f} | {r['cpu_ms_per_image']:.2f} "
            f"| {r['vs_reference_cpu']:.2f}x | " + " | ".join(map(str, diff)) + " |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200, help="number of generated images")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="WIDTHxHEIGHT list of the images")
    p.add_argument("--size", type=int, default=224, help="the common size (224: image_size)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per variant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="append one JSON line per row here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(x) for x in write_jpegs(tmp, args.n, sizes=args.sizes, seed=args.seed)]
        machine = common.machine_info()
        rows = run(paths, args.size, args.repeats)
    setup = {
        "benchmark": "host_resize",
        "images": image_set_description() + " (5% grey, 10% progressive, 10% 4:4:4)",
        "sizes": args.sizes,
        "n_images": len(paths),
        "quality": 90,
        "size": args.size,
        "crop": "center_crop(resize_shorter)",
        "repeats": args.repeats,
        "single_threaded": True,
        "date": datetime.date.today().isoformat(),
        **machine,
    }
    rows = [{**setup, **r} for r in rows]
    for r in rows:
        print(json.dumps(r), flush=True)
    print(format_table(rows))
    if args.out:
        common.write_jsonl(args.out, rows, append=True)
    return rows


if __name__ == "__main__":
    main()
