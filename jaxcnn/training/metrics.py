"""Training metrics on disk and on screen: a JSON-lines log, TensorBoard, a plot, a progress bar.

A workdir's metrics live in three places, all written by `MetricWriter`:

* ``workdir/metrics.jsonl``: one JSON object per line, ``{"step": 1200, "epoch": 2.5,
  "train_loss": 0.31, ...}``, flushed and fsync'ed per row, so a crash loses nothing that
  was written. It is the source of truth; the other two are drawn from the same rows.
* ``workdir/tensorboard/``: TensorBoard event files, one scalar per key and row.
* ``workdir/curves.png``: loss, error and learning-rate curves, redrawn by `plot()`.

Rows the training engine writes: training rows ``step, epoch, train_loss, train_top1,
train_top5, learning_rate, images_per_s`` and evaluation rows ``step, epoch, eval_loss,
eval_top1, eval_top5`` (top-1/top-5 accuracies are fractions in [0, 1]).

Non-finite values: JSON has no NaN or infinity, and a diverged loss is exactly what the log
must record, so they are written as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (the spellings of JavaScript and of Python's `float()`); `read` turns them
back into floats. Every line stays valid JSON for any parser.

`Progress` is the tqdm bar on stderr. Both classes take ``enabled=False`` on the processes
that should stay quiet (every process but the first in multi-process training).

tqdm and matplotlib are imported inside the methods that use them, so importing this module
costs nothing; the event files are written by `jaxcnn.training.events` (standard library
only).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
PLOT_FILE = "curves.png"

# curves.png is PLOT_SIZE_INCHES * PLOT_DPI pixels: three panels side by side.
PLOT_SIZE_INCHES = (15.0, 4.0)
PLOT_DPI = 100

# Non-finite floats as JSON strings (see the module docstring), and back.
_NONFINITE_TO_JSON = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_JSON_TO_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _to_float(key: str, value: Any) -> float:
    """A Python float from a Python, NumPy or JAX scalar; raises for anything else."""
    if isinstance(value, int | float):  # Python's own (bool included); NumPy's go below
        return float(value)
    if isinstance(value, str | bytes) or not hasattr(value, "shape"):
        raise TypeError(
            f"metrics[{key!r}]: expected a real number (Python, NumPy or JAX scalar), "
            f"got {type(value).__name__} {value!r}"
        )
    arr = np.asarray(value)  # a JAX array is copied to the host here
    if arr.shape != ():
        raise ValueError(
            f"metrics[{key!r}]: expected a scalar (shape ()), got an array of shape {arr.shape}"
        )
    if arr.dtype.kind == "V":
        # ml_dtypes' bfloat16 and float8 types (what JAX returns for them) have kind "V".
        try:
            arr = arr.astype(np.float32)
        except (TypeError, ValueError):
            pass
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"metrics[{key!r}]: expected a real number, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize < 8:
        # The shortest decimal that reads back as the same float32 (0.55, not
        # 0.550000011920929): the log stays readable and loses nothing.
        scalar = cast(np.floating[Any], arr[()])  # a 0-d array indexed by () is its scalar
        return float(np.format_float_scientific(scalar, unique=True))
    return float(arr)


def _encode(value: float) -> float | str:
    return value if math.isfinite(value) else _NONFINITE_TO_JSON[repr(value)]


def _decode(row: dict) -> dict:
    return {
        k: _JSON_TO_NONFINITE[v] if isinstance(v, str) and v in _JSON_TO_NONFINITE else v
        for k, v in row.items()
    }


def _parse_lines(text: str, path: str) -> list[dict]:
    """Rows of a metrics.jsonl text; unparsable lines (a torn write) are dropped with a warning."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            # A SIGKILL mid-write leaves a partial last line; it is lost data, not a reason to
            # refuse to resume.
            warnings.warn(
                f"{path}:{lineno}: dropping a row that is not a JSON object with an integer "
                f"'step' (a torn write?): {line[:80]!r}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        rows.append(_decode(row))
    return rows


def _fsync_dir(path: str) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class MetricWriter:
    """Appends metric rows to ``workdir/metrics.jsonl`` and TensorBoard; draws ``curves.png``.

    Example:
      >>> writer = MetricWriter(workdir)
      >>> writer.write(100, {"epoch": 0.5, "train_loss": loss, "learning_rate": lr})
      >>> writer.plot()
      >>> writer.close()

    Args:
      workdir: directory of the run; created if missing.
      tensorboard: also write TensorBoard event files under ``workdir/tensorboard``.
      plot: whether `plot()` draws ``workdir/curves.png`` (False makes it a no-op).
      enabled: False makes every method a no-op (and `read` return ``[]``), for processes
        other than the one that logs.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        plot: bool = True,
        enabled: bool = True,
    ):
        if not isinstance(workdir, str | os.PathLike):
            raise TypeError(f"workdir: expected a path (str or os.PathLike), got {workdir!r}")
        self.workdir = os.fspath(workdir)
        self.path = os.path.join(self.workdir, METRICS_FILE)
        self.plot_path = os.path.join(self.workdir, PLOT_FILE)
        self.tensorboard_dir = os.path.join(self.workdir, TENSORBOARD_DIR)
        self.enabled = bool(enabled)
        self._tensorboard = bool(tensorboard)
        self._plot = bool(plot)
        self._file = None  # metrics.jsonl, opened for appending on the first write
        self._summary_writer = None  # events.EventFileWriter, created on the first write
        self._purge_step: int | None = None  # set by truncate_after for the next event file
        if self.enabled:
            os.makedirs(self.workdir, exist_ok=True)

    # -- writing --------------------------------------------------------------------------

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append one row ``{"step": step, **metrics}``, durably, and log it to TensorBoard.

        Args:
          step: the global training step (an integer >= 0) the metrics belong to.
          metrics: name -> scalar (Python, NumPy or JAX; converted to float). NaN and
            infinities are stored as "NaN", "Infinity", "-Infinity".

        Raises:
          TypeError: `step` is not an integer, or a value is not a real scalar.
          ValueError: `step` is negative, a metric is named "step", or a value is an array.
        """
        step = self._check_step(step, "step")
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"metrics: expected a mapping name -> scalar, got {type(metrics).__name__}"
            )
        if "step" in metrics:
            raise ValueError("metrics: must not contain the key 'step' (pass it as `step`)")
        values = {}
        for key, value in metrics.items():
            if not isinstance(key, str):
                raise TypeError(f"metrics: expected string keys, got {key!r}")
            values[key] = _to_float(key, value)
        if not self.enabled:
            return

        line = json.dumps(
            {"step": step, **{k: _encode(v) for k, v in values.items()}}, allow_nan=False
        )
        f = self._open_for_append()
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())

        if self._tensorboard:
            self._get_summary_writer().add_scalars(step, values)

    def flush(self) -> None:
        """Flush TensorBoard's buffered events (metrics.jsonl is already flushed per row)."""
        if self._summary_writer is not None:
            self._summary_writer.flush()

    def close(self) -> None:
        """Close the files. Writing again reopens them; closing twice is harmless."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._summary_writer is not None:
            self._summary_writer.close()
            self._summary_writer = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading and resuming ---------------------------------------------------------------

    def read(self) -> list[dict]:
        """The rows of metrics.jsonl, in file order, non-finite values as floats.

        Lines that do not parse (a torn last line after a crash) are dropped with a
        RuntimeWarning. Returns ``[]`` if there is no file yet, or when disabled.
        """
        if not self.enabled or not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            return _parse_lines(f.read(), self.path)

    def truncate_after(self, step: int) -> int:
        """Keep only the rows with ``row["step"] <= step``: the log of a resumed run.

        A run resumed from the checkpoint of `step` replays the steps after it, so rows
        logged after that checkpoint would otherwise appear twice. The file is rewritten
        atomically (a temporary file in the same directory, fsync'ed, then `os.replace`), so
        a crash during the rewrite leaves either the old or the new log. Unparsable rows are
        dropped with a warning. TensorBoard's events past `step` are hidden the way
        TensorBoard supports: the next event file starts with ``purge_step = step + 1``.

        Args:
          step: the step of the checkpoint being resumed (an integer >= 0).

        Returns:
          The number of rows kept (0 when there is no log, or when disabled).
        """
        step = self._check_step(step, "step")
        if not self.enabled:
            return 0
        # Reopen both files after the rewrite: the append handle would point at the old inode.
        self.close()
        self._purge_step = step + 1
        if not os.path.exists(self.path):
            return 0
        kept = [row for row in self.read() if row["step"] <= step]
        fd, tmp = tempfile.mkstemp(prefix=".metrics-", suffix=".jsonl.tmp", dir=self.workdir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for row in kept:
                    encoded = {k: _encode(v) if isinstance(v, float) else v for k, v in row.items()}
                    f.write(json.dumps(encoded, allow_nan=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(self.workdir)
        return len(kept)

    # -- plotting ---------------------------------------------------------------------------

    def plot(self) -> str | None:
        """Redraw ``workdir/curves.png`` from metrics.jsonl, atomically.

        Three panels: loss (train_loss, eval_loss); error in % (100 * (1 - top1) for train
        and eval); learning rate (log scale when all values are positive). The x axis is
        the rows' "epoch" (the step where a row has none). Missing keys (no evaluation yet)
        leave their curve out; non-finite values are skipped.

        Returns:
          The path of the PNG, or None when plotting is off or the writer is disabled.
        """
        if not (self.enabled and self._plot):
            return None
        rows = self.read()
        fig = _draw_curves(rows)
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)  # attaches itself to fig; never touches pyplot's global backend
        fd, tmp = tempfile.mkstemp(prefix=".curves-", suffix=".png.tmp", dir=self.workdir)
        try:
            with os.fdopen(fd, "wb") as f:
                fig.savefig(f, format="png", dpi=PLOT_DPI)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.plot_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return self.plot_path

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _check_step(step: Any, name: str) -> int:
        # A NumPy or JAX integer scalar (e.g. a train state's step) is as good as an int.
        if hasattr(step, "shape") and np.shape(step) == ():
            step = np.asarray(step).item()
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"{name}: expected an integer, got {type(step).__name__} {step!r}")
        if step < 0:
            raise ValueError(f"{name}: expected an integer >= 0, got {step}")
        return int(step)

    def _open_for_append(self):
        if self._file is None:
            # If a crash left a torn last line without its newline, start on a fresh line so
            # that the new row does not get glued onto (and lost with) the fragment.
            needs_newline = False
            if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    needs_newline = f.read(1) != b"\n"
            self._file = open(self.path, "a", encoding="utf-8")  # kept open: one fsync per row
            if needs_newline:
                self._file.write("\n")
        return self._file

    def _get_summary_writer(self):
        if self._summary_writer is None:
            from .events import EventFileWriter

            self._summary_writer = EventFileWriter(
                self.tensorboard_dir, purge_step=self._purge_step
            )
            self._purge_step = None  # the purge marker is written once, by this event file
        return self._summary_writer


def _series(rows: list[dict], key: str, x_key: str, transform=None) -> tuple[list, list]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        value = transform(value) if transform else float(value)
        if math.isfinite(value):
            xs.append(row.get(x_key, row["step"]))
            ys.append(value)
    return xs, ys


def _draw_curves(rows: list[dict]):
    """A matplotlib Figure (not attached to pyplot) with the three panels of `plot`."""
    from matplotlib.figure import Figure

    # Epochs read better than steps, but only if every row has one (else the x values mix).
    x_key = "epoch" if rows and all("epoch" in row for row in rows) else "step"
    # Fixed margins (room for tick labels like 1e-05 and the axis labels): a layout engine
    # would double the drawing time, most of the cost of a plot.
    fig = Figure(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI)
    fig.subplots_adjust(left=0.055, right=0.99, bottom=0.13, top=0.97, wspace=0.25)
    ax_loss, ax_err, ax_lr = fig.subplots(1, 3)

    def error(top1):
        return 100.0 * (1.0 - top1)

    panels = [
        (ax_loss, "loss", [("train_loss", "train", None), ("eval_loss", "eval", None)]),
        (ax_err, "top-1 error (%)", [("train_top1", "train", error), ("eval_top1", "eval", error)]),
        (ax_lr, "learning rate", [("learning_rate", "learning rate", None)]),
    ]
    for ax, ylabel, curves in panels:
        plotted = []
        for key, label, transform in curves:
            xs, ys = _series(rows, key, x_key, transform)
            if not xs:
                continue
            # Evaluation points are sparse: markers make a single one visible.
            marker = "o" if key.startswith("eval") else None
            ax.plot(xs, ys, label=label, marker=marker, markersize=3)
            plotted.extend(ys)
        ax.set_xlabel(x_key)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax is ax_lr and plotted and min(plotted) > 0:
            ax.set_yscale("log")
        if len(curves) > 1 and plotted:
            ax.legend()
        if not plotted:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    return fig


# -- progress bar ---------------------------------------------------------------------------


def _format_postfix(postfix: Mapping[str, Any]) -> str:
    """``loss=0.1234, acc=0.98, img_s=5120``: compact, fixed-width-ish values for the bar."""
    parts = []
    for key, value in postfix.items():
        try:
            number = _to_float(key, value)
        except (TypeError, ValueError):
            parts.append(f"{key}={value}")
            continue
        if isinstance(value, numbers.Integral) or (math.isfinite(number) and abs(number) >= 1000):
            text = f"{number:.0f}"  # throughputs and counts: the fraction is noise
        else:
            text = f"{number:.4g}"
        parts.append(f"{key}={text}")
    return ", ".join(parts)


class Progress:
    """A tqdm progress bar over training steps on stderr.

    Example:
      >>> with Progress(num_steps, initial=start_step) as bar:
      ...     bar.update(1, loss=0.12, acc=0.98, img_s=5120)
      ...     bar.write("epoch 1: eval_top1 0.981")

    Args:
      total_steps: steps in the whole run (the bar's 100%).
      initial: steps already done (a resumed run starts its bar there).
      enabled: False makes `update` a no-op and `write` print plain lines to stderr.
      desc: the bar's label.
    """

    def __init__(
        self, total_steps: int, *, initial: int = 0, enabled: bool = True, desc: str = "train"
    ):
        for name, value in (("total_steps", total_steps), ("initial", initial)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
        self.enabled = bool(enabled)
        self._bar = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=int(total_steps),
                initial=int(initial),
                desc=desc,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                # Redrawing at most twice a second keeps logs captured from stderr readable.
                mininterval=0.5,
            )

    def update(self, steps: int = 1, **postfix: Any) -> None:
        """Advance by `steps` and show `postfix` (e.g. ``loss=0.12, img_s=5120``) after the bar."""
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix_str(_format_postfix(postfix), refresh=False)
        self._bar.update(steps)

    def write(self, msg: str) -> None:
        """Print a line to stderr above the bar, without breaking it."""
        if self._bar is None:
            print(msg, file=sys.stderr, flush=True)
        else:
            self._bar.write(msg, file=sys.stderr)

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
