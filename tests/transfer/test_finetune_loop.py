"""Fine-tuning through `train_and_evaluate`: init_from (weight file, workdir), new heads,
frozen layers bit-identical through training, resuming without re-initialising."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import convert
from jaxcnn.training import default_config, load_run, train_and_evaluate
from tests.helpers import set_keys


def config(**overrides):
    c = default_config()
    c.batch_size = 32
    c.eval_batch_size = 359
    c.num_steps = 4
    c.optimizer.learning_rate = 0.05
    c.eval_every_epochs = 100.0
    c.checkpoint_every_epochs = 100.0
    c.progress = c.tensorboard = c.plot = c.async_checkpointing = False
    return set_keys(c, overrides)


def bits(tree) -> list[bytes]:
    return [np.asarray(a).tobytes() for a in jax.tree.leaves(tree)]


def save_safetensors(path, state_dict):
    """A state dict as a .safetensors file, 0-d arrays (num_batches_tracked) kept 0-d."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in state_dict.items()},
              str(path))  # fmt: skip


@pytest.mark.slow
def test_resnet20_from_a_weight_file_with_frozen_stem_and_first_stage(tmp_path):
    # "Pretrained" 7-class weights with non-trivial BatchNorm statistics.
    model = jaxcnn.create_model("resnet20", num_classes=7)
    source = jax.jit(model.init)(jax.random.key(5), jnp.zeros((1, 32, 32, 3)))
    keys = iter(jax.random.split(jax.random.key(6), 100))

    def perturb(s):
        if s.dtype == jnp.int32:  # num_batches_tracked
            return s + 1
        return s + 0.1 * jax.random.uniform(next(keys), s.shape)

    source["batch_stats"] = jax.tree.map(perturb, source["batch_stats"])
    weights = tmp_path / "r20_7.safetensors"
    save_safetensors(weights, convert.to_torch("resnet20", source, num_classes=7))

    c = config(
        model="resnet20",
        **{"data.channels": 3},
        init_from=str(weights),
        freeze=("conv1", "bn1", "layer1.*"),
        head_lr_multiplier=10.0,
        lr_multipliers=(("layer3.*", 0.5),),
    )
    workdir = tmp_path / "run"
    result = train_and_evaluate(c, workdir)
    assert result["step"] == 4
    _, trained, info = load_run(workdir)
    assert info["num_classes"] == 10 and trained["params"]["fc"]["kernel"].shape == (64, 10)
    frozen = {"conv1", "bn1", "layer1.0", "layer1.1", "layer1.2"}
    for coll in ("params", "batch_stats"):
        for layer in source[coll]:
            if layer == "fc":
                continue
            same = bits(trained[coll][layer]) == bits(source[coll][layer])
            assert same == (layer in frozen), (coll, layer)  # frozen: bit-identical; others moved
    counts = trained["batch_stats"]
    assert int(counts["layer1.0"]["bn1"]["num_batches_tracked"]) == 1  # the file's 0 + 1
    assert int(counts["layer2.0"]["bn1"]["num_batches_tracked"]) == 1 + 4  # + 4 steps

    # Resuming never re-reads init_from: the file can be gone, the run's own state is used.
    weights.unlink()
    again = train_and_evaluate(c, workdir)
    assert again["step"] == 4 and again["eval_correct"] == result["eval_correct"]
    _, resumed, _ = load_run(workdir)
    assert bits(resumed) == bits(trained)


@pytest.fixture(scope="module")
def lenet_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lenet") / "pretrained"
    train_and_evaluate(config(num_steps=10), workdir)
    return workdir


@pytest.mark.slow
def test_lenet_linear_probe_from_a_workdir_with_more_classes(lenet_workdir, tmp_path):
    c = config(init_from=str(lenet_workdir), freeze_all_but_last=0, **{"data.num_classes": 12})
    train_and_evaluate(c, tmp_path / "probe")
    _, pre, _ = load_run(lenet_workdir)
    _, probe, info = load_run(tmp_path / "probe")
    assert info["num_classes"] == 12 and probe["params"]["fc3"]["kernel"].shape == (84, 12)
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert bits(probe["params"][layer]) == bits(pre["params"][layer]), layer


@pytest.mark.slow
def test_init_from_errors_are_clear(lenet_workdir, tmp_path):
    strict = config(init_from=str(lenet_workdir), init_mapping="strict", **{"data.num_classes": 12})
    with pytest.raises(
        ValueError, match=r"shape mismatches.*fc3/kernel: given \(84, 10\), expected \(84, 12\)"
    ):
        train_and_evaluate(strict, tmp_path / "a")
    other = config(model="lenet5_1998", init_from=str(lenet_workdir))
    with pytest.raises(ValueError, match="holds a lenet5, but the model is lenet5_1998"):
        train_and_evaluate(other, tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="no such weight file or workdir"):
        train_and_evaluate(config(init_from=str(tmp_path / "nothing.pth")), tmp_path / "c")
    with pytest.raises(ValueError, match="'conv9' matches no layer"):
        train_and_evaluate(config(freeze=("conv9",)), tmp_path / "d")
    with pytest.raises(ValueError, match="init_mapping: expected one of 'auto', 'strict', 'vgg_st"):
        train_and_evaluate(config(init_mapping="by_magic"), tmp_path / "e")
    with pytest.raises(ValueError, match="freeze_all_but_last: expected an int >= 0, or -1"):
        train_and_evaluate(config(freeze_all_but_last=-2), tmp_path / "f")
