"""Train and evaluate one configuration: `python -m train`.

Usage (from the repository root):

  # The default job: LeNet-5 on the bundled digits, offline, on a CPU.
  python -m train

  # A recipe from train/configs/, into a workdir of your choice.
  python -m train --config=train/configs/resnet20_cifar10.py --workdir=runs/r20

  # Any config key can be overridden; nested keys are dotted.
  python -m train --config=train/configs/lenet_mnist.py \\
      --config.num_epochs=2 --config.optimizer.learning_rate=0.01 --config.progress=False

  # Multi-process / multi-host: run the same command on every process.
  python -m train --config=train/configs/resnet50_imagenet.py --config.distributed=True

`--workdir` defaults to `runs/<config file stem>` under the current directory. Running the
same command on the same workdir resumes the run where it stopped. The workdir holds the
checkpoints, `metrics.jsonl`, TensorBoard events, `curves.png` and the resolved config.

Every key, its default and meaning: `jaxcnn/training/config.py`. The config is locked, so
an unknown key (`--config.nosuchkey=1`) is an error naming it. The last line printed to
stdout is the final evaluation, e.g. `test accuracy: 98.89% (356/360 correct) in 41.2 s`.

Exit status: 0 when training finished; 75 (EX_TEMPFAIL: "try again") when SIGTERM stopped
it after saving a checkpoint, with the last stdout line saying so (the run resumes when the
same command runs again); 1 on an error: a message without a traceback on stderr for a bad
config value, a checkpoint that could not be saved, a workdir another run holds, or a
diverged run; a traceback otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

# Resolved from this file, not the current directory, so `python -m train` works from
# anywhere the package is importable.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "lenet_digits.py")
# A schedulers' convention (sysexits.h EX_TEMPFAIL): stopped by SIGTERM, saved, resumable.
PREEMPTED_EXIT_CODE = 75

# Without --config on the command line, config_flags loads the default file and applies the
# --config.KEY overrides right here, at import; an error then (`--config.nosuchkey=1`) waits
# for `_parse_flags`, which reports it as it does when --config is given.
_DEFINE_ERROR: Exception | None = None
try:
    _CONFIG = config_flags.DEFINE_config_file(
        "config",
        default=DEFAULT_CONFIG,
        help_string="Path of a config file defining get_config() (see train/configs/); "
        "override its keys with --config.KEY=VALUE.",
        lock_config=True,
    )
except (AttributeError, KeyError, flags.Error) as e:
    _DEFINE_ERROR = e
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Directory for checkpoints, metrics and plots; an existing one is resumed. "
    "Default: runs/<config file stem> under the current directory.",
)


def default_workdir(config_file: str) -> str:
    """``runs/<stem>`` for a config path such as ``train/configs/lenet_mnist.py[:arg]``."""
    path = config_file.split(":", 1)[0]  # config_flags passes text after ":" to get_config
    return os.path.join("runs", os.path.splitext(os.path.basename(path))[0])


def format_result(result: Mapping[str, Any], split: str = "test") -> str:
    """The final line: ``test accuracy: 98.89% (356/360 correct) in 41.2 s``.

    Args:
      result: what `train_and_evaluate` returned: "eval_top1" (a fraction in [0, 1]) and,
        when present, "eval_correct", "eval_count" (ints) and "wall_s" (seconds). A run
        stopped by SIGTERM ("preempted": True) gets a line saying where it stopped and how
        to resume instead: an evaluation it made on the way is not the final one.
      split: the name of the evaluated split, for the label.
    """
    if result.get("preempted"):
        return (
            f"stopped by SIGTERM at step {result.get('step', '?')}, checkpoint saved; run the "
            "same command again to resume"
        )
    if "eval_top1" not in result:
        raise ValueError(f"result: expected a dict with 'eval_top1', got keys {sorted(result)}")
    line = f"{split} accuracy: {100.0 * float(result['eval_top1']):.2f}%"
    if result.get("eval_correct") is not None and result.get("eval_count") is not None:
        line += f" ({int(result['eval_correct'])}/{int(result['eval_count'])} correct)"
    if result.get("wall_s") is not None:
        line += f" in {_duration(float(result['wall_s']))}"
    return line


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line error for an unknown key or a missing config file.

    config_flags reports `--config.nosuchkey=1` as a bare AttributeError/KeyError from inside
    ConfigDict (a 50-line traceback), and defers a missing config file's error to the first
    use of the config; both become a "FATAL Flags parsing error" like absl's own.
    """
    try:
        if _DEFINE_ERROR is not None:  # the default config's overrides failed at import
            raise _DEFINE_ERROR
        rest = app.parse_flags_with_usage(argv)
        _CONFIG.value.keys()  # loads nothing new: raises now if the file failed to load
    except (AttributeError, KeyError) as e:
        _fail(unknown_key_message(e, argv))
    except OSError as e:
        _fail(f"--config: {e.__cause__ or e}")
    except flags.Error as e:  # absl reports its own parsing errors; these come from import
        _fail(str(e))
    return rest


def unknown_key_message(error: BaseException, argv: list[str]) -> str:
    """What to tell the user when ConfigDict raised `error` for an unknown key."""
    # ConfigDict raises AttributeError(KeyError(message)): the message is the innermost arg.
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = str(error.args[0]) if error.args else str(error)
    match = re.match(r"'([^'\s]+)'\s*(.*)", text, re.DOTALL)
    if match is None:  # not ConfigDict's "'key'\nDid you mean ..." form: pass it on as it is
        return f"--config: {' '.join(text.split())}"
    key, hint = match.group(1), " ".join(match.group(2).split())
    flags_given = [
        a.split("=", 1)[0]
        for a in argv[1:]
        if a.startswith("--config.") and key in a.split("=", 1)[0][len("--config.") :].split(".")
    ]
    where = f"{', '.join(flags_given)}: " if flags_given else ""
    message = f"{where}the config has no key {key!r}." + (f" {hint}" if hint else "")
    if any(".model_kwargs." in f for f in flags_given):
        message += " model_kwargs holds only the keys its config file sets; add new ones there."
    return message + " Every key, with its default and meaning: jaxcnn/training/config.py."


def _fail(message: str) -> None:
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
    sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def main(argv: list[str]) -> None:
    """Run `train_and_evaluate` on the parsed config and print the final evaluation."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        # app.run turns absl's default verbosity up to INFO, and orbax then logs hundreds of
        # INFO lines per run across the progress bar. Keep WARNING unless --verbosity is
        # given, but let jaxcnn's own INFO messages (e.g. "resumed from ...") through.
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("jaxcnn").setLevel(logging.INFO)
    # Imported here so that `--help` and flag errors come back without loading JAX.
    import jax

    from jaxcnn.training import (
        CheckpointError,
        ConfigError,
        NonFiniteLossError,
        WorkdirInUseError,
        train_and_evaluate,
    )

    config = _CONFIG.value
    config_file = config_flags.get_config_filename(flags.FLAGS["config"])
    workdir = _WORKDIR.value or default_workdir(config_file)
    try:
        result = train_and_evaluate(config, workdir)
    except (CheckpointError, ConfigError, WorkdirInUseError, NonFiniteLossError) as e:
        # Their messages say what happened and what to do; a traceback would bury that.
        sys.stderr.write(f"FATAL {type(e).__name__}: {e}\n")
        sys.exit(1)
    if jax.process_index() == 0:  # one line per job, not one per process
        print(format_result(result, split=str(config.data.eval_split)), flush=True)
    if result.get("preempted"):
        sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
