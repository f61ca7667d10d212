"""Every registered model against one table of what it must be (tests/models/expected.py):
its size, its input limits, the structure of its torch reference, its outputs, and a training
step.

The family files (test_lenet.py, ...) hold only what is particular to a family: parity with
torch in numbers, the papers' own structure, initialisation and arithmetic.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.convert.mapping import variables_to_state_dict
from jaxcnn.models import get_spec
from jaxcnn.xla import run_once_compiler_options
from tests.models.expected import EXPECTED, VARIANTS

MODELS = jaxcnn.list_models()
CASES = [(name, name, {}, EXPECTED[name]) for name in EXPECTED] + [
    (case, *VARIANTS[case]) for case in VARIANTS
]
# googlenet_2014's auxiliary heads admit 191-238 pixels only (test_googlenet.py).
LIMIT_CASES = [c for c in CASES if c[0] != "googlenet_2014-aux"]


def _ids(cases):
    return [c[0] for c in cases]


def _shape_struct(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _rngs():
    return {"params": jax.random.key(0), "dropout": jax.random.key(1)}


def _abstract_init(model, shape, train=False):
    """(output, variables) of `model.init` on an input of `shape`, abstractly."""
    return jax.eval_shape(
        lambda x: model.init_with_output(_rngs(), x, train=train), _shape_struct(*shape)
    )


def _init(model, x):
    """Real variables, compiled with the options for programs that run once: the same values
    as XLA's defaults, in a fraction of the compilation time."""
    init = jax.jit(
        model.init, static_argnames="train", compiler_options=run_once_compiler_options()
    )
    return init(jax.random.key(0), x, train=False)


def _num_params(variables) -> int:
    return sum(v.size for v in jax.tree.leaves(variables["params"]))


def test_registry_lists_the_lineage():
    """Every registered model has its row in the table, and no row lacks a model."""
    assert MODELS == sorted(EXPECTED)


@pytest.mark.parametrize("case, name, kwargs, expected", CASES, ids=_ids(CASES))
def test_parameter_count(case, name, kwargs, expected):
    """The count at the design input, the collections, and the logits there."""
    spec = get_spec(name)
    assert spec.input_size == expected.input_size
    assert spec.num_classes == expected.classes
    if not kwargs:
        assert spec.num_params == expected.params
    model = jaxcnn.create_model(name, **kwargs)
    y, variables = _abstract_init(model, (1, *spec.input_size))
    assert _num_params(variables) == expected.params
    assert set(variables) == ({"params", "batch_stats"} if expected.batch_stats else {"params"})
    assert (y.shape, y.dtype) == ((1, expected.classes), jnp.float32)


@pytest.mark.parametrize("case, name, kwargs, expected", CASES, ids=_ids(CASES))
def test_structure_is_the_references(torch, case, name, kwargs, expected):
    """The reference the registry names has the same state dict, key for key and shape for
    shape (built on torch's meta device: no memory, no initialisation)."""
    spec = get_spec(name)
    got = (spec.reference, spec.reference_name, spec.reference_kwargs) if spec.reference else None
    assert got == expected.reference
    if spec.reference is None:
        return
    with torch.device("meta"):
        if spec.reference == "torchvision":
            import torchvision

            ref = getattr(torchvision.models, spec.reference_name)(
                weights=None, **{**spec.reference_kwargs, **kwargs}
            )
        else:
            import timm

            ref = timm.create_model(
                spec.reference_name, pretrained=False, **{**spec.reference_kwargs, **kwargs}
            )
    assert sum(p.numel() for p in ref.parameters()) == expected.params
    model = jaxcnn.create_model(name, **kwargs)
    _, variables = _abstract_init(model, (1, *spec.input_size))
    zeros = jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), variables)
    ours = {k: tuple(np.shape(v)) for k, v in variables_to_state_dict(zeros).items()}
    assert ours == {k: tuple(v.shape) for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("case, name, kwargs, expected", LIMIT_CASES, ids=_ids(LIMIT_CASES))
def test_input_size_limits_are_exact(case, name, kwargs, expected):
    """The smallest (and largest) input works in both modes; one pixel beyond, in H or in W,
    is a ValueError naming the model and the valid range."""
    spec = get_spec(name)
    if not kwargs:
        assert spec.min_input_size == expected.min_size
    (h, w), c = expected.min_size, spec.input_size[2]
    model = jaxcnn.create_model(name, **kwargs)
    smallest = re.escape(f"(N, {h}, {w}, {c})")
    for train in (False, True):
        y, _ = _abstract_init(model, (2, h, w, c), train)
        for o in y if isinstance(y, tuple) else (y,):
            assert (o.shape, o.dtype) == ((2, expected.classes), jnp.float32)
        for shape in [(2, h - 1, w, c), (2, h, w - 1, c)]:
            with pytest.raises(ValueError, match=rf"^{name}: .* too small; .*{smallest}"):
                _abstract_init(model, shape, train)
    if expected.max_size is None:
        return
    (hmax, wmax), (h0, w0, _) = expected.max_size, spec.input_size
    _abstract_init(model, (1, hmax, wmax, c))
    largest = re.escape(f"(N, {h}, {w}, {c}) to (N, {hmax}, {wmax}, {c})")
    for hw in [(hmax + 1, w0), (h0, wmax + 1), *expected.too_large]:
        with pytest.raises(ValueError, match=rf"^{name}: .* too large; .*{largest}"):
            _abstract_init(model, (1, *hw, c))


@pytest.mark.parametrize("name", MODELS)
def test_malformed_input_is_a_clear_error(name):
    """Wrong channel counts, a missing batch axis and NCHW layout, at the smallest and the
    design size: a ValueError naming the model and the smallest valid input."""
    spec = get_spec(name)
    (h, w), (h0, w0, c) = spec.min_input_size, spec.input_size
    model = jaxcnn.create_model(name)
    smallest = re.escape(f"The smallest valid input is (N, {h}, {w}, {c})")
    for hh, ww in [(h, w), (h0, w0)]:
        for other in (c + 1, 3 if c == 1 else 1):
            with pytest.raises(ValueError, match=rf"^{name}: .*{c} channels.*{smallest}"):
                _abstract_init(model, (1, hh, ww, other))
        with pytest.raises(ValueError, match=rf"^{name}: .*rank 4.*{smallest}"):
            _abstract_init(model, (hh, ww, c))
        with pytest.raises(ValueError, match=rf"^{name}: .*{smallest}"):
            _abstract_init(model, (1, c, hh, ww))


@pytest.mark.parametrize("case, name, kwargs, expected", CASES, ids=_ids(CASES))
def test_num_classes_and_bfloat16_outputs(case, name, kwargs, expected):
    """Any number of classes; computing in bfloat16 keeps float32 parameters and returns
    float32 logits, in evaluation and in training (with the auxiliary logits, if any)."""
    model = jaxcnn.create_model(name, num_classes=7, dtype=jnp.bfloat16, **kwargs)
    shape = (2, *get_spec(name).input_size)
    y, variables = _abstract_init(model, shape)
    assert {v.dtype for v in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
    assert (y.shape, y.dtype) == ((2, 7), jnp.float32)
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, rngs=_rngs(), mutable=["batch_stats"])[0],
        variables,
        _shape_struct(*shape),
    )
    if expected.train_outputs is None:
        outs = (out,)
        assert not isinstance(out, tuple)
    else:
        outs = out
        assert (type(out).__name__, len(out)) == expected.train_outputs
    for o in outs:
        assert (o.shape, o.dtype) == ((2, 7), jnp.float32)


# bfloat16 against float32 logits on the same variables: (absolute tolerance, tolerance
# relative to the largest float32 logit). bfloat16 keeps about 3 significant digits.
BFLOAT16_TOLERANCE = {
    "lenet5": (0.1, 0.0),
    "lenet5_1998": (0.1, 0.0),
    "resnet20": (0.0, 0.1),
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.slow] * (n == "resnet20")) for n in BFLOAT16_TOLERANCE],
)
def test_bfloat16_compute_is_close_to_float32(name):
    shape = (2, *get_spec(name).input_size)
    model, model16 = jaxcnn.create_model(name), jaxcnn.create_model(name, dtype=jnp.bfloat16)
    variables = _init(model, jnp.zeros(shape))
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables["params"]))
    x = jax.random.normal(jax.random.key(1), shape)
    y, y16 = jax.jit(lambda v, x: (model.apply(v, x), model16.apply(v, x)))(variables, x)
    assert y.shape == y16.shape == (2, get_spec(name).num_classes)
    assert y.dtype == y16.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))
    atol, rel = BFLOAT16_TOLERANCE[name]
    np.testing.assert_allclose(y16, y, atol=atol + rel * float(jnp.abs(y).max()))


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
    variables = _init(model, x)
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


def test_create_model_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet51'.*resnet50"):
        jaxcnn.create_model("resnet51")
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive int"):
        jaxcnn.create_model("resnet18", num_classes=0)
