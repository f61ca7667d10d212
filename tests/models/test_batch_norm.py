"""`models.configure_batch_norm`: frozen BatchNorms train as in evaluation, synchronised ones
use the statistics of the global batch, and models without BatchNorm are left as they are."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import models
from jaxcnn.models import configure_batch_norm, get_spec
from jaxcnn.models.batch_norm import has_batch_norm
from jaxcnn.training import DataParallel

MODELS = jaxcnn.list_models()
BN_MODELS = [n for n in MODELS if has_batch_norm(jaxcnn.create_model(n))]
# Options that put every BatchNorm of a model to use (the auxiliary heads).
OPTIONS = {"googlenet": {"aux_logits": True}}


def _model(name: str, **kw):
    """`name` with 5 classes and every dropout rate 0, so training mode is deterministic."""
    model = jaxcnn.create_model(name, num_classes=5, **{**OPTIONS.get(name, {}), **kw})
    return model.clone(**{f.name: 0.0 for f in dataclasses.fields(model) if "dropout" in f.name})


def _input(name: str, n: int, min_side: int = 1) -> jax.Array:
    """(n, H, W, C): the smallest valid input, at least `min_side` where the design allows."""
    spec = get_spec(name)
    h, w = (
        max(m, min(min_side, d)) for m, d in zip(spec.min_input_size, spec.input_size, strict=False)
    )
    x = np.random.default_rng(0).standard_normal((n, h, w, spec.input_size[2]))
    return jnp.asarray(x, jnp.float32)


def _logits(out):
    return out[0] if isinstance(out, tuple) else out


def _bits(tree) -> list[bytes]:
    return [np.asarray(a).tobytes() for a in jax.tree.leaves(tree)]


def test_registry_has_batch_norm_models():
    assert {"resnet18", "resnet20", "googlenet", "vgg11_bn", "inception_v3", "inception_v4",
            "inception_resnet_v2"} <= set(BN_MODELS)  # fmt: skip
    assert not {"lenet5", "alexnet", "vgg11", "googlenet_2014"} & set(BN_MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_configure_sets_the_attributes_or_leaves_the_model_unchanged(name):
    model = jaxcnn.create_model(name)
    x = jax.ShapeDtypeStruct((1, *get_spec(name).input_size), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    configured = configure_batch_norm(model, axis_name="batch", frozen=["layer1", "bn1", "bn1"])
    if "batch_stats" not in shapes:  # no BatchNorm: nothing to synchronise or freeze
        assert not has_batch_norm(model)
        assert configured is model
        return
    assert has_batch_norm(model)
    assert configured is not model
    assert configured.bn_axis_name == "batch"
    assert configured.frozen_batch_norms == ("bn1", "layer1")
    # The defaults change nothing; configuring again replaces the earlier setting.
    assert model.bn_axis_name is None and model.frozen_batch_norms == ()
    assert configure_batch_norm(configured) == model


@pytest.mark.slow
@pytest.mark.parametrize("name", BN_MODELS)
def test_every_batch_norm_frozen_trains_as_in_evaluation(name):
    """With every BatchNorm frozen, train=True leaves batch_stats bit-identical and gives the
    train=False logits (dropout off)."""
    model = _model(name)
    x = _input(name, 2)
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
    # Running statistics away from (0, 1), so evaluation mode is no identity normalisation.
    key = iter(jax.random.split(jax.random.key(1), 10_000))
    stats = jax.tree_util.tree_map_with_path(
        lambda p, v: (
            v
            if str(p[-1].key) == "num_batches_tracked"
            else (
                0.1 * jax.random.normal(next(key), v.shape)
                if str(p[-1].key) == "mean"
                else jax.random.uniform(next(key), v.shape, minval=0.5, maxval=1.5)
            )
        ),
        variables["batch_stats"],
    )
    variables = {**variables, "batch_stats": stats}
    frozen = models.configure_batch_norm(model, frozen=tuple(stats))  # every top-level layer
    out, updates = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
    assert _bits(updates["batch_stats"]) == _bits(stats)
    expected = model.apply(variables, x, train=False)
    np.testing.assert_allclose(_logits(out), expected, rtol=1e-5, atol=1e-5)
    # Unfrozen, the same call trains its BatchNorms: the check can fail.
    _, trained = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert _bits(trained["batch_stats"]) != _bits(stats)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "googlenet", "vgg11_bn"])
def test_synchronised_batch_norms_use_the_global_batch_statistics(name, x64):
    """Under vmap over 2 shards with the model's axis, outputs and every running statistic
    equal those of one call on the whole batch.

    One model per way the axis reaches a BatchNorm (ResNet blocks, `layers.ConvBN` with
    GoogLeNet's auxiliary heads, VGG's own); the frozen test above covers every model's
    plumbing. In float64: float32 rounding, amplified through tens of training-mode
    BatchNorms over small batches, differs with the summation order.
    """
    model = _model(name, dtype=jnp.float64)
    x = _input(name, 4, min_side=32).astype(jnp.float64)
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x[:1])
    synced = configure_batch_norm(model, axis_name="shards")

    def train(m):
        def shard(xs):
            return m.apply(variables, xs, train=True, mutable=["batch_stats"])

        out, upd = jax.jit(jax.vmap(shard, axis_name="shards"))(x.reshape(2, 2, *x.shape[1:]))
        return _logits(out).reshape(4, -1), upd["batch_stats"]

    out, stats = train(synced)
    ref_out, ref_stats = jax.jit(
        lambda x: model.apply(variables, x, train=True, mutable=["batch_stats"])
    )(x)
    np.testing.assert_allclose(out, _logits(ref_out), rtol=1e-9, atol=1e-9)
    for (path, s), r in zip(
        jax.tree_util.tree_flatten_with_path(stats)[0],
        jax.tree.leaves(ref_stats["batch_stats"]),
        strict=True,
    ):
        for i in range(2):  # both shards hold the global statistics
            np.testing.assert_allclose(
                s[i], r, rtol=1e-6, atol=1e-9, err_msg=jax.tree_util.keystr(path)
            )
    if name == "resnet20":  # the control: per-shard statistics differ, so the check can fail
        _, unsynced = train(model)
        mean = unsynced["bn1"]["mean"]
        assert not np.allclose(mean[0], mean[1], rtol=1e-3, atol=1e-4)


def test_configure_batch_norm_errors_name_the_argument():
    model = jaxcnn.create_model("resnet20")
    with pytest.raises(TypeError, match=r"`frozen` must be a collection of layer paths.*'bn1'"):
        configure_batch_norm(model, frozen="bn1")
    with pytest.raises(TypeError, match=r"every path in `frozen` must be a string.*got 3"):
        configure_batch_norm(model, frozen=("bn1", 3))
    with pytest.raises(ValueError, match=r"`frozen` paths must be non-empty"):
        configure_batch_norm(model, frozen=("",))
    with pytest.raises(TypeError, match=r"`axis_name` must be a string .* or None; got 0"):
        configure_batch_norm(model, axis_name=0)
    with pytest.raises(ValueError, match=r"`axis_name` must be a non-empty string"):
        configure_batch_norm(model, axis_name="")
    with pytest.raises(TypeError, match=r"`model` must be a flax.linen Module.*got str"):
        configure_batch_norm("resnet20")
    # The same checks for models without BatchNorm, whatever they would do with the values.
    with pytest.raises(TypeError, match=r"`frozen` must be a collection"):
        configure_batch_norm(jaxcnn.create_model("lenet5"), frozen="conv1")


def test_data_parallel_names_the_batch_norm_axis():
    assert DataParallel("pmap").bn_axis_name == "batch"
    assert DataParallel("jit").bn_axis_name is None
    assert DataParallel("none").bn_axis_name is None
