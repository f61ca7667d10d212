"""Inception-v3 (torchvision), Inception-v4 and Inception-ResNet-v2 (timm): parity,
initialisation, training-mode outputs, and the references' own input limits. Counts, structure
against the references, limits, outputs and a training step are test_registry.py's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import convert
from jaxcnn.convert.mapping import variables_to_state_dict
from jaxcnn.models import get_spec
from jaxcnn.models.inception import InceptionAux, InceptionOutputs, Mixed3a
from tests.models.expected import EXPECTED, VARIANTS
from tests.models.parity import assert_parity, randomize_batchnorm_stats

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


@pytest.mark.slow
def test_min_input_size_matches_the_references(torch):
    """The references run at the minimum and fail one pixel below it, in H and in W.

    Inception-v3 with the auxiliary head fails below 299 x 299 in training only (evaluation
    skips the head); jaxcnn asks for 299 in both modes (see `InceptionV3`).
    """
    noaux = VARIANTS["inception_v3-noaux"][2]
    cases = [  # (reference, the smallest input jaxcnn admits (test_registry.py), training)
        (_reference(torch, "inception_v3", aux_logits=False), noaux.min_size, False),
        (_reference(torch, "inception_v3"), EXPECTED["inception_v3"].min_size, True),
        (_reference(torch, "inception_v4"), EXPECTED["inception_v4"].min_size, False),
        (_reference(torch, "inception_resnet_v2"), EXPECTED["inception_resnet_v2"].min_size, False),
    ]
    assert [size for _, size, _ in cases] == [(75, 75), (299, 299), (75, 75), (75, 75)]
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
