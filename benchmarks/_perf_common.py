"""What the performance benchmarks share: statistics, machine description, worker processes.

`train_throughput.py` and `infer_latency.py` run every peer (jaxcnn, PyTorch eager, PyTorch
under torch.compile) in a fresh subprocess of their own script, so that one framework's
thread pools, allocator caches and compiled-code caches never slow down another's
measurement, and a crash in one peer leaves the others' rows intact. This module holds the
parent's side of that protocol (`run_worker`) and the small helpers both scripts use.

Nothing here imports JAX or torch at module level: the parent process stays framework-free.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# A worker's result line starts with this key, so that the parent can tell it apart from
# anything a framework prints to stdout (compiler logs, warnings).
RESULT_KEY = "worker_result"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Host facts that decide CPU figures: model, cores usable here, memory, load average.

    The load average is included because the reference machine is shared: a 1-minute load
    above the core count means some other process competed for the CPU during the run.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gib = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gib = None
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "mem_gib": mem_gib,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def add_run_options(parser, *, profile_help: str) -> None:
    """The options both benchmark CLIs share: torch threads, profiling, timeout, JSON output."""
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads (default 0: torch's own default, one per core)",
    )
    parser.add_argument("--profile", default="", help=profile_help)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker")
    parser.add_argument("--json", default="", help="append one JSON object per row to this file")


def git_commit() -> str | None:
    """The short hash of the checkout the benchmarks run from (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib) * (1 if sys.platform == "darwin" else 1024)


def summarize(values: Sequence[float]) -> dict:
    """Median, extremes, quartiles and 10th/90th percentiles of a list of measurements.

    Quartiles and percentiles use linear interpolation between order statistics (numpy's
    default); with a single value they all equal it.

    Args:
      values: one or more numbers (seconds per repetition, images/s, ...).

    Returns:
      {"median", "min", "max", "q1", "q3", "p10", "p90", "n"}.
    """
    if len(values) == 0:
        raise ValueError("summarize: `values` must hold at least one measurement; got none")
    xs = sorted(float(v) for v in values)

    def pct(p: float) -> float:
        pos = (len(xs) - 1) * p / 100.0
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return {
        "median": statistics.median(xs),
        "min": xs[0],
        "max": xs[-1],
        "q1": pct(25),
        "q3": pct(75),
        "p10": pct(10),
        "p90": pct(90),
        "n": len(xs),
    }


def emit_result(result: dict) -> None:
    """A worker's last act: its result as one JSON line on stdout."""
    print(json.dumps({RESULT_KEY: True, **result}), flush=True)


def worker_env(device: str) -> dict[str, str]:
    """The environment of a worker process for `device` ("cpu" or "gpu").

    For CPU runs JAX is pinned to its CPU backend (on a GPU machine it would otherwise pick
    the GPU and reserve most of its memory). CUDA is not hidden with CUDA_VISIBLE_DEVICES="":
    with it, torch 2.14's CPU training step of LeNet-5 took 500 ms instead of 2 ms here (it
    retries CUDA initialisation on every optimizer step, apparently); torch workers simply
    never touch CUDA on CPU runs.
    """
    env = dict(os.environ)
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    # The worker scripts put the repository root on sys.path themselves; keep any
    # user-given PYTHONPATH (the accelerator machine runs with PYTHONPATH=.).
    return env


def run_worker(script: str | Path, name: str, spec: dict, *, device: str, timeout: float) -> dict:
    """Run `python script --worker name --spec JSON` and return its result line.

    Args:
      script: the benchmark script (it re-invokes itself).
      name: the peer ("jaxcnn", "torch_eager", "torch_compile").
      spec: everything the worker needs, as JSON-serialisable data.
      device: "cpu" or "gpu" (sets up the environment, see `worker_env`).
      timeout: seconds before the worker is killed.

    Returns:
      The worker's result dict, or {"peer": name, "error": "..."} if it failed, timed out or
      printed no result (the error holds the tail of its stderr).
    """
    cmd = [sys.executable, str(script), "--worker", name, "--spec", json.dumps(spec)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=worker_env(device),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"peer": name, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{") and RESULT_KEY in line:
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            result.pop(RESULT_KEY, None)
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    return {"peer": name, "error": f"exit code {proc.returncode}: {tail}"}


def parse_peers(text: str, known: Sequence[str]) -> list[str]:
    """A comma-separated peer list, checked against `known`, order kept, duplicates dropped."""
    peers = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in peers if p not in known]
    if not peers or bad:
        raise ValueError(
            f"--peers must be a comma-separated subset of {', '.join(known)}; got {text!r}"
        )
    return list(dict.fromkeys(peers))


def write_jsonl(path: str | Path, rows: Sequence[dict], *, append: bool = False) -> None:
    """One JSON object per line."""
    with open(path, "a" if append else "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines file (blank lines skipped)."""
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not a JSON line ({e})") from None
    return rows


def profile_xla(
    hlo_text: str,
    run: Callable[[], None],
    out_dir: str | Path,
    *,
    calls: int,
    top: int = 15,
    name: str = "program",
) -> list[dict]:
    """Where a compiled JAX program spends its time: a `jax.profiler` trace, summed per XLA op.

    Writes `hlo_text` (the optimised HLO, ``jitted.lower(...).compile().as_text()``) to
    ``out_dir/<name>_hlo.txt``, traces `run` into ``out_dir/trace`` (TensorBoard / Perfetto
    format), and sums the durations of the trace's complete events by name. XLA:CPU records one
    event per executed HLO instruction (thunk), so the top entries are the program's most
    expensive operations; events that are not HLO instructions (the runtime's wrappers) are
    left out.

    Args:
      hlo_text: the compiled program's HLO text.
      run: executes the program `calls` times and waits for the result.
      out_dir: folder to write into (created).
      calls: how many executions `run` performs (times are reported per execution).
      top: how many operations to return.
      name: file name stem of the HLO dump.

    Returns:
      [{"op", "ms_per_call", "count_per_call", "hlo"}] for the `top` costliest ops, "hlo" the
      op's instruction (output shape, operands, the JAX op it came from), truncated.
    """
    import jax

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}_hlo.txt").write_text(hlo_text)
    instr = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)", line)
        if m:
            instr.setdefault(m.group(1), m.group(2))
    trace_dir = out / "trace"
    jax.profiler.start_trace(str(trace_dir), create_perfetto_trace=True)
    try:
        run()
    finally:
        jax.profiler.stop_trace()
    newest = max(trace_dir.glob("**/perfetto_trace.json.gz"), key=lambda f: f.stat().st_mtime)
    with gzip.open(newest) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in instr:
            total[e["name"]] += e.get("dur", 0.0)
            count[e["name"]] += 1
    return [
        {
            "op": op,
            "ms_per_call": us / calls / 1e3,
            "count_per_call": count[op] / calls,
            "hlo": instr[op][:300],
        }
        for op, us in total.most_common(top)
    ]
