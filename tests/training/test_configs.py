"""The recipes in train/configs/ and the `python -m train` command line (no training here)."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

import jaxcnn
from jaxcnn.training.config import DEFAULTS

# ml_collections' config_flags loads config files with the deprecated loader.load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "train", "configs")
CONFIG_FILES = sorted(
    p
    for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
    if not os.path.basename(p).startswith("_")
)
NAMES = [os.path.splitext(os.path.basename(p))[0] for p in CONFIG_FILES]
# The recipes that must exist (others, like the default lenet_digits, may be added).
RECIPES = [
    "alexnet_imagenet",
    "googlenet_imagenet",
    "lenet_mnist",
    "resnet20_cifar10",
    "resnet50_imagenet",
    "vgg16_imagenet",
]


def _load(name: str):
    """The config module loaded by path, as config_flags loads it (not as a package import)."""
    spec = importlib.util.spec_from_file_location(f"_config_{name}", _path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _path(name: str) -> str:
    return os.path.join(CONFIG_DIR, f"{name}.py")


def _config(name: str):
    return _load(name).get_config()


def _key_tree(d) -> dict:
    """Nested key structure; model_kwargs' contents are free-form, so only its presence counts."""
    return {
        k: (_key_tree(v) if isinstance(v, dict | ml_collections.ConfigDict) else None)
        if k != "model_kwargs"
        else "free-form"
        for k, v in d.items()
    }


def test_every_promised_recipe_exists():
    assert set(RECIPES) <= set(NAMES), f"missing: {sorted(set(RECIPES) - set(NAMES))}"


@pytest.mark.parametrize("name", NAMES)
def test_config_is_locked_with_exactly_the_default_keys(name):
    config = _config(name)
    assert isinstance(config, ml_collections.ConfigDict)
    assert config.is_locked
    assert _key_tree(config) == _key_tree(DEFAULTS)
    with pytest.raises(AttributeError):
        config.nosuchkey = 1
    with pytest.raises(AttributeError):
        config.optimizer.nosuchkey = 1


@pytest.mark.parametrize("name", NAMES)
def test_config_model_is_registered_and_accepts_its_kwargs(name):
    config = _config(name)
    assert config.model in jaxcnn.list_models()
    spec = jaxcnn.models.get_spec(config.model)
    # Building the module (no init: cheap) rejects unknown model_kwargs with a TypeError.
    num_classes = config.data.num_classes or spec.num_classes
    jaxcnn.create_model(config.model, num_classes=num_classes, **dict(config.model_kwargs))
    if config.data.image_size:
        assert config.data.image_size >= max(spec.min_input_size)


@pytest.mark.parametrize("name", NAMES)
def test_config_loads_through_config_flags_with_overrides(name):
    argv = ["prog", f"--config={_path(name)}", "--config.seed=7", "--config.plot=False"]
    flag_values = flags.FlagValues()
    # sys_argv: config_flags registers the --config.KEY overrides from the command line it
    # is given (by default the real sys.argv, here pytest's).
    config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    config = flag_values.config
    assert config.seed == 7 and config.plot is False
    assert config.is_locked
    assert config.model == _config(name).model


@pytest.mark.parametrize("name", RECIPES)
def test_docstring_states_command_hardware_and_expected_result(name):
    doc = " ".join(_load(name).__doc__.split())  # phrases may wrap across lines
    assert f"python -m train --config=train/configs/{name}.py" in doc
    assert "Hardware" in doc
    assert "Expected result, with its source" in doc
    # Honesty: nothing here claims to have reproduced the published figure.
    assert "not reproduced" in doc


# ----------------------------------------------------------------------- recipe figures


def test_resnet50_is_exactly_torchvisions_recipe():
    c = _config("resnet50_imagenet")
    assert c.model == "resnet50"
    assert (c.data.source, c.data.name) == ("tfds", "imagenet2012")
    assert (c.data.train_split, c.data.eval_split) == ("train", "validation")
    assert c.num_epochs == 90 and c.num_steps == 0
    assert c.batch_size == 256
    o = c.optimizer
    assert (o.learning_rate, o.momentum, o.nesterov, o.weight_decay) == (0.1, 0.9, False, 1e-4)
    assert o.decay_bn_and_bias  # torch.optim.SGD(model.parameters(), weight_decay=...)
    s = c.schedule
    assert (s.name, s.step_epochs, s.gamma, s.warmup_epochs) == ("step", 30, 0.1, 0)
    d = c.data
    assert (d.image_size, d.eval_resize, d.random_resized_crop, d.hflip) == (224, 256, True, True)
    assert d.random_crop_padding == 0 and d.pca_lighting == 0
    assert tuple(d.mean) == (0.485, 0.456, 0.406) and tuple(d.std) == (0.229, 0.224, 0.225)
    assert c.label_smoothing == 0


def test_resnet20_is_he_et_als_cifar_recipe():
    module = _load("resnet20_cifar10")
    c = module.get_config()
    assert c.model == "resnet20"
    assert (c.data.source, c.data.name, c.data.num_classes) == ("tfds", "cifar10", 10)
    assert c.num_steps == 64_000  # "terminate training at 64k iterations"
    assert c.batch_size == 128
    o = c.optimizer
    assert (o.learning_rate, o.momentum, o.weight_decay) == (0.1, 0.9, 1e-4)
    assert (c.schedule.name, c.schedule.gamma) == ("multistep", 0.1)
    d = c.data
    assert (d.image_size, d.random_crop_padding, d.hflip) == (32, 4, True)
    assert not d.random_resized_crop and d.eval_resize == 0

    # "divide it by 10 at 32k and 48k iterations": the engine turns epochs into steps as
    # round(epochs * steps_per_epoch); with full batches of 128 that is 390 per epoch.
    steps_per_epoch = 50_000 // 128
    assert module.STEPS_PER_EPOCH == steps_per_epoch
    assert [round(m * steps_per_epoch) for m in c.schedule.milestones] == [32_000, 48_000]
    # Counted as 390.625 steps per epoch instead, they move by less than 0.2%.
    for m, target in zip(c.schedule.milestones, (32_000, 48_000), strict=True):
        assert abs(m * 50_000 / 128 - target) / target < 2e-3


@pytest.mark.parametrize(
    "name, model", [("alexnet_imagenet", "alexnet"), ("vgg16_imagenet", "vgg16")]
)
def test_alexnet_and_vgg16_use_torchvisions_no_batchnorm_recipe(name, model):
    c = _config(name)
    assert c.model == model
    assert c.data.name == "imagenet2012" and c.batch_size == 256 and c.num_epochs == 90
    # references/classification: "--lr 1e-2" over the defaults (momentum 0.9, wd 1e-4, step 30)
    o = c.optimizer
    assert (o.learning_rate, o.momentum, o.weight_decay) == (0.01, 0.9, 1e-4)
    assert (c.schedule.name, c.schedule.step_epochs, c.schedule.gamma) == ("step", 30, 0.1)
    assert (c.data.image_size, c.data.eval_resize, c.data.random_resized_crop) == (224, 256, True)
    assert c.data.hflip


def test_alexnet_adds_the_2012_papers_pca_lighting():
    assert _config("alexnet_imagenet").data.pca_lighting == 0.1
    assert _config("vgg16_imagenet").data.pca_lighting == 0.0


def test_googlenet_trains_its_auxiliary_heads_with_the_papers_weight():
    c = _config("googlenet_imagenet")
    assert c.model == "googlenet"
    assert dict(c.model_kwargs) == {"aux_logits": True}
    assert c.aux_loss_weight == 0.3  # Szegedy et al. 2015, Section 5
    assert c.optimizer.momentum == 0.9 and not c.optimizer.nesterov
    assert (c.optimizer.learning_rate, c.optimizer.weight_decay) == (0.1, 1e-4)
    assert c.data.random_resized_crop and c.data.image_size == 224


def test_lenet_mnist_pads_the_digits_to_32_pixels():
    c = _config("lenet_mnist")
    assert c.model == "lenet5"
    assert (c.data.source, c.data.name, c.data.channels) == ("tfds", "mnist", 1)
    spec = jaxcnn.models.get_spec("lenet5")
    assert c.data.image_size == 32 == spec.input_size[0]
    assert c.num_epochs == 10


# ----------------------------------------------------------------------- the CLI


def _run_cli(*args, cwd=REPO, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_help_lists_config_and_workdir():
    proc = _run_cli("--helpfull")  # absl's help flags exit with status 1 by design
    help_text = proc.stdout + proc.stderr
    assert "--config:" in help_text and "--workdir:" in help_text
    assert "runs/<config file stem>" in help_text
    assert "lenet_digits.py" in help_text  # the default config, as an absolute path
    assert "python -m train --config=train/configs/" in help_text  # the usage examples


def test_cli_unknown_config_key_fails_naming_the_key():
    proc = _run_cli(f"--config={_path('resnet20_cifar10')}", "--config.nosuchkey=1")
    assert proc.returncode != 0
    assert "--config.nosuchkey: the config has no key 'nosuchkey'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_misspelt_nested_key_suggests_the_right_one():
    proc = _run_cli(f"--config={_path('resnet20_cifar10')}", "--config.optimizer.learning_rat=1")
    assert proc.returncode != 0
    assert "'learning_rat'" in proc.stderr and '"learning_rate"' in proc.stderr


def test_cli_missing_config_file_fails_cleanly(tmp_path):
    missing = os.path.join(tmp_path, "nope.py")
    proc = _run_cli(f"--config={missing}")
    assert proc.returncode != 0
    assert "nope.py" in proc.stderr and "Traceback" not in proc.stderr


_FAKE_TRAINING = textwrap.dedent(
    """
    import json, runpy, sys
    import jaxcnn.training

    record = sys.argv.pop()  # where the stub writes what it was called with

    def fake_train_and_evaluate(config, workdir):
        from absl import logging as absl_logging
        import logging
        absl_logging.info("chatty library INFO")  # as orbax logs: hidden by default
        logging.getLogger("jaxcnn.training").info("resumed from somewhere")  # shown
        with open(record, "w") as f:
            json.dump({"model": config.model, "seed": config.seed,
                       "distributed": config.distributed, "workdir": workdir}, f)
        return {"eval_top1": 356 / 360, "eval_correct": 356, "eval_count": 360,
                "eval_loss": 0.05, "step": 100, "wall_s": 41.234}

    jaxcnn.training.train_and_evaluate = fake_train_and_evaluate
    sys.argv = ["train", *sys.argv[1:]]
    runpy.run_module("train", run_name="__main__", alter_sys=True)
    """
)


@pytest.mark.parametrize("workdir", [None, "elsewhere/r20"])
def test_cli_calls_train_and_evaluate_and_prints_the_result(tmp_path, workdir):
    """The whole CLI path, with train_and_evaluate replaced by a stub, from another cwd."""
    record = os.path.join(tmp_path, "call.json")
    args = [
        f"--config={_path('resnet20_cifar10')}",
        "--config.seed=3",
        "--config.distributed=True",
        *([f"--workdir={workdir}"] if workdir else []),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", _FAKE_TRAINING, *args, record],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "test accuracy: 98.89% (356/360 correct) in 41.2 s"
    assert "resumed from somewhere" in proc.stderr
    assert "chatty library INFO" not in proc.stderr
    with open(record) as f:
        call = json.load(f)
    assert call == {
        "model": "resnet20",
        "seed": 3,
        "distributed": True,
        "workdir": workdir or os.path.join("runs", "resnet20_cifar10"),
    }


def test_format_result_lines():
    from train.__main__ import default_workdir, format_result

    result = {"eval_top1": 0.98888, "eval_correct": 356, "eval_count": 360, "wall_s": 3725.0}
    assert format_result(result) == "test accuracy: 98.89% (356/360 correct) in 1h02m05s"
    assert format_result({"eval_top1": 0.5, "wall_s": 75.4}, "validation") == (
        "validation accuracy: 50.00% in 1m15s"
    )
    # A stopped run says so even when an evaluation on the way left a top-1 in the result.
    stopped = format_result({"preempted": True, "step": 120, "eval_top1": 0.94})
    assert stopped.startswith("stopped by SIGTERM at step 120, checkpoint saved")
    assert "accuracy" not in stopped
    with pytest.raises(ValueError, match="result: expected a dict with 'eval_top1'"):
        format_result({"step": 3})
    assert default_workdir("train/configs/lenet_mnist.py") == os.path.join("runs", "lenet_mnist")
    assert default_workdir("/a/b/sweep.py:small") == os.path.join("runs", "sweep")
