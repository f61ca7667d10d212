"""Time each conv2d algorithm against "xla" on the classic networks' layer shapes.

    python benchmarks/conv_algorithms.py                 # full table, current backend
    python benchmarks/conv_algorithms.py --quick         # small shapes, a smoke run
    python benchmarks/conv_algorithms.py --json out.jsonl

For every layer and algorithm it measures the median wall time of the jitted forward pass and
of the forward + backward pass (gradients with respect to input and kernel), after warm-up,
and prints each as a ratio to "xla" in the same run (> 1 means faster than "xla"). The error
column is max |y - y_ref| / max |y_ref| of the float32 output against a float64 reference
computed by "xla", so "xla"'s own float32 rounding is listed too. An algorithm that cannot
compute a layer (Winograd needs a 3x3 kernel, stride 1, dilation 1) is shown as "n/a".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jaxcnn import ops

ALGORITHMS = ("xla", "im2col", "winograd_f2", "winograd_f4", "fft")


@dataclasses.dataclass(frozen=True)
class Layer:
    name: str
    batch: int
    hw: int
    c_in: int
    c_out: int
    kernel: int
    stride: int = 1
    padding: int = 0


# The lecture's layers (input sizes as in the networks at 224x224, LeNet at 32x32).
LAYERS = (
    Layer("lenet C1 5x5", 64, 32, 1, 6, 5),
    Layer("lenet C3 5x5", 64, 14, 6, 16, 5),
    Layer("alexnet conv1 11x11/4", 8, 224, 3, 64, 11, 4, 2),
    Layer("alexnet conv2 5x5", 8, 27, 64, 192, 5, 1, 2),
    Layer("vgg conv1 3x3 64", 2, 224, 64, 64, 3, 1, 1),
    Layer("vgg conv2 3x3 128", 2, 112, 128, 128, 3, 1, 1),
    Layer("vgg conv3 3x3 256", 2, 56, 256, 256, 3, 1, 1),
    Layer("vgg conv4 3x3 512", 2, 28, 512, 512, 3, 1, 1),
    Layer("vgg conv5 3x3 512", 2, 14, 512, 512, 3, 1, 1),
    Layer("resnet 3x3 64", 8, 56, 64, 64, 3, 1, 1),
    Layer("resnet 3x3 256", 8, 14, 256, 256, 3, 1, 1),
    Layer("resnet 1x1 256->64", 8, 56, 256, 64, 1),
    Layer("resnet 1x1 1024->256", 8, 14, 1024, 256, 1),
)

QUICK_LAYERS = (
    Layer("lenet C1 5x5", 4, 32, 1, 6, 5),
    Layer("small 3x3", 2, 12, 8, 8, 3, 1, 1),
    Layer("small 7x7/2", 2, 20, 3, 4, 7, 2, 3),
    Layer("small 1x1", 2, 8, 16, 8, 1),
)


def _median_time(fn, args, repeats: int, min_time: float) -> tuple[float, float]:
    """Median and spread (max - min) of per-call seconds, after one compile+warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    deadline = time.perf_counter() + min_time
    while len(times) < repeats or (time.perf_counter() < deadline and len(times) < 10 * repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times) - min(times)


def bench_layer(layer: Layer, repeats: int, min_time: float) -> list[dict]:
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((layer.batch, layer.hw, layer.hw, layer.c_in))
    w64 = rng.standard_normal((layer.kernel, layer.kernel, layer.c_in, layer.c_out))
    w64 /= np.sqrt(layer.kernel * layer.kernel * layer.c_in)  # keep outputs O(1)
    x, w = jnp.asarray(x64, jnp.float32), jnp.asarray(w64, jnp.float32)
    kw = dict(stride=layer.stride, padding=layer.padding)
    with jax.enable_x64(True):  # the float64 reference only; everything timed is float32
        ref = np.asarray(ops.conv2d(jnp.asarray(x64), jnp.asarray(w64), **kw))
    assert ref.dtype == np.float64
    scale = float(np.max(np.abs(ref)))
    ct = jnp.asarray(rng.standard_normal(ref.shape), jnp.float32)

    rows = []
    for algo in ALGORITHMS:
        row = dict(layer=layer.name, algorithm=algo, shape=dataclasses.asdict(layer))
        try:  # tracing validates the arguments without computing anything
            out = jax.eval_shape(
                lambda x, w, algo=algo: ops.conv2d(x, w, algorithm=algo, **kw), x, w
            )
        except ValueError as e:
            row.update(supported=False, reason=str(e).split(";")[0])
            rows.append(row)
            continue

        def fwd(x, w, algo=algo):
            return ops.conv2d(x, w, algorithm=algo, **kw)

        def fwd_bwd(x, w, algo=algo):
            return jax.grad(lambda x, w: jnp.sum(fwd(x, w) * ct), argnums=(0, 1))(x, w)

        assert out.dtype == jnp.float32, f"{algo} returned {out.dtype} for float32 inputs"
        f, fb = jax.jit(fwd), jax.jit(fwd_bwd)
        err = float(np.max(np.abs(np.asarray(f(x, w), np.float64) - ref))) / scale
        t_f, s_f = _median_time(f, (x, w), repeats, min_time)
        t_fb, s_fb = _median_time(fb, (x, w), repeats, min_time)
        row.update(
            supported=True,
            fwd_s=t_f,
            fwd_spread_s=s_f,
            fwd_bwd_s=t_fb,
            fwd_bwd_spread_s=s_fb,
            rel_error=err,
        )
        rows.append(row)
    base = next(r for r in rows if r["algorithm"] == "xla")
    for r in rows:
        if r["supported"]:
            r["fwd_speedup_vs_xla"] = base["fwd_s"] / r["fwd_s"]
            r["fwd_bwd_speedup_vs_xla"] = base["fwd_bwd_s"] / r["fwd_bwd_s"]
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| layer (N, HxW, C_in->C_out, k/s) | algorithm | fwd ms | fwd vs xla | fwd+bwd ms "
        "| fwd+bwd vs xla | rel. error |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["shape"]
        desc = (
            f"{r['layer']} ({s['batch']}, {s['hw']}x{s['hw']}, {s['c_in']}->{s['c_out']}, "
            f"{s['kernel']}/{s['stride']})"
        )
        if not r["supported"]:
            lines.append(f"| {desc} | {r['algorithm']} | n/a | | | | |")
            continue
        lines.append(
            f"| {desc} | {r['algorithm']} | {r['fwd_s'] * 1e3:.2f} | "
            f"{r['fwd_speedup_vs_xla']:.2f}x | {r['fwd_bwd_s'] * 1e3:.2f} | "
            f"{r['fwd_bwd_speedup_vs_xla']:.2f}x | {r['rel_error']:.1e} |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (min)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds to keep timing for")
    p.add_argument("--only", default="", help="run only layers whose name contains this")
    p.add_argument("--json", default="", help="also write one JSON object per row here")
    args = p.parse_args(argv)

    layers = [lay for lay in (QUICK_LAYERS if args.quick else LAYERS) if args.only in lay.name]
    dev = jax.devices()[0]
    print(
        f"# jax {jax.__version__} on {dev.platform} ({dev.device_kind}); "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    rows = []
    for layer in layers:
        layer_rows = bench_layer(layer, args.repeats, args.min_time)
        rows.extend(layer_rows)
        print(format_table(layer_rows).split("\n", 2)[2], flush=True)
    print()
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(dict(r, backend=dev.platform, device=dev.device_kind)) + "\n")
    return rows


if __name__ == "__main__":
    main()
