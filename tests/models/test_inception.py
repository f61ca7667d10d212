"""Inception-v3 (torchvision), Inception-v4 and Inception-ResNet-v2 (timm): parity, parameter
counts, initialisation, training-mode outputs and input checks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import convert
from jaxcnn.convert.mapping import variables_to_state_dict
from jaxcnn.models import get_spec
from jaxcnn.models.inception import InceptionAux, InceptionOutputs, Mixed3a
from tests.models.parity import assert_parity, randomize_batchnorm_stats

# (registry name, create_model kwargs, the same options in the reference's spelling,
# parameter count from torchvision / timm, smallest (H, W)).
CONFIGS = {
    "inception_v3": ("inception_v3", {}, {}, 27_161_264, (299, 299)),
    "inception_v3_noaux": (
        "inception_v3",
        {"aux_logits": False},
        {"aux_logits": False},
        23_834_568,
        (75, 75),
    ),
    "inception_v4": ("inception_v4", {}, {}, 42_679_816, (75, 75)),
    "inception_resnet_v2": ("inception_resnet_v2", {}, {}, 55_843_464, (75, 75)),
}
NAMES = ["inception_v3", "inception_v4", "inception_resnet_v2"]

# Parity is judged relative to the logit scale (max |torch logit| over the compared inputs).
# The Inception-v3 references are built with init_weights=False: torchvision's own init (std
# 0.1 whatever the fan-in) drives random-init logits to ~1e9-1e12, where a relative tolerance
# could hide a wrong small-magnitude path; PyTorch's default init keeps them ~1, like the timm
# models'. Measured max |diff| (logit scale ~0.7-1): inception_v3 3.3e-7 (299, and aux-free
# at 75 and 83x91), inception_v4 3.6e-7, inception_resnet_v2 4.8e-7.
PARITY_REL_TOL = 1e-5
SMALL_SIZES = [(75, 75), (83, 91)]  # the smallest, and an odd non-square size
# Inception-v3 with the auxiliary head admits 299 x 299 at least: compared there and at an odd,
# non-square size (the aux-free configuration, the same evaluation graph, at SMALL_SIZES).
V3_AUX_SIZES = [(299, 299), (307, 301)]
# Training mode (batch statistics) is ill-conditioned in float32 here: torchvision's own
# float32 outputs differ from its float64 ones by 2.3e-5 (logits) and 1.7e-4 (aux logits) of
# the logit scale (the auxiliary head normalises over only N = 2 values per channel after
# AuxLogits.conv1, a 1 x 1 map). Measured jaxcnn vs torchvision: 3.5e-5 and 2.8e-4.
TRAIN_REL_TOL = {"logits": 1e-4, "aux_logits": 5e-4}
# Running mean / var after the step, relative to each statistic's largest magnitude: measured
# <= 5e-5 (AuxLogits.conv1.bn, whose batch has two values per channel; elsewhere <= 4e-5).
STATS_REL_TOL = 2e-4


def _reference(torch, name, **reference_options):
    """The torchvision / timm model the registry names, with random weights."""
    spec = get_spec(name)
    kwargs = {**spec.reference_kwargs, **reference_options}
    torch.manual_seed(0)
    if spec.reference == "torchvision":
        import torchvision

        return getattr(torchvision.models, spec.reference_name)(**kwargs, weights=None)
    assert spec.reference == "timm"
    import timm

    return timm.create_model(spec.reference_name, pretrained=False, **kwargs)


@functools.cache
def _abstract_variables(config):
    """Shapes of a configuration's variables at its design input size (jax.eval_shape)."""
    name, kw, *_ = CONFIGS[config]
    model = jaxcnn.create_model(name, **kw)
    x = jax.ShapeDtypeStruct((1, *get_spec(name).input_size), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


def _nchw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _eval_logit_scale(torch, torch_model, sizes, batch=2, seed=0):
    """max |logit| of `torch_model` on the inputs `assert_parity` draws (same seeds)."""
    randomize_batchnorm_stats(torch, torch_model, seed)  # as assert_parity will
    torch_model.eval()
    rng = np.random.default_rng(seed)
    scale = 0.0
    for h, w in sizes:
        x = rng.standard_normal((batch, h, w, 3)).astype(np.float32)
        with torch.no_grad():
            scale = max(scale, float(torch_model(_nchw(torch, x)).abs().max()))
    return scale


# --- registry and parameter counts -----------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
def test_param_count(torch, config):
    name, kw, ref_kw, count, _ = CONFIGS[config]
    assert _count(_abstract_variables(config)["params"]) == count
    ref = _reference(torch, name, **ref_kw)
    assert sum(p.numel() for p in ref.parameters()) == count
    if not kw:
        assert get_spec(name).num_params == count


def test_registry_entries():
    v3, v4, irv2 = (get_spec(n) for n in NAMES)
    assert (v3.reference, v3.reference_name) == ("torchvision", "inception_v3")
    assert v3.reference_kwargs == {
        "aux_logits": True,
        "init_weights": True,
        "transform_input": False,
    }
    for spec in (v4, irv2):
        assert (spec.reference, spec.reference_name, spec.reference_kwargs) == (
            "timm",
            spec.name,
            {},
        )
    for spec in (v3, v4, irv2):
        assert (spec.input_size, spec.num_classes) == ((299, 299, 3), 1000)
    assert v3.min_input_size == (299, 299)
    assert v4.min_input_size == irv2.min_input_size == (75, 75)


# --- parity --------------------------------------------------------------------------------


def _check_parity(torch, name, sizes, kw, ref_kw):
    ref = _reference(torch, name, **ref_kw)
    scale = _eval_logit_scale(torch, ref, sizes)
    worst = assert_parity(
        torch,
        name,
        ref,
        sizes,
        rtol=PARITY_REL_TOL,
        atol=PARITY_REL_TOL * scale,
        **kw,
    )
    print(f"{name} {kw}: max |diff| {worst:.3g}, logit scale {scale:.3g}")


@pytest.mark.slow
def test_inception_v3_parity(torch):
    # init_weights=False: PyTorch's default init keeps the logits O(1), where torchvision's
    # std-0.1 init gives ~1e12 and a relative tolerance could hide a wrong small-scale path.
    _check_parity(torch, "inception_v3", V3_AUX_SIZES, {}, {"init_weights": False})


@pytest.mark.slow
def test_inception_v3_noaux_transform_input_parity(torch):
    kw = {"aux_logits": False, "transform_input": True}
    _check_parity(torch, "inception_v3", SMALL_SIZES, kw, {**kw, "init_weights": False})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_timm_parity(torch, name):
    _check_parity(torch, name, SMALL_SIZES, {}, {})


# --- training mode ---------------------------------------------------------------------------


def _torch_bn_stats(torch_model):
    return {
        k: v.numpy()
        for k, v in torch_model.state_dict().items()
        if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


@pytest.mark.slow
def test_inception_v3_training_matches_torchvision(torch):
    """Training mode: (logits, aux_logits) and the updated BatchNorm statistics as torchvision.

    Dropout is off (rate 0) so that the outputs are deterministic and comparable; then the
    default rate 0.5 changes the main logits but not the auxiliary ones, computed before it.
    """
    ref = _reference(torch, "inception_v3", dropout=0.0)
    randomize_batchnorm_stats(torch, ref)
    # Copies: from_torch's arrays share memory with the tensors, which ref's training step
    # below updates in place.
    state_dict = {k: v.clone() for k, v in ref.state_dict().items()}
    variables = convert.from_torch("inception_v3", state_dict)
    x = np.random.default_rng(0).standard_normal((2, 299, 299, 3)).astype(np.float32)
    ref.train()
    with torch.no_grad():
        want = ref(_nchw(torch, x))
    assert type(want).__name__ == "InceptionOutputs"

    model = jaxcnn.create_model("inception_v3", dropout_rate=0.0)
    out, state = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    assert isinstance(out, InceptionOutputs)
    for field, tol in TRAIN_REL_TOL.items():
        got, exp = getattr(out, field), getattr(want, field).numpy()
        assert got.shape == exp.shape == (2, 1000) and got.dtype == jnp.float32
        scale = float(np.abs(exp).max())
        print(f"{field}: max |diff| / scale {float(np.max(np.abs(got - exp))) / scale:.3g}")
        np.testing.assert_allclose(got, exp, rtol=tol, atol=tol * scale, err_msg=field)
    stats = variables_to_state_dict({"batch_stats": state["batch_stats"]})
    want_stats = _torch_bn_stats(ref)
    assert set(stats) == set(want_stats)
    assert any(k.startswith("AuxLogits.") for k in stats)
    for k, v in want_stats.items():
        if k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(stats[k], v, err_msg=k)
        else:  # relative to each statistic's scale, as the logits
            tol = STATS_REL_TOL * float(np.max(np.abs(v)))
            np.testing.assert_allclose(stats[k], v, rtol=STATS_REL_TOL, atol=tol, err_msg=k)

    # Default dropout needs the "dropout" RNG; it acts after the auxiliary head.
    model = jaxcnn.create_model("inception_v3")
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    dropped, _ = model.apply(
        variables,
        jnp.asarray(x),
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(0)},
    )
    np.testing.assert_array_equal(dropped.aux_logits, out.aux_logits)
    assert not np.allclose(dropped.logits, out.logits)

    # Without the auxiliary head, training returns the logits alone (here the same ones).
    model = jaxcnn.create_model("inception_v3", aux_logits=False, dropout_rate=0.0)
    noaux = {c: {k: v for k, v in t.items() if k != "AuxLogits"} for c, t in variables.items()}
    logits, state = model.apply(noaux, jnp.asarray(x), train=True, mutable=["batch_stats"])
    assert isinstance(logits, jax.Array)
    np.testing.assert_array_equal(logits, out.logits)
    assert "AuxLogits" not in state["batch_stats"]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_output_shapes_and_dtypes(config):
    """Abstractly (jax.eval_shape): float32 logits even when computing in bfloat16."""
    name, kw, _, _, (h, w) = CONFIGS[config]
    model = jaxcnn.create_model(name, dtype=jnp.bfloat16, **kw)
    x = jax.ShapeDtypeStruct((3, h, w, 3), jnp.float32)
    variables = _abstract_variables(config)  # parameters stay float32 whatever the dtype
    y = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert (y.shape, y.dtype) == ((3, 1000), jnp.float32)
    out = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
        )[0],
        variables,
        x,
    )
    outs = out if isinstance(out, tuple) else (out,)
    assert isinstance(out, InceptionOutputs) == (name == "inception_v3" and not kw)
    for o in outs:
        assert (o.shape, o.dtype) == ((3, 1000), jnp.float32)


# --- initialisation --------------------------------------------------------------------------


@pytest.mark.slow
def test_inception_v3_init_matches_torchvision(torch):
    """trunc_normal(std 0.1) for convolutions, 0.001 for AuxLogits.fc, BN 1 / 0.

    torchvision sets `stddev = 0.01` on the AuxLogits.conv1 wrapper, which its init loop
    never reads (it looks at the Conv2d inside), so that convolution gets std 0.1 too. The
    head is initialised alone: eager init compiles the RNG once per kernel shape (~1 s each
    on CPU), so the whole network would take a minute.
    """
    ref = _reference(torch, "inception_v3")
    assert float(ref.AuxLogits.conv1.conv.weight.detach().std()) == pytest.approx(0.1, rel=0.01)
    assert float(ref.AuxLogits.fc.weight.detach().std()) == pytest.approx(0.001, rel=0.01)

    params = InceptionAux(1000).init(jax.random.key(0), jnp.zeros((1, 17, 17, 768)))["params"]
    for kernel in (params["conv0"]["conv"]["kernel"], params["conv1"]["conv"]["kernel"]):
        assert float(jnp.std(kernel)) == pytest.approx(0.1, rel=0.01)
    assert float(jnp.std(params["fc"]["kernel"])) == pytest.approx(0.001, rel=0.01)
    assert float(jnp.max(jnp.abs(params["fc"]["bias"]))) <= 1 / np.sqrt(768)  # torch default
    np.testing.assert_array_equal(params["conv1"]["bn"]["scale"], 1.0)
    np.testing.assert_array_equal(params["conv1"]["bn"]["bias"], 0.0)


def test_timm_blocks_use_pytorch_default_init():
    """timm leaves these models at PyTorch's default U(+-1/sqrt(fan_in)) (Mixed3a's conv)."""
    params = Mixed3a().init(jax.random.key(0), jnp.zeros((1, 7, 7, 64)))["params"]
    kernel, bound = params["conv"]["conv"]["kernel"], 1 / np.sqrt(9 * 64)
    assert 0.95 * bound < float(jnp.max(jnp.abs(kernel))) <= bound
    assert float(jnp.std(kernel)) == pytest.approx(bound / np.sqrt(3), rel=0.02)
    assert set(params["conv"]["conv"]) == {"kernel"}  # conv -> BN: no bias


# --- input checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
def test_min_input_size_is_exact(config):
    """The smallest input works; one less in H, and separately in W, is check_input's error."""
    name, kw, _, _, (h, w) = CONFIGS[config]
    model = jaxcnn.create_model(name, **kw)

    def init(shape, train=False):
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        return jax.eval_shape(lambda x: model.init(rngs, x, train=train), x)

    for train in (False, True):
        init((2, h, w, 3), train)
    smallest = rf"inception.*smallest valid input is \(N, {h}, {w}, 3\)"
    for shape in [(2, h - 1, w, 3), (2, h, w - 1, 3)]:
        for train in (False, True):
            with pytest.raises(ValueError, match=smallest):
                init(shape, train)


def test_min_input_size_matches_the_references(torch):
    """The references run at the minimum and fail one pixel below it, in H and in W.

    Inception-v3 with the auxiliary head fails below 299 x 299 in training only (evaluation
    skips the head); jaxcnn asks for 299 in both modes (see `InceptionV3`).
    """
    cases = [
        (_reference(torch, "inception_v3", aux_logits=False), (75, 75), False),
        (_reference(torch, "inception_v3"), (299, 299), True),
        (_reference(torch, "inception_v4"), (75, 75), False),
        (_reference(torch, "inception_resnet_v2"), (75, 75), False),
    ]
    # torchvision evaluates the aux-head model below 299 (jaxcnn does not: see InceptionV3).
    with torch.no_grad():
        cases[1][0].eval()(torch.zeros(1, 3, 75, 75))
    for ref, (h, w), train in cases:
        ref.train(train)
        # Batch 2: training BatchNorm needs two values per channel on the 1 x 1 aux map.
        with torch.no_grad():
            if not train:  # the training run at 299 is test_inception_v3_training_...
                ref(torch.zeros(2, 3, h, w))
            for hh, ww in [(h - 1, w), (h, w - 1)]:
                with pytest.raises(RuntimeError):
                    ref(torch.zeros(2, 3, hh, ww))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_malformed_input_is_a_clear_error(config):
    name, kw, _, _, (h, w) = CONFIGS[config]
    model = jaxcnn.create_model(name, **kw)
    init = lambda x: model.init(jax.random.key(0), x)  # noqa: E731
    smallest = rf"smallest valid input is \(N, {h}, {w}, 3\)"
    with pytest.raises(ValueError, match=rf"3 channels.*{smallest}"):
        jax.eval_shape(init, jax.ShapeDtypeStruct((1, h, w, 1), jnp.float32))
    with pytest.raises(ValueError, match=rf"rank 4.*{smallest}"):
        jax.eval_shape(init, jax.ShapeDtypeStruct((h, w, 3), jnp.float32))
