"""Training-step throughput of jaxcnn's engine against PyTorch's same model, side by side.

    python benchmarks/train_throughput.py --model lenet5 --batch 128     # CPU, all three peers
    python benchmarks/train_throughput.py --model resnet50 --batch 16 --peers jaxcnn,torch_eager
    python benchmarks/train_throughput.py --model resnet50 --batch 256 --dtype bfloat16 \\
        --device gpu --json gpu.jsonl                     # one GPU row; gpu.sh runs them all
    python benchmarks/train_throughput.py --compare cpu.jsonl gpu.jsonl  # 2 machines, 1 model
    python benchmarks/train_throughput.py --loader                       # the input pipeline
    python benchmarks/train_throughput.py --quick                        # a smoke run

Peers, each in a subprocess of its own (this script re-invoked with ``--worker NAME``):

* ``jaxcnn``: the engine's real step, built by `jaxcnn.training.build_engine` as
  `train_and_evaluate` builds it, from a `TrainConfig` (``dtype=bfloat16`` for mixed
  precision, parameters staying float32; SGD, momentum 0.9, L2 weight decay 1e-4, constant
  learning rate 0.01; ``parallel`` the DataParallel mode) on one device. The batch is synthetic
  and already on the device.
* ``plain_flax`` (ResNet-50 only): the textbook linen ResNet-50 step of `_flax_peer`, built
  and timed as the jaxcnn worker is: the floor jaxcnn's own step must reach.
* ``torch_eager`` / ``torch_compile``: torchvision's model of the same name (for ``lenet5``,
  a PyTorch LeNet-5 identical to jaxcnn's), torch.optim.SGD with the same settings,
  cross-entropy; ``torch.compile(model)`` in its default mode for the latter. On a GPU:
  channels_last, and autocast to bfloat16 when ``--dtype bfloat16``.

JAX workers time their start apart (build, lowering, XLA compilation, first step, and the
time from the worker's start to the end of that step). Each worker takes ``--warmup`` steps
(compilation included), then times ``--repeats``
repetitions of ``--steps`` steps, waiting for the device at the end of each repetition
(`jax.block_until_ready` on the state / `torch.cuda.synchronize`). The parent prints one
JSON line per peer: images/s (median over repetitions, min/max and quartiles), the ratio
jaxcnn / peer (> 1: jaxcnn is faster) of the medians and of the best repetitions (on a shared
machine the least disturbed ones), peak memory (GPU: the framework's peak bytes in use;
CPU: the worker's peak RSS) and model FLOPs utilisation. Training FLOPs per image are taken as
3 x 2 x forward MACs from `jaxcnn.summary` (the usual convention that the backward pass costs
about twice the forward); MFU is reported only against a stated peak (``--peak-tflops``;
by default 790 TFLOP/s for bfloat16 on an H200, an 8192^3 bf16 matrix product measured on
one, and none otherwise).

Where the time goes: ``--breakdown`` also times each peer's forward pass and forward +
backward alone; ``--profile DIR`` traces jaxcnn's step with `jax.profiler` and lists its
costliest XLA ops (`_perf_common.profile_xla`).

On a shared machine, ``--rounds N`` runs the peers N times in alternating order and pools
the repetitions; each row then also lists its images/s per round and the jaxcnn / peer
ratio of each round (both measured minutes apart at most, under similar load).

This script imports only jaxcnn.models, jaxcnn.analysis and jaxcnn.training.{state, steps,
optim, parallel} (no grain, TFDS or ml_collections) except in ``--loader`` mode, so it runs on
machines that have JAX and torch but not the data stack.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _flax_peer, _torch_peers
from benchmarks import _perf_common as common

_WORKER_T0 = time.perf_counter()  # a worker's start: before any framework is imported

PEERS = ("jaxcnn", "plain_flax", *_torch_peers.TORCH_PEERS)
DTYPES = ("float32", "bfloat16")
DEVICES = ("cpu", "gpu")
# The H200's dense bfloat16 rate as measured on one (an 8192^3 bf16 matrix product through
# PyTorch, 2026-10-28; the datasheet promises more, about
# 989 TFLOP/s dense); used for MFU when no --peak-tflops is given.
H200_BF16_PEAK_TFLOPS = 790.0
H200_PEAK_SOURCE = "H200 bf16 dense, ~790 TFLOP/s as measured (8192^3 bf16 matmul)"
FLOPS_CONVENTION = "training FLOPs/image = 3 x 2 x forward MACs (jaxcnn.summary)"


# ------------------------------------------------------------------------ arithmetic
def train_flops_per_image(forward_macs: int) -> float:
    """Training FLOPs of one image: forward 2 x MACs, backward about twice the forward.

    Args:
      forward_macs: multiply-accumulates of one image's forward pass (`jaxcnn.summary`).
    """
    if forward_macs < 0:
        raise ValueError(f"forward_macs must be >= 0; got {forward_macs}")
    return 3.0 * 2.0 * float(forward_macs)


def mfu(images_per_s: float, flops_per_image: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak (None without a peak)."""
    if peak_tflops is None:
        return None
    if peak_tflops <= 0:
        raise ValueError(f"peak_tflops must be > 0; got {peak_tflops}")
    return images_per_s * flops_per_image / (peak_tflops * 1e12)


def default_peak(device: str, dtype: str, device_kind: str) -> tuple[float | None, str | None]:
    """(peak TFLOP/s, where it comes from) when the user gives none: H200 bf16 only."""
    if device == "gpu" and dtype == "bfloat16" and "H200" in device_kind.upper():
        return H200_BF16_PEAK_TFLOPS, H200_PEAK_SOURCE
    return None, None


def torch_twin(model: str) -> dict | None:
    """The torch model matching a jaxcnn model (see `_torch_peers`), or None if there is none."""
    from jaxcnn.models.registry import get_spec

    if model == "lenet5":
        return {"kind": "lenet5"}
    spec = get_spec(model)
    if spec.reference == "torchvision" and spec.reference_name:
        return {
            "kind": "torchvision",
            "name": spec.reference_name,
            "kwargs": dict(spec.reference_kwargs),
        }
    return None


# ---------------------------------------------------------------------- jaxcnn worker
def jaxcnn_train_worker(spec: dict) -> dict:
    """Time the engine's compiled training step on synthetic device data.

    Args:
      spec: {"model", "device", "dtype", "num_classes", "channels", "image_size", "batch",
        "steps", "warmup", "repeats", "parallel", "breakdown"}.

    Returns:
      {"peer": "jaxcnn", "times_s", "first_step_s" (compilation + one step), "final_loss",
      peak memory, versions; with `breakdown`, median seconds per call of the jitted forward
      pass (train mode, with loss) and of forward + backward (`jax.value_and_grad`)}.
    """
    import flax
    import jax
    import jaxlib
    import numpy as np
    import optax

    from jaxcnn.training import (
        InputSpec,
        OptimizerConfig,
        ScheduleConfig,
        TrainConfig,
        build_engine,
    )

    platform = "gpu" if spec["device"] == "gpu" else "cpu"
    device = jax.devices(platform)[0]
    s, c, b = spec["image_size"], spec["channels"], spec["batch"]
    total_steps = spec["warmup"] + spec["steps"] * spec["repeats"]
    # The engine's own config, with the settings every peer shares: torch.optim.SGD's, which
    # decays every parameter, at a constant learning rate.
    config = TrainConfig(
        model=spec["model"],
        dtype=spec["dtype"],
        parallel=spec["parallel"],
        batch_size=b,
        eval_batch_size=b,
        num_steps=max(total_steps, 1),
        aux_loss_weight=_torch_peers.AUX_LOSS_WEIGHT,
        optimizer=OptimizerConfig(
            learning_rate=_torch_peers.LEARNING_RATE,
            momentum=_torch_peers.MOMENTUM,
            nesterov=False,
            weight_decay=_torch_peers.WEIGHT_DECAY,
            decay_bn_and_bias=True,
            clip_grad_norm=0.0,
        ),
        schedule=ScheduleConfig(name="constant", warmup_epochs=0.0),
    )
    t_build = time.perf_counter()
    with jax.default_device(device):
        engine = build_engine(
            config,
            InputSpec(image_shape=(s, s, c), num_classes=spec["num_classes"]),
            devices=[device],
        )
        dp, st, p_train = engine.par, engine.state, engine.train_step
        rng = np.random.default_rng(0)
        batch = dp.put_batch(
            {
                "image": rng.standard_normal((b, s, s, c), dtype=np.float32),
                "label": rng.integers(0, spec["num_classes"], size=(b,), dtype=np.int32),
            }
        )
        jax.block_until_ready((st, batch))
        build_s = time.perf_counter() - t_build
        st, timing = time_jax_steps(p_train, st, batch, spec)
        metrics = timing.pop("metrics")
        final_loss = float(dp.fetch(metrics)["loss"])
        mem = _jax_peak_memory(device)
        result = {
            "peer": "jaxcnn",
            **timing,
            "build_s": build_s,
            "final_loss": final_loss,
            **mem,
            "device_kind": device.device_kind if platform == "gpu" else "cpu",
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "jax_backend": device.platform,
            "xla_flags": _env("XLA_FLAGS"),
            "compiler_options": dp.compiler_options,
        }
        if spec.get("breakdown"):
            result["breakdown_s"] = _jax_breakdown(jax, st, batch, spec)
        if spec.get("profile"):
            result["profile_top"] = profile_step(p_train, st, batch, spec["profile"], spec["steps"])
    return result


def _jax_peak_memory(device) -> dict:
    """Peak memory of a JAX worker: the GPU allocator's peak, else the process's peak RSS."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return {
            "peak_mem_bytes": int(stats["peak_bytes_in_use"]),
            "peak_mem_kind": "jax memory_stats()['peak_bytes_in_use']",
        }
    return {"peak_mem_bytes": common.peak_rss_bytes(), "peak_mem_kind": "peak RSS of the worker"}


def time_jax_steps(p_train, st, batch, spec: dict) -> tuple:
    """Compile and time a jitted ``(state, batch) -> (state, metrics)`` step.

    Lowering, XLA compilation and the first step are timed apart (what a user waits for
    before training starts), then ``warmup - 1`` untimed steps, then ``repeats`` timed
    repetitions of ``steps`` steps, each ending when the device is done.

    Returns:
      (final state, {"times_s", "lower_s", "compile_s", "step1_s" (the first step alone),
      "first_step_s" (lowering + compilation + the first step, as the torch peers' first
      step includes torch.compile's compilation), "start_to_first_step_s" (from the worker
      process's start: also Python and framework start-up, model and state build),
      "metrics" (the last step's, on the device)}).
    """
    import jax

    t0 = time.perf_counter()
    lowered = p_train.lower(st, batch)
    t1 = time.perf_counter()
    step = lowered.compile()
    t2 = time.perf_counter()
    st, metrics = step(st, batch)
    jax.block_until_ready((st, metrics))
    t3 = time.perf_counter()
    for _ in range(max(spec["warmup"] - 1, 0)):
        st, metrics = step(st, batch)
    jax.block_until_ready(st)
    times = []
    for _ in range(spec["repeats"]):
        t0r = time.perf_counter()
        for _ in range(spec["steps"]):
            st, metrics = step(st, batch)
        jax.block_until_ready(st)
        times.append(time.perf_counter() - t0r)
    return st, {
        "times_s": times,
        "lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "step1_s": t3 - t2,
        "first_step_s": t3 - t0,
        "start_to_first_step_s": t3 - _WORKER_T0,
        "metrics": metrics,
    }


def flax_train_worker(spec: dict) -> dict:
    """Time the textbook Flax ResNet-50 step (`_flax_peer`) as the jaxcnn worker times its own.

    Args:
      spec: as for `jaxcnn_train_worker`; the model must be one of `_flax_peer.MODELS`.
    """
    import flax
    import jax
    import jax.numpy as jnp
    import numpy as np

    if spec["model"] not in _flax_peer.MODELS:
        raise ValueError(
            f"the plain_flax peer has only {_flax_peer.MODELS}; got --model {spec['model']!r}"
        )
    platform = "gpu" if spec["device"] == "gpu" else "cpu"
    device = jax.devices(platform)[0]
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[spec["dtype"]]
    s, c, b = spec["image_size"], spec["channels"], spec["batch"]
    t_build = time.perf_counter()
    with jax.default_device(device):
        _, step_fn, make_state = _flax_peer.build(spec["num_classes"], dtype)
        tx = _flax_peer.sgd(
            _torch_peers.LEARNING_RATE, _torch_peers.MOMENTUM, _torch_peers.WEIGHT_DECAY
        )
        st = jax.jit(lambda k: make_state(k, (s, s, c), tx))(jax.random.PRNGKey(0))
        jax.block_until_ready(st)
        rng = np.random.default_rng(0)
        batch = jax.device_put(
            {
                "image": rng.standard_normal((b, s, s, c), dtype=np.float32),
                "label": rng.integers(0, spec["num_classes"], size=(b,), dtype=np.int32),
            },
            device,
        )
        p_train = jax.jit(functools.partial(step_fn, tx=tx), donate_argnums=(0,))
        build_s = time.perf_counter() - t_build
        st, timing = time_jax_steps(p_train, st, batch, spec)
        final_loss = float(timing.pop("metrics")["loss"])
        mem = _jax_peak_memory(device)
    return {
        "peer": "plain_flax",
        **timing,
        "build_s": build_s,
        "final_loss": final_loss,
        **mem,
        "device_kind": device.device_kind if platform == "gpu" else "cpu",
        "jax": jax.__version__,
        "flax": flax.__version__,
        "jax_backend": device.platform,
        "xla_flags": _env("XLA_FLAGS"),
    }


def profile_step(step_fn, st, batch, out_dir: str, steps: int, top: int = 15) -> list[dict]:
    """Where the compiled training step spends its time (see `_perf_common.profile_xla`).

    Args:
      step_fn: the compiled `(state, batch) -> (state, metrics)`.
      st, batch: its arguments (the state is donated; the final state is discarded).
      out_dir: folder for the trace and ``step_hlo.txt``.
      steps: steps traced.
      top: how many operations to return.
    """
    import jax

    hlo = step_fn.lower(st, batch).compile().as_text()
    jax.block_until_ready(st)
    holder = [st]

    def run():
        for _ in range(steps):
            holder[0], _ = step_fn(holder[0], batch)
        jax.block_until_ready(holder[0])

    return common.profile_xla(hlo, run, out_dir, calls=steps, top=top, name="step")


def _env(name: str) -> str:
    import os

    return os.environ.get(name, "")


def _jax_breakdown(jax, st, batch, spec: dict) -> dict:
    """Median seconds per call of the jitted forward (train mode + loss) and forward+backward.

    The model function is the state's own `apply_fn` with the engine's loss, so the two
    differ from the full step only by what the step adds: the optimizer update, metrics and
    the new state.
    """
    import jax.numpy as jnp

    from jaxcnn.training import steps

    def loss(params, batch_stats, batch):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        out, _ = st.apply_fn(
            variables,
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.PRNGKey(0)},
        )
        logits, _ = steps.split_outputs(out)
        return jnp.mean(steps.cross_entropy(logits, batch["label"]))

    from jaxcnn.xla import compiler_options

    options = compiler_options(jax.devices()[0].platform)  # as the engine compiles its step
    fwd = jax.jit(loss, compiler_options=options)
    fwd_bwd = jax.jit(jax.value_and_grad(loss), compiler_options=options)
    args = (st.params, st.batch_stats, batch)

    def timed(fn) -> float:
        for _ in range(2):
            jax.block_until_ready(fn(*args))
        ts = []
        for _ in range(max(spec["repeats"], 3)):
            t0 = time.perf_counter()
            for _ in range(spec["steps"]):
                out = fn(*args)
            jax.block_until_ready(out)
            ts.append((time.perf_counter() - t0) / spec["steps"])
        return common.summarize(ts)["median"]

    return {"forward": timed(fwd), "forward_backward": timed(fwd_bwd)}


# ----------------------------------------------------------------------------- parent
def _worker_spec(args, model_spec, peer: str) -> dict:
    return {
        "peer": peer,
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "num_classes": model_spec.num_classes,
        "channels": model_spec.input_size[2],
        "image_size": args.image_size,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "parallel": args.parallel,
        "breakdown": args.breakdown,
        "profile": args.profile,
        "twin": args.twin,
        "torch_threads": args.torch_threads,
    }


def _peer_row(args, result: dict, flops: float, machine: dict) -> dict:
    row = {
        "benchmark": "train_throughput",
        "model": args.model,
        "peer": result["peer"],
        "device": args.device,
        "dtype": args.dtype,
        "batch": args.batch,
        "image_size": args.image_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "rounds": args.rounds,
    }
    if result["peer"] == "jaxcnn":
        row["parallel"] = args.parallel
    if "error" in result:
        row.update(error=result["error"], images_per_s=None)
        return row
    rates = [args.steps * args.batch / t for t in result["times_s"]]
    st = common.summarize(rates)
    row.update(
        images_per_s=st["median"],
        images_per_s_min=st["min"],
        images_per_s_max=st["max"],
        images_per_s_q1=st["q1"],
        images_per_s_q3=st["q3"],
        step_ms=args.batch / st["median"] * 1e3,
        first_step_s=result["first_step_s"],
        final_loss=result["final_loss"],
        peak_mem_bytes=result["peak_mem_bytes"],
        peak_mem_kind=result["peak_mem_kind"],
        train_flops_per_image=flops,
        flops_convention=FLOPS_CONVENTION,
    )
    if "profile_top" in result:
        row["profile_top"] = result["profile_top"]
    if "breakdown_s" in result:
        row["breakdown_ms"] = {k: v * 1e3 for k, v in result["breakdown_s"].items()}
    skip = {
        "round_times_s",
        "peer",
        "times_s",
        "first_step_s",
        "final_loss",
        "peak_mem_bytes",
        "peak_mem_kind",
        "breakdown_s",
        "profile_top",
    }
    row.update({k: v for k, v in result.items() if k not in skip})
    row.update(machine)
    return row


def merge_rounds(results: list[dict]) -> dict:
    """One peer's results from several rounds as one: all repetitions pooled.

    Failed rounds are dropped (and counted in "failed_rounds"); if every round failed, the
    first error is the result. The first round gives the compile time and versions; peak
    memory is the largest; breakdown times are medians over rounds.
    """
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[0]
    merged = dict(ok[0])
    merged["times_s"] = [t for r in ok for t in r["times_s"]]
    merged["round_times_s"] = [r["times_s"] for r in ok]
    merged["final_loss"] = ok[-1]["final_loss"]
    merged["peak_mem_bytes"] = max(r["peak_mem_bytes"] for r in ok)
    if "breakdown_s" in merged:
        merged["breakdown_s"] = {
            k: common.summarize([r["breakdown_s"][k] for r in ok])["median"]
            for k in merged["breakdown_s"]
        }
    if len(ok) < len(results):
        merged["failed_rounds"] = [r["error"] for r in results if "error" in r]
    return merged


def _add_round_ratios(rows: list[dict], results: dict[str, list[dict]], args) -> None:
    """With several rounds: jaxcnn / peer per round (each ratio from one round's medians),
    a spread of the ratio that is immune to load that changes between rounds."""
    if args.rounds < 2 or "jaxcnn" not in results:
        return

    def rate(res):
        if "error" in res:
            return None
        return common.summarize([args.steps * args.batch / t for t in res["times_s"]])["median"]

    jax_rates = [rate(r) for r in results["jaxcnn"]]
    for row in rows:
        peer_rates = [rate(r) for r in results[row["peer"]]]
        row["round_images_per_s"] = peer_rates
        row["jaxcnn_vs_peer_rounds"] = [
            j / p if j and p else None for j, p in zip(jax_rates, peer_rates, strict=True)
        ]


def _add_ratios_and_mfu(rows: list[dict], args) -> None:
    by_peer = {r["peer"]: r for r in rows if r.get("images_per_s")}
    jax_row = by_peer.get("jaxcnn")
    kind = (
        jax_row["device_kind"]
        if jax_row
        else next((r.get("device_kind", "") for r in by_peer.values()), "")
    )
    if args.peak_tflops is not None:
        peak, source = args.peak_tflops, "--peak-tflops (given)"
    else:
        peak, source = default_peak(args.device, args.dtype, kind or "")
    for r in rows:
        r["peak_tflops"], r["peak_source"] = peak, source
        if r.get("images_per_s"):
            r["mfu"] = mfu(r["images_per_s"], r["train_flops_per_image"], peak)
            r["jaxcnn_vs_peer"] = (
                jax_row["images_per_s"] / r["images_per_s"] if jax_row is not None else None
            )
            # Best repetition against best repetition: other processes only ever slow a
            # repetition down, so on a shared machine the fastest is the least disturbed.
            r["jaxcnn_vs_peer_best"] = (
                jax_row["images_per_s_max"] / r["images_per_s_max"] if jax_row is not None else None
            )
    if jax_row is not None:
        jax_row["vs"] = {p: r["jaxcnn_vs_peer"] for p, r in by_peer.items() if p != "jaxcnn"}


def _rate(x: float) -> str:
    """Three significant figures at most, thousands separated: 6,864 / 24.7 / 1.45."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def format_table(rows: list[dict]) -> str:
    """A markdown table of throughput rows.

    "to first step" is what a user waits for: the JAX peers' time from the worker's start to
    the end of its first step, with the build (model, state), lowering, compilation and
    first-step parts of it (the rest is Python and framework start-up); the torch peers'
    first step (eager dispatch, or torch.compile's compilation and autotuning).
    """
    lines = [
        "| model | peer | device | dtype | batch | images/s (median) | min-max | step ms "
        "| jaxcnn / peer (median, best) | peak MiB | MFU | to first step s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['peer']} | {r['device']} | {r['dtype']} | {r['batch']} "
        if not r.get("images_per_s"):
            lines.append(head + f"| error: {r.get('error', '?')[:60]} | | | | | | |")
            continue
        m = f"{r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else "-"
        ratios = f"{_ratio(r.get('jaxcnn_vs_peer'))}, {_ratio(r.get('jaxcnn_vs_peer_best'))}"
        lines.append(
            head + f"| {_rate(r['images_per_s'])} | {_rate(r['images_per_s_min'])}-"
            f"{_rate(r['images_per_s_max'])} | {r['step_ms']:.2f} | {ratios} "
            f"| {r['peak_mem_bytes'] / 2**20:,.0f} | {m} | {_startup(r)} |"
        )
    return "\n".join(lines)


def _startup(r: dict) -> str:
    if r.get("start_to_first_step_s") is None:
        return f"{r['first_step_s']:.1f} (first step)"
    return (
        f"{r['start_to_first_step_s']:.1f} (build {r['build_s']:.1f}, lower {r['lower_s']:.1f}, "
        f"compile {r['compile_s']:.1f}, step {r['step1_s']:.1f})"
    )


def compare(path_a: str, path_b: str, model: str | None = None) -> list[dict]:
    """Ratios of training throughput between two results files (e.g. CPU vs GPU).

    For every (model, peer, XLA_FLAGS) in both files, the ratio images/s in `path_b` /
    images/s in `path_a`, with both machines and batch sizes named. ``--json`` appends, so
    a file may hold several measurements of one key: the last one (the newest) is used.

    Args:
      path_a, path_b: JSON-lines files written by ``--json``.
      model: only this model (default: all models in both files).
    """

    def index(path):
        out = {}
        for r in common.read_jsonl(path):
            if r.get("benchmark") == "train_throughput" and r.get("images_per_s"):
                out[(r["model"], r["peer"], r.get("xla_flags", ""))] = r
        return out

    a, b = index(path_a), index(path_b)
    rows = []
    for key in sorted(a.keys() & b.keys()):
        if model is not None and key[0] != model:
            continue
        ra, rb = a[key], b[key]
        rows.append(
            {
                "benchmark": "train_throughput_compare",
                "model": key[0],
                "peer": key[1],
                "xla_flags": key[2],
                "a_file": str(path_a),
                "b_file": str(path_b),
                "a_machine": _machine_name(ra),
                "b_machine": _machine_name(rb),
                "a_batch": ra["batch"],
                "b_batch": rb["batch"],
                "a_dtype": ra["dtype"],
                "b_dtype": rb["dtype"],
                "a_images_per_s": ra["images_per_s"],
                "b_images_per_s": rb["images_per_s"],
                "b_over_a": rb["images_per_s"] / ra["images_per_s"],
            }
        )
    if not rows:
        raise ValueError(
            f"--compare: no (model, peer) with a measured rate in both {path_a} and {path_b}"
            + (f" for model {model!r}" if model else "")
        )
    return rows


def _machine_name(r: dict) -> str:
    if r.get("device") == "gpu":
        return f"{r.get('device_kind', 'gpu')} (host CPU: {r.get('cpu_model', '?')})"
    return f"{r.get('cpus_usable', '?')}-core {r.get('cpu_model', 'CPU')}"


# ----------------------------------------------------------------------------- loader
LOADER_CLASSES = 10  # classes of the generated image folder (64 images each by default)


def default_loader_workers() -> list[int]:
    """0 (the loop's own process), 1, 2 and one worker per usable core: 0,1,2 on 2 cores."""
    return sorted({0, 1, 2, common.machine_info()["cpus_usable"] or 1})


def _parse_workers(text: str | None) -> list[int]:
    if text is None:
        return default_loader_workers()
    try:
        workers = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        workers = []
    if not workers or min(workers) < 0:
        raise ValueError(
            f"--loader-workers must be a comma-separated list of counts >= 0, e.g. 0,1,2; "
            f"got {text!r}"
        )
    return list(dict.fromkeys(workers))


def _cpu_seconds() -> float | None:
    """User + system CPU seconds of this process and its live child processes (the loader's
    workers) so far; None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:  # a child that ended meanwhile
            pass
    return total


def loader_augment_modes(text: str | None = None) -> list[str | None]:
    """Where the training transforms run: the ``data.augment_on`` values to measure (default
    "host"), or [None] for a loader without that key (which runs them on the host)."""
    from jaxcnn.data import loader

    known = list(getattr(loader, "AUGMENT_ON", ()))
    if not known:
        return [None]
    if text is None:
        return ["host"]
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in known for m in modes):
        raise ValueError(f"--loader-augment must be a comma list of {known}; got {text!r}")
    return modes


def loader_rows(args) -> list[dict]:
    """Images/s of `jaxcnn.data.create_datasets`' training loader alone (no model).

    Cases: "digits" (the default job's data section, train/configs/lenet_digits.py: 32x32
    grey, rotation/scale/shift augmentation); "imagenet_synthetic" (224x224 random uint8
    images generated per access, Inception-style random_resized_crop + hflip);
    "imagenet_jpeg" (the same transforms on photo-like JPEG files around 500x375, quality 90,
    ``--loader-jpegs`` of them in 10 classes, written by `benchmarks.decoders.write_jpegs` and
    decoded with Pillow from an image folder: what an ImageNet run pays, decode included).
    Each at every ``--loader-workers`` count (default: 0, 1, 2 and one per usable core), and
    for each ``data.augment_on`` of ``--loader-augment`` (default "host"): "host" runs every
    training transform here, per example; "device" leaves the host only decoding and bringing
    images to one size (`jaxcnn.data.host_resize`; the row's ``host_resize`` names the backend,
    which ``--loader-host-resize`` chooses), the transforms running later in the compiled step:
    those are timed separately, once per case, as ``jax.jit(device_augment.augment_batch)`` on
    a loader batch already on the default device (rows with ``"benchmark": "device_augment"``).

    Per row: ``--warmup`` batches first, untimed (worker start-up included; its time is
    ``warmup_s``), then ``--repeats`` timed runs of ``--steps`` batches; images/s is the
    median over the runs. ``images_per_s_per_core`` divides by the cores doing the work:
    the loop's own process with 0 workers, else the workers (at most one per usable core).
    ``images_per_cpu_s`` divides the timed images by the CPU seconds this process and its
    workers used meanwhile (with psutil): what each core-second buys, which other processes
    competing for the cores change less than they change images/s.
    """
    import datetime
    import tempfile

    from jaxcnn.data import create_datasets
    from train.configs.lenet_digits import get_config

    digits_cfg = get_config()
    imagenet = {
        "source": "synthetic",
        "image_size": 224,
        "random_resized_crop": True,
        "hflip": True,
        "synthetic_examples": 4096,
        "num_classes": 1000,
    }
    workers = _parse_workers(args.loader_workers)
    modes = loader_augment_modes(args.loader_augment)
    machine = common.machine_info()
    usable = machine["cpus_usable"] or 1
    date = datetime.date.today().isoformat()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jpeg_root = _write_jpeg_folder(Path(tmp), args.loader_jpegs) if args.loader_jpegs else None
        cases = [
            ("digits", digits_cfg.data.to_dict(), digits_cfg.batch_size),
            ("imagenet_synthetic", imagenet, args.loader_batch),
        ]
        if jpeg_root is not None:
            jpeg = {
                "source": "folder",
                "name": str(jpeg_root),
                "image_size": 224,
                "random_resized_crop": True,
                "hflip": True,
                "mean": (0.485, 0.456, 0.406),
                "std": (0.229, 0.224, 0.225),
            }
            cases.append(("imagenet_jpeg", jpeg, args.loader_batch))
        runs = [(case, mode, w) for case in cases for mode in modes for w in workers]
        for (name, data_cfg, batch), mode, w in runs:
            cfg = dict(data_cfg, worker_count=w)
            if mode is not None:
                cfg["augment_on"] = mode
            if mode == "device":
                cfg["host_resize"] = args.loader_host_resize
            ds = create_datasets(
                cfg,
                seed=0,
                batch_size=batch,
                eval_batch_size=batch,
                process_index=0,
                process_count=1,
            )
            it = iter(ds.train)
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                next(it)
            first = time.perf_counter() - t0
            times = []
            cpu0 = _cpu_seconds()
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    next(it)
                times.append(time.perf_counter() - t0)
            cpu1 = _cpu_seconds()
            if mode == "device" and not any(
                r["benchmark"] == "device_augment" and r["case"] == name for r in rows
            ):
                rows.append(_device_augment_row(name, ds, next(it), args))
                print(json.dumps(rows[-1]), flush=True)
            it.close()
            st = common.summarize([args.steps * batch / t for t in times])
            cores = max(1, min(w, usable))
            images = args.steps * args.repeats * batch
            cpu_s = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
            rows.append(
                {
                    "benchmark": "loader",
                    "case": name,
                    "augment_on": mode or "host",
                    "worker_count": w,
                    "batch": batch,
                    "image_shape": list(ds.image_shape),
                    "batches_per_repeat": args.steps,
                    "repeats": args.repeats,
                    "batches_measured": args.steps * args.repeats,
                    "warmup_batches": args.warmup,
                    "warmup_s": first,
                    "images_per_s": st["median"],
                    "images_per_s_min": st["min"],
                    "images_per_s_max": st["max"],
                    "cores_used": cores,
                    "images_per_s_per_core": st["median"] / cores,
                    "cpu_s": cpu_s,
                    # CPU times tick in 10 ms: a shorter window gives no usable figure
                    "images_per_cpu_s": images / cpu_s if cpu_s and cpu_s >= 0.1 else None,
                    # the same figures under their earlier names
                    "examples_per_s": st["median"],
                    "examples_per_s_min": st["min"],
                    "examples_per_s_max": st["max"],
                    **({"jpeg_files": args.loader_jpegs} if name == "imagenet_jpeg" else {}),
                    # what brings training images to one size with augment_on="device"
                    "host_resize": ds.host_resize,
                    "date": date,
                    **common.machine_info(),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _device_augment_row(case: str, ds, batch: dict, args) -> dict:
    """Images/s of the device half: `augment_batch` under jit on one loader batch (on the
    default device), ``--repeats`` runs of ``--steps`` calls after two untimed ones."""
    import jax

    from jaxcnn.data import device_augment

    spec = ds.augment
    run = jax.jit(lambda x, k: device_augment.augment_batch(x, k, spec))
    images = jax.device_put(batch["image"])
    key = jax.random.PRNGKey(0)
    for i in range(2):
        jax.block_until_ready(run(images, jax.random.fold_in(key, i)))
    times = []
    for r in range(args.repeats):
        keys = [jax.random.fold_in(key, 100 + r * args.steps + i) for i in range(args.steps)]
        t0 = time.perf_counter()
        for k in keys:
            out = run(images, k)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    n = images.shape[0]
    st = common.summarize([args.steps * n / t for t in times])
    return {
        "benchmark": "device_augment",
        "case": case,
        "backend": jax.default_backend(),
        "batch": n,
        "input_shape": list(images.shape[1:]),
        "output_shape": list(out.shape[1:]),
        "ms_per_batch": 1e3 * n / st["median"],
        "images_per_s": st["median"],
        "images_per_s_min": st["min"],
        "images_per_s_max": st["max"],
        **common.machine_info(),
    }


def format_loader_table(rows: list[dict]) -> str:
    """Images/s per case (rows) and worker count (columns): median (min-max); per core; per
    CPU-second of the loader's processes."""
    workers = sorted({r["worker_count"] for r in rows})
    by = {((r["case"], r.get("augment_on", "host")), r["worker_count"]): r for r in rows}
    cases = list(dict.fromkeys((r["case"], r.get("augment_on", "host")) for r in rows))
    head = " | ".join(f"{w} workers" for w in workers)
    lines = [
        f"| case | augment_on | batch | {head} | best vs 0 workers |",
        "|---|---|---:|" + "---:|" * len(workers) + "---:|",
    ]
    for case in cases:
        cells, base, best = [], None, 0.0
        for w in workers:
            r = by.get((case, w))
            if r is None:
                cells.append("")
                continue
            rate = r["images_per_s"]
            base = rate if w == 0 else base
            best = max(best, rate)
            per_cpu = r.get("images_per_cpu_s")
            cells.append(
                f"{rate:,.0f} ({r['images_per_s_min']:,.0f}-{r['images_per_s_max']:,.0f}); "
                f"{r['images_per_s_per_core']:,.0f}/core"
                + (f"; {per_cpu:,.0f}/CPU-s" if per_cpu else "")
            )
        batch = next(by[(case, w)]["batch"] for w in workers if (case, w) in by)
        gain = f"{best / base:.2f}x" if base else ""
        lines.append(f"| {case[0]} | {case[1]} | {batch} | " + " | ".join(cells) + f" | {gain} |")
    return "\n".join(lines)


def _write_jpeg_folder(root: Path, n: int) -> Path:
    """`n` photo-like JPEGs around 500x375 (quality 90) in root/train/<10 classes>/, and one
    per class in root/test/ (`benchmarks.decoders.write_jpegs`: crops of the sample photos
    that ship inside scikit-learn and Matplotlib, else synthetic photo-like images)."""
    from benchmarks.decoders import write_jpegs

    classes = max(1, min(LOADER_CLASSES, n))
    write_jpegs(root / "train", n, classes=classes, seed=0)
    write_jpegs(root / "test", classes, classes=classes, seed=1)
    return root


# ------------------------------------------------------------------------------- main
def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        default=None,
        help="a registered jaxcnn model with a torch twin (default lenet5; with --compare: "
        "only this model, default all)",
    )
    p.add_argument("--batch", type=int, default=None, help="global batch (default 128; quick 8)")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--steps", type=int, default=None, help="steps per repetition (default 20)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 5)")
    p.add_argument(
        "--peers",
        default=None,
        help=f"comma-separated subset of {PEERS} (default: all; plain_flax only for "
        f"{', '.join(_flax_peer.MODELS)})",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the peers this many times, alternating their order (busy machines)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side (default: the model's, 32 for lenet5, 224 for ImageNet)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for MFU (default: 790 for H200 bf16, else none)",
    )
    p.add_argument(
        "--parallel",
        default="jit",
        choices=("jit", "none"),
        help="jaxcnn DataParallel mode on one device (the engine's default: jit)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the forward pass and forward+backward alone, per peer",
    )
    common.add_run_options(
        p,
        profile_help="jaxcnn: also write a jax.profiler trace and the step's HLO to this "
        "folder, and list the costliest XLA ops in the row",
    )
    p.add_argument(
        "--compile-timeout",
        type=float,
        default=None,
        help="seconds for the torch_compile worker (default: --timeout); a worker past it is "
        "killed and its row records the timeout",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.jsonl", "B.jsonl"),
        help="print images/s ratios B / A of two results files and exit",
    )
    p.add_argument("--loader", action="store_true", help="time the input pipeline alone")
    p.add_argument(
        "--loader-workers",
        default=None,
        help="comma-separated grain worker counts for --loader (default: 0, 1, 2 and one per "
        "usable core)",
    )
    p.add_argument(
        "--loader-augment",
        default=None,
        help='comma-separated data.augment_on values for --loader ("host", "device"; default '
        "host: the training transforms on the host)",
    )
    p.add_argument(
        "--loader-host-resize",
        default="auto",
        choices=("auto", "pillow", "opencv"),
        help="data.host_resize for the device rows (default auto: OpenCV when installed)",
    )
    p.add_argument("--loader-batch", type=int, default=128, help="batch of the 224x224 cases")
    p.add_argument(
        "--loader-jpegs",
        type=int,
        default=640,
        help="JPEG files for the imagenet_jpeg case, in 10 classes (0: skip it)",
    )
    p.add_argument("--worker", default=None, choices=PEERS, help=argparse.SUPPRESS)
    p.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if not args.compare:
        args.model = args.model or "lenet5"
    quick = args.quick
    for name, full, small in (
        ("steps", 20, 2),
        ("warmup", 3, 2),
        ("repeats", 5, 1),
        ("batch", 128, 8),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    for name in ("batch", "steps", "repeats", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.warmup < 1:
        raise ValueError(f"--warmup must be >= 1 (the first step compiles); got {args.warmup}")
    return args


def main(argv=None) -> list[dict]:
    """Run the benchmark; returns the rows it printed (one per peer, loader case or pair)."""
    args = _parse(argv)
    if args.worker:
        spec = json.loads(args.spec)
        if args.worker == "jaxcnn":
            result = jaxcnn_train_worker(spec)
        elif args.worker == "plain_flax":
            result = flax_train_worker(spec)
        else:
            result = _torch_peers.train_worker(spec)
        common.emit_result(result)
        return [result]
    if args.compare:
        rows = compare(*args.compare, model=args.model)
        for r in rows:
            print(json.dumps(r))
            flags = f", XLA_FLAGS={r['xla_flags']}" if r["xla_flags"] else ""
            print(
                f"# {r['model']} ({r['peer']}{flags}): {_rate(r['b_images_per_s'])} images/s on "
                f"{r['b_machine']} (batch {r['b_batch']}, {r['b_dtype']}) vs "
                f"{_rate(r['a_images_per_s'])} on {r['a_machine']} (batch {r['a_batch']}, "
                f"{r['a_dtype']}): {r['b_over_a']:,.1f}x"
            )
        return rows
    if args.loader:
        rows = loader_rows(args)
        print(format_loader_table([r for r in rows if r["benchmark"] == "loader"]))
        for r in rows:
            if r["benchmark"] == "device_augment":
                print(
                    f"# device augmentation, {r['case']} ({r['backend']}): "
                    f"{r['ms_per_batch']:.2f} ms per batch of {r['batch']}, "
                    f"{r['images_per_s']:,.0f} images/s"
                )
        if args.json:
            common.write_jsonl(args.json, rows, append=True)
        return rows

    import jaxcnn
    from jaxcnn.models.registry import get_spec

    model_spec = get_spec(args.model)
    if args.image_size is None:
        args.image_size = model_spec.input_size[0]
        if args.quick and args.model != "lenet5":
            args.image_size = min(args.image_size, 64)
    if args.peers is None:
        args.peers = ",".join(
            p for p in PEERS if p != "plain_flax" or args.model in _flax_peer.MODELS
        )
    peers = common.parse_peers(args.peers, PEERS)
    if "plain_flax" in peers and args.model not in _flax_peer.MODELS:
        raise ValueError(
            f"the plain_flax peer is written for {', '.join(_flax_peer.MODELS)} only; got "
            f"--model {args.model!r} (leave it out of --peers)"
        )
    args.twin = torch_twin(args.model)
    if args.twin is None and any(p in _torch_peers.TORCH_PEERS for p in peers):
        raise ValueError(
            f"--model {args.model!r} has no torchvision twin; use --peers jaxcnn, or a model "
            "whose registry reference is torchvision (or lenet5)"
        )
    channels = model_spec.input_size[2]
    macs = jaxcnn.summary(args.model, input_shape=(1, args.image_size, args.image_size, channels))
    flops = train_flops_per_image(macs.total_macs)
    machine = common.machine_info()
    date = datetime.date.today().isoformat()
    print(
        f"# {args.model} batch {args.batch} {args.dtype} on {args.device}, "
        f"{args.image_size}x{args.image_size}x{channels}, {args.repeats} x {args.steps} steps "
        f"after {args.warmup}; {machine['cpus_usable']}-core {machine['cpu_model']}, "
        f"load {machine['load_avg_1m']}",
        flush=True,
    )
    script = Path(__file__).resolve()
    results: dict[str, list[dict]] = {p: [] for p in peers}
    for r in range(args.rounds):
        # Alternate the order so that no peer always runs first (or last) on a busy machine.
        for peer in peers if r % 2 == 0 else peers[::-1]:
            spec = _worker_spec(args, model_spec, peer)
            timeout = args.timeout
            if peer == "torch_compile" and args.compile_timeout is not None:
                timeout = args.compile_timeout
            results[peer].append(
                common.run_worker(script, peer, spec, device=args.device, timeout=timeout)
            )
    rows = []
    for peer in peers:
        row = _peer_row(args, merge_rounds(results[peer]), flops, machine)
        row["date"] = date
        row["load_avg_1m_after"] = common.machine_info()["load_avg_1m"]
        rows.append(row)
    _add_ratios_and_mfu(rows, args)
    _add_round_ratios(rows, results, args)
    for r in rows:
        print(json.dumps(r), flush=True)
    print(format_table(rows))
    for r in rows:
        if r.get("profile_top"):
            print(f"\n# {r['peer']}: costliest XLA ops per step (trace and HLO in {args.profile})")
            for op in r["profile_top"]:
                print(f"{op['ms_per_call']:8.3f} ms  {op['op']:<28} {op['hlo'][:110]}")
    if args.json:
        common.write_jsonl(args.json, rows, append=True)
    return rows


if __name__ == "__main__":
    main()
