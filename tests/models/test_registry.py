"""One test over the whole registry: every model builds, trains a step, and has its size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.models import get_spec

MODELS = jaxcnn.list_models()


def test_registry_lists_the_lineage():
    for name in [
        "lenet5", "lenet5_1998", "alexnet", "alexnet_2012", "vgg11", "vgg16_bn", "vgg19_bn",
        "googlenet", "googlenet_2014", "inception_v3", "inception_v4", "inception_resnet_v2",
        "resnet18", "resnet50", "resnet152", "resnet20", "resnet110",
    ]:  # fmt: skip
        assert name in MODELS
    assert MODELS == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count(name):
    spec = get_spec(name)
    model = jaxcnn.create_model(name)
    x = jax.ShapeDtypeStruct((1, *spec.input_size), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    assert sum(v.size for v in jax.tree.leaves(shapes["params"])) == spec.num_params


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.slow
def test_forward_backward(name):
    """A training step at a small valid input: finite outputs, every parameter gets a gradient.

    The input is the smallest valid one but at least 64 px where the design size allows:
    training-mode BatchNorm over a 1x1 map and a batch of 2 normalises two values per channel,
    and through 50 such blocks (resnet101/152 at 1x1) the backward pass overflows float32 —
    true of the architecture (and of torch), not a defect worth testing for.
    """
    spec = get_spec(name)
    num_classes = 7
    model = jaxcnn.create_model(name, num_classes=num_classes)
    h, w = (max(m, min(64, d)) for m, d in zip(spec.min_input_size, spec.input_size, strict=False))
    x = jnp.asarray(
        np.random.default_rng(0).standard_normal((2, h, w, spec.input_size[2])), jnp.float32
    )
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}

    @jax.jit
    def loss_and_grad(params, state, x):
        def loss(params):
            out, new_state = model.apply(
                {"params": params, **state},
                x,
                train=True,
                rngs={"dropout": jax.random.key(1)},
                mutable=list(state),
            )
            outs = out if isinstance(out, tuple) else (out,)
            # A fixed random cotangent, so no parameter's gradient vanishes by symmetry.
            total = sum(
                jnp.sum(o * jax.random.normal(jax.random.key(i), o.shape))
                for i, o in enumerate(outs)
            )
            return total, (outs, new_state)

        return jax.value_and_grad(loss, has_aux=True)(params)

    (_, (outs, new_state)), grads = loss_and_grad(params, state, x)
    for o in outs:
        assert o.shape == (2, num_classes)
        assert o.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(o)))
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"
    if "batch_stats" in state:  # training updated the running statistics
        counts = jax.tree.leaves(
            jax.tree_util.tree_map_with_path(
                lambda p, v: v if str(p[-1].key) == "num_batches_tracked" else None,
                new_state["batch_stats"],
            )
        )
        assert counts and all(int(c) == 1 for c in counts)
    # Evaluation returns plain logits.
    y = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert y.shape == (2, num_classes)


@pytest.mark.parametrize("name", MODELS)
def test_too_small_or_malformed_input_is_a_clear_error(name):
    spec = get_spec(name)
    model = jaxcnn.create_model(name)
    h, w = spec.min_input_size
    c = spec.input_size[2]
    init = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))
    smallest = rf"smallest valid input is \(N, {h}, {w}, {c}\)"
    jax.eval_shape(init, jax.ShapeDtypeStruct((1, h, w, c), jnp.float32))  # valid
    for shape in [(1, h - 1, w, c), (1, h, w - 1, c), (1, h, w, c + 1), (h, w, c)]:
        if min(shape) < 1:
            continue
        with pytest.raises(ValueError, match=smallest):
            jax.eval_shape(init, jax.ShapeDtypeStruct(shape, jnp.float32))


def test_create_model_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet51'.*resnet50"):
        jaxcnn.create_model("resnet51")
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive int"):
        jaxcnn.create_model("resnet18", num_classes=0)
