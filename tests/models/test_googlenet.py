"""GoogLeNet: torchvision parity (eval and train mode), auxiliary heads, the paper's version.
Counts, structure against torchvision's, limits, outputs and a training step are
test_registry.py's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import convert
from jaxcnn.convert.mapping import variables_to_state_dict
from jaxcnn.models.googlenet import GoogLeNetOutputs
from tests.models.expected import EXPECTED, VARIANTS
from tests.models.parity import assert_parity, randomize_batchnorm_stats

# Eval-mode logits of randomly initialised models are O(0.5) (BatchNorm with randomised
# statistics keeps activations O(1); fc weights have std 0.01); float32 reaches ~4e-7 absolute.
RTOL, ATOL = 1e-5, 1e-6
# Training mode normalises with the statistics of a batch of 2 tiny maps (inception5b's are
# 3x3 at 75x83): near-constant channels divide by sqrt(var + 0.001), which amplifies float32
# rounding layer after layer; differences reach ~1.3e-5 on logits of scale 0.5. (With
# BatchNorm run in float64 as well the two agree to the final float32 cast, ~3e-8.)
TRAIN_RTOL, TRAIN_ATOL = 1e-4, 5e-5

REFERENCE_KWARGS = {"aux_logits": False, "init_weights": True, "transform_input": False}

# googlenet_2014 parameters, summed by hand from the layer columns of Table 1 of Szegedy et
# al. (2014): weights + biases. (The table's own "params" column is rounded, in units of 1024,
# without biases, and disagrees with its layer columns in places, e.g. 2.7K for conv1, which
# has 7*7*3*64 = 9,408 weights, or 463K for 4c, whose columns give 509,440, so it is not used.)
#   conv1 7x7/2, 3 -> 64:           7*7*3*64 + 64                  =      9,472
#   conv2 1x1, 64 -> 64:            64*64 + 64                     =      4,160
#   conv3 3x3, 64 -> 192:           9*64*192 + 192                 =    110,784
# An inception module with input C and columns (a, b, c, d, e, f) = (#1x1, #3x3 reduce, #3x3,
# #5x5 reduce, #5x5, pool proj) has C*a + C*b + 9*b*c + C*d + 25*d*e + C*f weights and
# a + b + c + d + e + f biases:
#   3a  C=192 ( 64,  96, 128, 16,  32,  32): 163,328 + 368   =    163,696
#   3b  C=256 (128, 128, 192, 32,  96,  64): 388,128 + 608   =    388,736
#   4a  C=480 (192,  96, 208, 16,  48,  64): 375,552 + 624   =    376,176
#   4b  C=512 (160, 112, 224, 24,  64,  64): 448,512 + 648   =    449,160
#   4c  C=512 (128, 128, 256, 24,  64,  64): 509,440 + 664   =    510,104
#   4d  C=512 (112, 144, 288, 32,  64,  64): 604,672 + 704   =    605,376
#   4e  C=528 (256, 160, 320, 32, 128, 128): 867,328 + 1,024 =    868,352
#   5a  C=832 (256, 160, 320, 32, 128, 128): 1,042,432 + 1,024 = 1,043,456
#   5b  C=832 (384, 192, 384, 48, 128, 128): 1,442,816 + 1,264 = 1,444,080
#   fc  1024 -> 1000:               1024*1000 + 1000               =  1,025,000
#                                                           total =  6,998,552
# Each auxiliary head: 1x1 conv C -> 128 (C*128 + 128), fc1 2048 -> 1024 (2,098,176),
# fc2 1024 -> 1000 (1,025,000):
#   aux1 (C=512): 65,664 + 2,098,176 + 1,025,000                  =  3,188,840
#   aux2 (C=528): 67,712 + 2,098,176 + 1,025,000                  =  3,190,888
#                                                 total with aux  = 13,378,280
GOOGLENET_2014_LAYERS = {
    "conv1": 9_472,
    "conv2": 4_160,
    "conv3": 110_784,
    "inception3a": 163_696,
    "inception3b": 388_736,
    "inception4a": 376_176,
    "inception4b": 449_160,
    "inception4c": 510_104,
    "inception4d": 605_376,
    "inception4e": 868_352,
    "inception5a": 1_043_456,
    "inception5b": 1_444_080,
    "fc": 1_025_000,
}
GOOGLENET_2014_AUX = {"aux1": 3_188_840, "aux2": 3_190_888}
GOOGLENET_2014_PARAMS = 6_998_552
GOOGLENET_2014_PARAMS_AUX = 13_378_280


def _abstract_variables(model, h, w, batch=1):
    x = jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _num_params(variables):
    return sum(x.size for x in jax.tree.leaves(variables["params"]))


def _torch_googlenet(torch, **kw):
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.googlenet(weights=None, **{**REFERENCE_KWARGS, **kw})


# ----------------------------------------------------------------------------- parameters


def test_googlenet_2014_layers_have_table_1s_counts():
    """Layer by layer, the counts summed by hand from Table 1 above; in total, the registry's."""
    params = _abstract_variables(jaxcnn.create_model("googlenet_2014", aux_logits=True), 224, 224)
    counts = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params["params"].items()}
    assert counts == {**GOOGLENET_2014_LAYERS, **GOOGLENET_2014_AUX}
    assert sum(GOOGLENET_2014_LAYERS.values()) == GOOGLENET_2014_PARAMS
    assert GOOGLENET_2014_PARAMS + sum(GOOGLENET_2014_AUX.values()) == GOOGLENET_2014_PARAMS_AUX
    assert EXPECTED["googlenet_2014"].params == GOOGLENET_2014_PARAMS
    assert VARIANTS["googlenet_2014-aux"][2].params == GOOGLENET_2014_PARAMS_AUX


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize(
    "kwargs, sizes",
    [
        # 15x15 is the smallest input: the ceil-mode pools end on partial windows.
        ({}, [(15, 15), (75, 83)]),
        ({"aux_logits": True}, [(15, 15), (75, 83)]),
        ({"transform_input": True}, [(75, 83)]),
    ],
)
@pytest.mark.slow
def test_googlenet_parity(torch, kwargs, sizes):
    worst = assert_parity(
        torch,
        "googlenet",
        _torch_googlenet(torch, **kwargs),
        sizes,
        rtol=RTOL,
        atol=ATOL,
        **kwargs,
    )
    assert worst < ATOL


@pytest.mark.slow
def test_googlenet_train_mode_matches_torch(torch):
    """Training mode with dropout off: all three outputs and the BatchNorm updates match.

    Also checks that aux_logits1 is differentiable with respect to the "aux1" head and the
    trunk (inception4a), and independent of the layers after inception4a.
    """
    ref = _torch_googlenet(torch, aux_logits=True, dropout=0.0, dropout_aux=0.0)
    randomize_batchnorm_stats(torch, ref)
    kwargs = {"aux_logits": True, "dropout_rate": 0.0, "aux_dropout_rate": 0.0}
    # Copied to JAX arrays: from_torch's numpy arrays may share memory with the torch tensors,
    # whose running statistics torch's training-mode forward updates in place.
    variables = jax.tree.map(jnp.array, convert.from_torch("googlenet", ref.state_dict(), **kwargs))
    model = jaxcnn.create_model("googlenet", **kwargs)
    x = np.random.default_rng(1).standard_normal((2, 75, 83, 3)).astype(np.float32)

    ref.train()
    expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    assert type(expected).__name__ == "GoogLeNetOutputs"

    # Differentiated with respect to a few layers only: the full backward pass takes long to
    # compile on CPU, and these show what matters (aux1 reaches into the trunk, nothing after
    # inception4a reaches aux1).
    checked = ("aux1", "inception4a", "aux2", "inception4b", "fc")
    rest = {k: v for k, v in variables["params"].items() if k not in checked}

    def aux1_sum(params):
        out, updates = model.apply(
            {"params": {**rest, **params}, "batch_stats": variables["batch_stats"]},
            jnp.asarray(x),
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(out.aux_logits1), (out, updates)

    (_, (out, updates)), grads = jax.jit(jax.value_and_grad(aux1_sum, has_aux=True))(
        {k: variables["params"][k] for k in checked}
    )
    assert isinstance(out, GoogLeNetOutputs)
    for field in GoogLeNetOutputs._fields:
        got, want = getattr(out, field), getattr(expected, field).detach().numpy()
        assert got.shape == want.shape == (2, 1000) and got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=TRAIN_RTOL, atol=TRAIN_ATOL, err_msg=field)

    # Running statistics after one step: torch's state dict now holds the updated ones.
    new_sd = variables_to_state_dict({"batch_stats": updates["batch_stats"]})
    torch_sd = ref.state_dict()
    for key, value in new_sd.items():
        np.testing.assert_allclose(value, torch_sd[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    assert int(updates["batch_stats"]["aux1"]["conv"]["bn"]["num_batches_tracked"]) == 8

    def grad_norm(prefix):
        return sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads[prefix]))

    for name in ("aux1", "inception4a"):
        assert grad_norm(name) > 0, name
    for name in ("aux2", "inception4b", "fc"):
        assert grad_norm(name) == 0, name


# ----------------------------------------------------------------------------- googlenet_2014


@pytest.mark.slow
def test_googlenet_2014_shapes_and_training_outputs():
    model = jaxcnn.create_model("googlenet_2014", num_classes=10, aux_logits=True)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 224, 224, 3)), jnp.float32)
    # An "unsafe_rbg" key: compiling threefry for every parameter takes most of a minute on CPU.
    variables = jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), x)
    assert "batch_stats" not in variables  # no BatchNorm in the paper's network
    # Caffe's initialisation: 0.2 biases on convolutions and aux fc1, zeros on classifiers.
    params = variables["params"]
    np.testing.assert_array_equal(params["inception4a"]["branch3.1"]["bias"], np.float32(0.2))
    np.testing.assert_array_equal(params["aux1"]["fc1"]["bias"], np.float32(0.2))
    np.testing.assert_array_equal(params["fc"]["bias"], 0.0)
    assert params["inception4a"]["branch3.1"]["kernel"].shape == (5, 5, 16, 48)

    logits = jax.eval_shape(model.apply, variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32

    train = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    out = train(variables, x, jax.random.key(1))
    assert isinstance(out, GoogLeNetOutputs)
    for o in out:
        assert o.shape == (2, 10) and o.dtype == jnp.float32
        assert np.all(np.isfinite(o))
    # Dropout (0.4 on the trunk, 0.7 in the heads) is active in training mode.
    again = train(variables, x, jax.random.key(2))
    for a, b in zip(out, again, strict=True):
        assert not np.allclose(a, b)


def test_googlenet_2014_aux_input_range():
    """The heads' 5x5/3 average pool gives 4x4 only from 12-14 pixel maps: 191-238 inputs."""
    model = jaxcnn.create_model("googlenet_2014", aux_logits=True)
    for hw in [(191, 238), (238, 191)]:
        variables = _abstract_variables(model, *hw)
        assert _num_params(variables) == GOOGLENET_2014_PARAMS_AUX
    for hw in [(190, 224), (224, 239)]:
        with pytest.raises(ValueError, match=r"H and W in \[191, 238\]"):
            _abstract_variables(model, *hw)
    # Evaluation skips the heads, so any valid size works with the same variables.
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x),
        _abstract_variables(model, 224, 224),
        jnp.zeros((1, 47, 99, 3)),
    )
    assert out.shape == (1, 1000)
