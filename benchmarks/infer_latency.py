"""Inference latency of jaxcnn's models against PyTorch's, batch 1 and batch 32, on the CPU.

    python benchmarks/infer_latency.py                                   # resnet18/50, vgg16
    python benchmarks/infer_latency.py --models resnet50 --batches 1 --json out.jsonl
    python benchmarks/infer_latency.py --quick                           # a smoke run

Peers, each model in a subprocess of its own per peer (this script re-invoked with
``--worker NAME``):

* ``jaxcnn``: ``jax.jit(lambda v, x: model.apply(v, x, train=False),
  compiler_options=jaxcnn.compiler_options())`` with the variables as an argument (not baked
  into the program as constants), NHWC float32 input.
* ``torch_eager``: torchvision's model of the same name, ``model.eval()`` under
  ``torch.inference_mode()``, NCHW float32 input.
* ``torch_compile``: the same under ``torch.compile(model)`` (default mode, TorchInductor).

Each worker runs ``--warmup`` calls (compilation included), then times ``--repeats`` single
calls, waiting for the result of each (`jax.block_until_ready`). Latency is the median over
calls with the 10th and 90th percentiles as the spread; the ratio peer / jaxcnn is > 1 where
jaxcnn is faster. JSON lines per (model, batch, peer), then a markdown table.

Imports only jaxcnn.models (no grain, TFDS or ml_collections).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _perf_common as common
from benchmarks import _torch_peers

PEERS = ("jaxcnn", *_torch_peers.TORCH_PEERS)
DEFAULT_MODELS = ("resnet18", "resnet50", "vgg16")


def jaxcnn_infer_worker(spec: dict) -> dict:
    """Per-call latency of the jitted eval-mode forward pass, for each batch size.

    Args:
      spec: {"model", "device", "num_classes", "channels", "image_size", "batches", "warmup",
        "repeats"}.

    Returns:
      {"peer": "jaxcnn", "latency_s": {str(batch): [seconds per call]}, "first_call_s"
      (compilation + one call), peak memory, versions}.
    """
    import jax
    import jax.numpy as jnp
    import jaxlib
    import numpy as np

    from jaxcnn.models import create_model
    from jaxcnn.xla import compiler_options

    platform = "gpu" if spec["device"] == "gpu" else "cpu"
    device = jax.devices(platform)[0]
    s, c = spec["image_size"], spec["channels"]
    with jax.default_device(device):
        model = create_model(spec["model"], num_classes=spec["num_classes"])
        variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, s, s, c)), train=False))(
            jax.random.PRNGKey(0)
        )
        # jaxcnn's recommended XLA options for this platform, as a user is told to pass them.
        options = compiler_options(platform)
        forward = jax.jit(lambda v, x: model.apply(v, x, train=False), compiler_options=options)
        rng = np.random.default_rng(0)
        latency, first, profile = {}, {}, {}
        for batch in spec["batches"]:
            x = jax.device_put(rng.standard_normal((batch, s, s, c), dtype=np.float32), device)
            t0 = time.perf_counter()
            jax.block_until_ready(forward(variables, x))
            first[str(batch)] = time.perf_counter() - t0
            for _ in range(max(spec["warmup"] - 1, 0)):
                jax.block_until_ready(forward(variables, x))
            ts = []
            for _ in range(spec["repeats"]):
                t0 = time.perf_counter()
                jax.block_until_ready(forward(variables, x))
                ts.append(time.perf_counter() - t0)
            latency[str(batch)] = ts
            if spec.get("profile"):
                # The trace of `repeats` more calls, summed per XLA op (see profile_xla).
                def run(x=x):
                    for _ in range(spec["repeats"]):
                        jax.block_until_ready(forward(variables, x))

                hlo = forward.lower(variables, x).compile().as_text()
                profile[str(batch)] = common.profile_xla(
                    hlo,
                    run,
                    Path(spec["profile"]) / f"{spec['model']}_b{batch}",
                    calls=spec["repeats"],
                    name="forward",
                )
    stats = device.memory_stats() if platform == "gpu" else None
    if stats and "peak_bytes_in_use" in stats:
        mem = {
            "peak_mem_bytes": int(stats["peak_bytes_in_use"]),
            "peak_mem_kind": "jax memory_stats()['peak_bytes_in_use']",
        }
    else:
        mem = {"peak_mem_bytes": common.peak_rss_bytes(), "peak_mem_kind": "peak RSS of the worker"}
    return {
        "peer": "jaxcnn",
        "profile_top": profile,
        "latency_s": latency,
        "first_call_s": first,
        **mem,
        "device_kind": device.device_kind if platform == "gpu" else "cpu",
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compiler_options": options,
    }


def _rows_for(model: str, result: dict, args, machine: dict) -> list[dict]:
    """One row per batch size from a worker's result (or error rows)."""
    rows = []
    for batch in args.batches:
        row = {
            "benchmark": "infer_latency",
            "model": model,
            "peer": result["peer"],
            "device": args.device,
            "batch": batch,
            "image_size": args.image_size,
            "warmup": args.warmup,
            "repeats": args.repeats,
        }
        if "error" in result:
            row.update(error=result["error"], latency_ms=None)
            rows.append(row)
            continue
        st = common.summarize(result["latency_s"][str(batch)])
        row.update(
            latency_ms=st["median"] * 1e3,
            p10_ms=st["p10"] * 1e3,
            p90_ms=st["p90"] * 1e3,
            min_ms=st["min"] * 1e3,
            max_ms=st["max"] * 1e3,
            images_per_s=batch / st["median"],
            first_call_s=result["first_call_s"][str(batch)],
        )
        skip = {"peer", "latency_s", "first_call_s", "profile_top"}
        row.update({k: v for k, v in result.items() if k not in skip})
        if result.get("profile_top"):
            row["profile_top"] = result["profile_top"][str(batch)]
        row.update(machine)
        rows.append(row)
    return rows


def add_ratios(rows: list[dict]) -> None:
    """``peer_over_jaxcnn`` on every measured row: its latency / jaxcnn's (> 1: jaxcnn wins)."""
    base = {(r["model"], r["batch"]): r for r in rows if r["peer"] == "jaxcnn" and r["latency_ms"]}
    for r in rows:
        b = base.get((r["model"], r["batch"]))
        r["peer_over_jaxcnn"] = r["latency_ms"] / b["latency_ms"] if b and r["latency_ms"] else None


def format_table(rows: list[dict], peers: list[str]) -> str:
    """Markdown: one line per (model, batch), median [p10-p90] ms per peer, then ratios."""
    others = [p for p in peers if p != "jaxcnn"]
    head = "| model | batch | " + " | ".join(f"{p} ms [p10-p90]" for p in peers)
    if "jaxcnn" in peers:
        head += "".join(f" | {p} / jaxcnn" for p in others)
    lines = [head + " |", "|---|---:|" + "---:|" * (len(peers) + ("jaxcnn" in peers) * len(others))]
    keys = list(dict.fromkeys((r["model"], r["batch"]) for r in rows))
    by = {(r["model"], r["batch"], r["peer"]): r for r in rows}
    for model, batch in keys:
        cells = []
        for p in peers:
            r = by.get((model, batch, p))
            if r is None or r["latency_ms"] is None:
                cells.append("error")
            else:
                cells.append(f"{r['latency_ms']:.2f} [{r['p10_ms']:.2f}-{r['p90_ms']:.2f}]")
        if "jaxcnn" in peers:
            for p in others:
                r = by.get((model, batch, p))
                ratio = r and r.get("peer_over_jaxcnn")
                cells.append(f"{ratio:.2f}x" if ratio else "-")
        lines.append(f"| {model} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated registered models with a torchvision twin",
    )
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--image-size", type=int, default=None, help="input side (default 224)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {PEERS}")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls (default 20)")
    common.add_run_options(
        p,
        profile_help="jaxcnn: also write a jax.profiler trace and the HLO of each forward pass "
        "to this folder, and list the costliest XLA ops in the rows",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="resnet18 at 64x64, batch 1, 2 timed calls (a smoke run)",
    )
    p.add_argument("--worker", default=None, choices=PEERS, help=argparse.SUPPRESS)
    p.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    if quick and args.models == ",".join(DEFAULT_MODELS):
        args.models = "resnet18"
    if args.batches is None:
        args.batches = "1" if quick else "1,32"
    if args.image_size is None:
        args.image_size = 64 if quick else 224
    for name, full, small in (("warmup", 3, 2), ("repeats", 20, 2)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--batches must be comma-separated ints; got {args.batches!r}") from None
    if not args.batches or min(args.batches) < 1:
        raise ValueError(f"--batches must be positive ints; got {args.batches}")
    if args.repeats < 1 or args.warmup < 1:
        raise ValueError(f"--repeats and --warmup must be >= 1; got {args.repeats}, {args.warmup}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    return args


def main(argv=None) -> list[dict]:
    """Run the benchmark; returns one row per (model, batch, peer)."""
    args = _parse(argv)
    if args.worker:
        spec = json.loads(args.spec)
        if args.worker == "jaxcnn":
            result = jaxcnn_infer_worker(spec)
        else:
            result = _torch_peers.infer_worker(spec)
        common.emit_result(result)
        return [result]

    from benchmarks.train_throughput import torch_twin
    from jaxcnn.models.registry import get_spec

    peers = common.parse_peers(args.peers, PEERS)
    specs = {m: get_spec(m) for m in args.models}
    twins = {m: torch_twin(m) for m in args.models}
    missing = [m for m, t in twins.items() if t is None]
    if missing and any(p != "jaxcnn" for p in peers):
        raise ValueError(f"--models: {missing} have no torch twin; use --peers jaxcnn")
    machine = common.machine_info()
    date = datetime.date.today().isoformat()
    print(
        f"# {', '.join(args.models)} at {args.image_size}x{args.image_size}, batches "
        f"{args.batches}, {args.repeats} calls after {args.warmup}; {machine['cpus_usable']}-core "
        f"{machine['cpu_model']}, load {machine['load_avg_1m']}",
        flush=True,
    )
    rows = []
    script = Path(__file__).resolve()
    for model in args.models:
        for peer in peers:
            spec = {
                "peer": peer,
                "model": model,
                "device": args.device,
                "num_classes": specs[model].num_classes,
                "channels": specs[model].input_size[2],
                "image_size": args.image_size,
                "batches": args.batches,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "twin": twins[model],
                "torch_threads": args.torch_threads,
                "profile": args.profile,
            }
            result = common.run_worker(script, peer, spec, device=args.device, timeout=args.timeout)
            for row in _rows_for(model, result, args, machine):
                row["date"] = date
                row["load_avg_1m_after"] = common.machine_info()["load_avg_1m"]
                rows.append(row)
    add_ratios(rows)
    for r in rows:
        print(json.dumps(r), flush=True)
    print(format_table(rows, peers))
    for r in rows:
        if r.get("profile_top"):
            print(f"\n# {r['model']} batch {r['batch']}: costliest XLA ops per call")
            for op in r["profile_top"]:
                print(f"{op['ms_per_call']:8.3f} ms  {op['op']:<28} {op['hlo'][:110]}")
    if args.json:
        common.write_jsonl(args.json, rows, append=True)
    return rows


if __name__ == "__main__":
    main()
