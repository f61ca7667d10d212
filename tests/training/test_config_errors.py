"""Wrong config values, command lines and saved configs: each is one clear error, raised
before any data or model is built; keys whose default is None are settable everywhere."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest
from absl import flags
from ml_collections import config_flags

from jaxcnn.training import default_config, train_and_evaluate
from jaxcnn.training.config import (
    DEFAULTS,
    check_values,
    config_to_dict,
    parse_config,
    read_saved_config,
    save_or_compare,
)

# ml_collections' config_flags loads config files with the deprecated loader.load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(REPO, "train", "configs", "lenet_digits.py")


def _dotted(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_kwargs":
            out.update(_dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


NONE_KEYS = sorted(k for k, v in _dotted(DEFAULTS).items() if v is None)


def _set(d: dict, key: str, value) -> dict:
    node = d
    *path, last = key.split(".")
    for p in path:
        node = node[p]
    node[last] = value
    return d


def _get(config, key: str):
    for p in key.split("."):
        config = config[p]
    return config


def _parse(*overrides: str, config_file: str | None = DEFAULT_CONFIG):
    """The config that `python -m train [--config=FILE] OVERRIDES` parses, through the same
    absl + config_flags machinery as train/__main__.py, on a fresh FlagValues."""
    argv = ["train", *([f"--config={config_file}"] if config_file else []), *overrides]
    flag_values = flags.FlagValues()
    # Without --config in argv, config_flags loads the default and applies the overrides
    # while defining the flag, as it does for `python -m train --config.KEY=VALUE`.
    config_flags.DEFINE_config_file(
        "config", default=DEFAULT_CONFIG, flag_values=flag_values, sys_argv=argv
    )
    flag_values(argv)
    return flag_values.config


def _run(*args: str, code: str | None = None, cwd: str = REPO, timeout: int = 180):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------- keys whose default is None (CLI)

# key -> (the command-line text, the value it must give)
CLI_VALUES = {
    "data.channels": [("1", 1), ("3", 3)],
    "data.data_dir": [("/data/tensorflow_datasets", "/data/tensorflow_datasets")],
    "data.mean": [
        ("(0.485, 0.456, 0.406)", (0.485, 0.456, 0.406)),
        ("0.1307", 0.1307),  # one channel
        ("[0.5]", [0.5]),
    ],
    "data.std": [("(0.229, 0.224, 0.225)", (0.229, 0.224, 0.225)), ("0.3081", 0.3081)],
}


def test_every_none_default_has_a_command_line_test():
    assert NONE_KEYS == sorted(CLI_VALUES)


@pytest.mark.parametrize("config_file", [None, DEFAULT_CONFIG], ids=["default", "--config"])
@pytest.mark.parametrize(
    "key,text,value", [(k, t, v) for k, cases in CLI_VALUES.items() for t, v in cases]
)
def test_none_default_keys_are_settable_from_the_command_line(config_file, key, text, value):
    config = _parse(f"--config.{key}={text}", config_file=config_file)
    assert _get(config, key) == value
    assert config.is_locked
    d = parse_config(config)  # the values pass the checks and serialise
    json.dumps(d.to_dict())


_RECORD_CONFIG = textwrap.dedent(
    """
    import json, runpy, sys
    import jaxcnn.training
    from jaxcnn.training.config import config_to_dict

    record = sys.argv.pop()

    def fake_train_and_evaluate(config, workdir):
        with open(record, "w") as f:
            json.dump(config_to_dict(config)["data"], f)
        return {"eval_top1": 1.0}

    jaxcnn.training.train_and_evaluate = fake_train_and_evaluate
    sys.argv = ["train", *sys.argv[1:]]
    runpy.run_module("train", run_name="__main__", alter_sys=True)
    """
)


@pytest.mark.parametrize("with_config", [False, True], ids=["default", "--config"])
def test_python_m_train_sets_none_default_keys(tmp_path, with_config):
    """`python -m train --config.data.channels=1 ...`, train_and_evaluate replaced by a stub."""
    record = str(tmp_path / "data.json")
    args = [
        *([f"--config={DEFAULT_CONFIG}"] if with_config else []),
        "--config.data.channels=1",
        "--config.data.mean=(0.5,)",
        "--config.data.std=0.25",
        "--config.data.data_dir=/data/tfds",
        f"--workdir={tmp_path / 'run'}",
    ]
    proc = _run(*args, record, code=_RECORD_CONFIG, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    with open(record) as f:
        data = json.load(f)
    assert (data["channels"], data["mean"], data["std"], data["data_dir"]) == (
        1,
        [0.5],
        0.25,
        "/data/tfds",
    )


def test_config_files_still_set_none_default_keys():
    c = default_config()
    c.data.channels = 3
    c.data.data_dir = "/data/tfds"
    c.data.mean = (0.485, 0.456, 0.406)
    c.data.std = [0.229, 0.224, 0.225]  # a list, as before
    assert (c.data.channels, c.data.data_dir, c.data.mean) == (
        3,
        "/data/tfds",
        (0.485, 0.456, 0.406),
    )
    assert list(c.data.std) == [0.229, 0.224, 0.225]
    c.data.mean = 0.5  # one value for a one-channel source
    assert c.data.mean == 0.5
    c.data.mean = None  # and back to the data set's own
    assert c.data.mean is None
    with pytest.raises(AttributeError):
        c.data.nosuchkey = 1  # still locked


def test_unset_none_keys_serialise_as_null_and_resume(tmp_path):
    d = parse_config(default_config())
    for key in NONE_KEYS:
        assert _get(d.to_dict(), key) is None, key
    save_or_compare(d, str(tmp_path), write=True)
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    for key in NONE_KEYS:
        assert _get(saved, key) is None, key
    save_or_compare(parse_config(default_config()), str(tmp_path), write=True)  # same

    changed = default_config()
    changed.data.channels = 1
    with pytest.raises(ValueError, match=r"different config \(data.channels: None -> 1\)"):
        save_or_compare(parse_config(changed), str(tmp_path), write=True)


def test_a_run_saved_before_a_key_existed_resumes_when_the_key_is_at_its_default(tmp_path):
    d = parse_config(default_config())
    save_or_compare(d, str(tmp_path), write=True)
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    del saved["data"]["color_jitter"], saved["data"]["host_resize"]  # keys added later
    with open(tmp_path / "config.json", "w") as f:
        json.dump(saved, f)
    save_or_compare(parse_config(default_config()), str(tmp_path), write=True)
    # Set to anything but its default, the new key is a difference, named as one.
    changed = default_config()
    changed.data.color_jitter = (0.4, 0.4, 0.4)
    with pytest.raises(ValueError, match=r"different config \(data.color_jitter: None -> "):
        save_or_compare(parse_config(changed), str(tmp_path), write=True)


def test_a_set_mean_resumes_as_the_same_config(tmp_path):
    c = _parse("--config.data.mean=(0.5,)", "--config.data.std=(0.25,)")
    save_or_compare(parse_config(c), str(tmp_path), write=True)
    again = default_config()
    for k, v in _dotted(config_to_dict(c)).items():
        _set(again, k, tuple(v) if isinstance(v, list) else v)
    save_or_compare(parse_config(again), str(tmp_path), write=True)


# ---------------------------------------------------------------- value checks


def _defaults() -> dict:
    return config_to_dict(default_config())


def test_check_values_reports_every_bad_key_in_one_error():
    d = _defaults()
    bad = {
        "log_every_steps": 0,
        "label_smoothing": 1.0,
        "best_metric": "nosuch",
        "data.std": [0.5, math.inf, 0.5],
        "data.mean": [math.nan],
        "batch_size": 0,
        "keep_checkpoints": 0,
        "eval_every_epochs": 0.0,
        "optimizer.learning_rate": math.nan,
    }
    for k, v in bad.items():
        _set(d, k, v)
    with pytest.raises(ValueError) as info:
        check_values(d)
    message = str(info.value)
    assert f"{len(bad)} bad values" in message
    for k, v in bad.items():
        line = next((ln for ln in message.splitlines() if ln.strip().startswith(f"{k}:")), None)
        assert line is not None, (k, message)
        assert f"got {v!r}" in line, line
    assert "eval_top1" in message and "eval_top5" in message  # what best_metric may be


BAD_VALUES = [
    ("seed", -1, "int >= 0"),
    ("batch_size", 0, "int >= 1"),
    ("batch_size", 64.0, "int >= 1"),
    ("eval_batch_size", -8, "int >= 1"),
    ("num_epochs", -1.0, ">= 0"),
    ("num_epochs", math.inf, "finite"),
    ("num_steps", -5, "int >= 0"),
    ("label_smoothing", 1.0, "[0, 1)"),
    ("label_smoothing", -0.1, "[0, 1)"),
    ("aux_loss_weight", math.nan, "finite"),
    ("head_lr_multiplier", -1.0, ">= 0"),
    ("eval_every_epochs", 0.0, "> 0"),
    ("checkpoint_every_epochs", -1.0, "> 0"),
    ("checkpoint_every_epochs", math.nan, "> 0"),
    ("log_every_steps", 0, "int >= 1"),
    ("log_every_steps", True, "int >= 1"),
    ("keep_checkpoints", 0, "int >= 1"),
    ("best_metric", "nosuch", "'eval_top1'"),
    ("best_metric", "eval_loss", "higher is better"),
    ("dtype", "float16", "'bfloat16'"),
    ("data.image_size", 0, "int >= 1"),
    ("data.eval_resize", -1, "int >= 0"),
    ("data.random_crop_padding", -2, "int >= 0"),
    ("data.num_classes", -1, "int >= 0"),
    ("data.synthetic_examples", 0, "int >= 1"),
    ("data.worker_count", -1, "int >= 0"),
    ("data.prefetch", -1, "int >= 0"),
    ("data.channels", 2, "1 or 3"),
    ("data.random_rotation", 200.0, "[0, 180]"),
    ("data.random_scale", 1.0, "[0, 1)"),
    ("data.pca_lighting", math.nan, "finite"),
    ("data.host_resize", "simd", "'auto', 'pillow' or 'opencv'"),
    ("data.color_jitter", (0.1, -1.0, 0.0), "three finite numbers >= 0"),
    ("data.color_jitter", (0.4, 0.4), "(brightness, contrast, saturation)"),
    ("data.color_jitter", (0.4, math.inf, 0.0), "three finite numbers >= 0"),
    ("data.mean", [0.5, math.nan, 0.5], "finite"),
    ("data.mean", "grey", "numbers"),
    ("data.std", [math.inf], "finite"),
    ("data.std", [0.2, 0.0, 0.2], "> 0"),
    ("data.std", -0.5, "> 0"),
    ("data.data_dir", 3, "path string"),
    ("optimizer.learning_rate", 0.0, "> 0"),
    ("optimizer.learning_rate", math.inf, "finite"),
    ("optimizer.momentum", 1.0, "[0, 1)"),
    ("optimizer.weight_decay", -1e-4, ">= 0"),
    ("optimizer.weight_decay", math.inf, "finite"),
    ("optimizer.clip_grad_norm", -1.0, ">= 0"),
    ("optimizer.clip_grad_norm", math.nan, ">= 0"),
    ("schedule.name", "linear", "'cosine'"),
    ("schedule.warmup_epochs", -1.0, ">= 0"),
    ("schedule.min_learning_rate", -0.1, ">= 0"),
]


@pytest.mark.parametrize("key,value,expected", BAD_VALUES)
def test_a_bad_value_is_named_with_what_it_expects(key, value, expected):
    d = _set(_defaults(), key, value)
    with pytest.raises(ValueError) as info:
        check_values(d)
    message = str(info.value)
    assert "1 bad value" in message
    line = next(ln for ln in message.splitlines() if ln.strip().startswith(f"{key}:"))
    assert expected in line and f"got {value!r}" in line, line


SCHEDULE_BAD_VALUES = [
    ("step", "schedule.step_epochs", 0.0, "> 0"),
    ("step", "schedule.gamma", -0.1, ">= 0"),
    ("multistep", "schedule.milestones", (10.0, math.nan), "finite"),
    ("multistep", "schedule.gamma", math.nan, ">= 0"),
    ("plateau", "schedule.gamma", 1.0, "(0, 1)"),
    ("plateau", "schedule.plateau_patience", -1, "int >= 0"),
    ("plateau", "schedule.plateau_metric", "eval_top1", "lower is better"),
]


@pytest.mark.parametrize("name,key,value,expected", SCHEDULE_BAD_VALUES)
def test_schedule_keys_are_checked_for_the_schedule_that_reads_them(name, key, value, expected):
    d = _set(_set(_defaults(), "schedule.name", name), "schedule.milestones", [30.0])
    _set(d, key, list(value) if isinstance(value, tuple) else value)
    with pytest.raises(ValueError, match=rf"{re.escape(key)}: .*{re.escape(expected)}"):
        check_values(d)
    # Another schedule does not read the key: the value is left alone, as before.
    check_values(_set(d, "schedule.name", "constant"))


GOOD_VALUES = [
    {"label_smoothing": 0.0},
    {"label_smoothing": 0.999},
    {"num_epochs": 0.0, "num_steps": 5},  # steps instead of epochs
    {"num_epochs": 2},  # an int where a float is expected
    {"eval_every_epochs": 0.01, "checkpoint_every_epochs": 100.0},
    {"log_every_steps": 1, "keep_checkpoints": 1},
    {"best_metric": "eval_top5"},
    {"optimizer.momentum": 0.0, "optimizer.nesterov": False},
    {"optimizer.weight_decay": 0.0, "optimizer.clip_grad_norm": math.inf},
    {"data.mean": 0.5, "data.std": [0.25]},  # a scalar for one channel, a list
    {"data.mean": [0.485, 0.456, 0.406], "data.std": (0.229, 0.224, 0.225)},
    {"data.channels": 1, "data.data_dir": "/data/tfds"},
    {"data.random_rotation": 180.0, "data.random_scale": 0.0, "data.worker_count": 4},
    {"data.prefetch": 0},
    {"schedule.name": "plateau", "schedule.gamma": 0.1, "schedule.plateau_patience": 0},
    {"schedule.name": "step", "schedule.gamma": 2.0},
    {"schedule.name": "constant", "schedule.step_epochs": 0.0, "schedule.gamma": -1.0},
    {"aux_loss_weight": 0.0, "head_lr_multiplier": 0.0, "seed": 2**40},
]


@pytest.mark.parametrize("overrides", GOOD_VALUES, ids=lambda o: ",".join(o))
def test_values_that_work_are_accepted(overrides):
    d = _defaults()
    for k, v in overrides.items():
        _set(d, k, v)
    check_values(d)


def test_the_checked_names_are_those_the_engine_reads():
    from jaxcnn.training import config, finetune, optim, parallel

    assert set(config.SCHEDULES) == set(optim.SCHEDULES)
    assert set(config.INIT_MAPPINGS) == set(finetune.MAPPINGS)
    assert set(config.PARALLEL) == set(parallel.MODES)
    assert set(config.BEST_METRICS) | set(config.PLATEAU_METRICS) <= {
        "eval_loss",
        "eval_top1",
        "eval_top5",
    }


def test_every_shipped_config_passes():
    import glob
    import importlib.util

    check_values(_defaults())
    for path in sorted(glob.glob(os.path.join(REPO, "train", "configs", "[!_]*.py"))):
        spec = importlib.util.spec_from_file_location("_config_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        check_values(config_to_dict(module.get_config()))


def test_train_and_evaluate_refuses_bad_values_before_touching_the_workdir(tmp_path):
    c = default_config()
    c.log_every_steps = 0
    c.best_metric = "nosuch"
    c.data.std = (math.inf,)
    c.num_steps = 2
    c.progress = c.tensorboard = c.plot = False
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match="3 bad values") as info:
        train_and_evaluate(c, str(workdir))
    for key in ("log_every_steps", "best_metric", "data.std"):
        assert f"\n  {key}:" in str(info.value)
    assert not workdir.exists()


# ---------------------------------------------------------- the CLI without --config


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--config.nosuchkey=1", "--config.nosuchkey: the config has no key 'nosuchkey'."),
        ("--config.optimizer.learning_rat=1", "the config has no key 'learning_rat'"),
    ],
)
def test_unknown_key_without_config_flag_is_one_line(tmp_path, flag, message):
    proc = _run(flag, f"--workdir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert not (tmp_path / "run").exists()


def test_python_m_train_reports_bad_values_without_a_traceback(tmp_path):
    proc = _run(
        "--config.log_every_steps=0",
        "--config.best_metric=nosuch",
        f"--workdir={tmp_path / 'run'}",
    )
    assert proc.returncode == 1
    assert "FATAL ConfigError: config: 2 bad values" in proc.stderr
    assert "log_every_steps: expected an int >= 1; got 0" in proc.stderr
    assert "best_metric: expected" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------- the saved config


@pytest.mark.parametrize(
    "content,what",
    [
        (b'{"model": "lenet5", "seed"', "line 1 column"),  # truncated
        (b'{\n  "model": "lenet5",\n  "seed": 0,\n', "line 4 column"),  # truncated, lines
        (b"", "empty"),
        (b"model: lenet5\n", "line 1 column 1"),  # not JSON
        (b"[1, 2]\n", "a JSON object"),  # JSON, but not a config
        (b"\xff\xfe\x00garbage", "UTF-8"),
    ],
    ids=["truncated", "truncated-lines", "empty", "not-json", "not-an-object", "binary"],
)
def test_read_saved_config_says_what_is_wrong_and_what_to_do(tmp_path, content, what):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_saved_config(str(path))
    message = str(info.value)
    assert str(path) in message
    assert what in message, message
    assert "--workdir" in message and "restore" in message
    assert path.read_bytes() == content  # never rewritten


def test_read_saved_config_reads_a_good_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_defaults()))
    assert read_saved_config(str(path)) == json.loads(json.dumps(_defaults()))
    with pytest.raises(FileNotFoundError):
        read_saved_config(str(tmp_path / "missing.json"))


def test_resume_with_a_corrupt_saved_config_fails_naming_it(tmp_path):
    path = tmp_path / "config.json"
    content = json.dumps(_defaults(), indent=2)[:200].encode()  # cut off mid-write
    path.write_bytes(content)
    c = default_config()
    c.num_steps = 2
    c.progress = c.tensorboard = c.plot = False
    c.compilation_cache = "off"
    with pytest.raises(ValueError, match=r"config\.json") as info:
        train_and_evaluate(c, str(tmp_path))
    assert "line" in str(info.value) and "--workdir" in str(info.value)
    assert path.read_bytes() == content
    assert not (tmp_path / "checkpoints").exists()
