"""ResNets: torchvision parity, the CIFAR ResNets' counts by the paper, init, option A
shortcuts, 1x1 inputs. Counts, structure against torchvision's, limits, outputs and a training
step are test_registry.py's."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import convert
from jaxcnn.models.resnet import BasicBlock, Bottleneck, zero_pad_shortcut
from jaxcnn.xla import run_once_compiler_options
from tests.helpers import to_torch_nchw
from tests.models.expected import EXPECTED
from tests.models.parity import assert_parity, randomize_batchnorm_stats

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
CIFAR_BLOCKS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
# He et al. 2015, Table 6, "# params" column, with the number of decimals printed there.
PAPER_TABLE6_MILLIONS = {
    "resnet20": (0.27, 2),
    "resnet32": (0.46, 2),
    "resnet44": (0.66, 2),
    "resnet56": (0.85, 2),
    "resnet110": (1.7, 1),
}

# Parity is judged relative to the logit scale (max |torch logit| at that input size): with
# the randomised BatchNorm statistics (scales up to 1.5, variances down to 0.5) the residual
# stream grows with depth, so random-init logits reach ~1e3 for ResNet-101 and ~1e7 for
# ResNet-152 at 45x39, while they stay ~2-80 at 1x1. Measured max |diff| / scale: 6e-7
# (resnet18) to 1.6e-6 (resnet101 at 32x32), i.e. float32 rounding accumulated over depth.
PARITY_REL_TOL = 4e-6
PARITY_SIZES = [(32, 32), (45, 39), (1, 1)]  # small, odd, and the smallest valid input
# Training-mode forward: BatchNorm normalises by batch statistics, on few values per channel
# in layer4 (batch 4 x 2x2), which amplifies rounding; measured max |diff| / scale 2.9e-6.
TRAIN_REL_TOL = 1e-5
# Running statistics after one step: measured max |diff| 2.7e-7 (means), 1.1e-6 (variances
# of ~1).
STATS_RTOL, STATS_ATOL = 1e-5, 1e-6


def _variables_shapes(name, **kw):
    """Abstract variables of `name` at its design input size (free: jax.eval_shape)."""
    model = jaxcnn.create_model(name, **kw)
    h, w, c = jaxcnn.models.get_spec(name).input_size
    x = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


def _torch_reference(torch, name):
    spec = jaxcnn.models.get_spec(name)
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, spec.reference_name)(**spec.reference_kwargs, weights=None)


# --- parameter counts ---------------------------------------------------------------------


def test_names_are_the_registrys():
    assert sorted(IMAGENET + CIFAR) == [n for n in jaxcnn.list_models() if n.startswith("resnet")]


def _cifar_count_by_hand(n: int, num_classes: int = 10) -> int:
    """Paper Section 4.2: bias-free 3x3 convs, BatchNorm (scale, bias), parameter-free
    shortcuts (option A), global average pool, fc with bias."""
    total = 3 * 3 * 3 * 16 + 2 * 16  # conv1, bn1
    c_in = 16
    for c in (16, 32, 64):
        for _ in range(n):
            total += 3 * 3 * c_in * c + 3 * 3 * c * c + 2 * 2 * c  # conv1, conv2, bn1, bn2
            c_in = c
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_counts_match_paper(name):
    """The counts the models are held to (test_registry.py) are the paper's."""
    count = EXPECTED[name].params
    assert count == _cifar_count_by_hand(CIFAR_BLOCKS[name])
    millions, decimals = PAPER_TABLE6_MILLIONS[name]
    assert round(count / 1e6, decimals) == millions
    # 6n + 2 weighted layers: the name is the depth.
    assert name == f"resnet{6 * CIFAR_BLOCKS[name] + 2}"


def test_cifar_layer_names_follow_torchvision_conventions():
    params = _variables_shapes("resnet20")["params"]
    blocks = [f"layer{i}.{j}" for i in (1, 2, 3) for j in range(3)]
    assert set(params) == {"conv1", "bn1", "fc", *blocks}
    for b in blocks:  # option A: no "downsample.*" anywhere, even in the stride-2 blocks
        assert set(params[b]) == {"conv1", "bn1", "conv2", "bn2"}
    assert params["layer2.0"]["conv1"]["kernel"].shape == (3, 3, 16, 32)
    assert params["fc"]["kernel"].shape == (64, 10)


# --- parity with torchvision ---------------------------------------------------------------


def _torch_logit_scale(torch, torch_model, size, seed=0):
    """max |logit| of torch on the input `assert_parity` draws for `sizes=[size]`.

    assert_parity draws its batch of 2 with `np.random.default_rng(seed)`; any input of the
    same distribution would do for a scale.
    """
    randomize_batchnorm_stats(torch, torch_model, seed)
    torch_model.eval()
    x = np.random.default_rng(seed).standard_normal((2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        return float(torch_model(to_torch_nchw(torch, x)).abs().max())


@pytest.mark.parametrize("name", IMAGENET)
@pytest.mark.slow
def test_parity_with_torchvision(torch, name):
    torch_model = _torch_reference(torch, name)
    num_params = sum(p.numel() for p in torch_model.parameters())
    assert num_params == jaxcnn.models.get_spec(name).num_params
    for size in PARITY_SIZES:
        scale = _torch_logit_scale(torch, torch_model, size)
        worst = assert_parity(
            torch,
            name,
            torch_model,
            [size],
            rtol=PARITY_REL_TOL,
            atol=PARITY_REL_TOL * scale,
        )
        print(f"{name} {size}: max |diff| {worst:.3g}, logit scale {scale:.3g}")


@pytest.mark.slow
def test_train_mode_batchnorm_matches_torch(torch):
    """One training-mode forward of resnet18: same logits and same updated statistics."""
    torch_model = _torch_reference(torch, "resnet18")
    randomize_batchnorm_stats(torch, torch_model, seed=1)
    variables = convert.from_torch("resnet18", torch_model.state_dict())
    model = jaxcnn.create_model("resnet18")
    x = np.random.default_rng(1).standard_normal((4, 64, 48, 3)).astype(np.float32)

    logits, updates = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    # Copies: from_torch's arrays share memory with the torch buffers the step updates.
    old_sd = {k: v.numpy().copy() for k, v in torch_model.state_dict().items()}
    torch_model.train()
    with torch.no_grad():
        ref = torch_model(to_torch_nchw(torch, x)).numpy()

    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(logits, ref, rtol=TRAIN_REL_TOL, atol=TRAIN_REL_TOL * scale)
    new_sd = convert.to_torch("resnet18", {**variables, **updates})
    ref_sd = torch_model.state_dict()
    stats = [k for k in ref_sd if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * 20  # every BatchNorm of resnet18, downsample.1 included
    for k in stats:
        assert not np.allclose(ref_sd[k].numpy(), old_sd[k]), k  # the step moved it
        np.testing.assert_allclose(
            new_sd[k], ref_sd[k].numpy(), rtol=STATS_RTOL, atol=STATS_ATOL, err_msg=k
        )
    for k in (k for k in ref_sd if k.endswith("num_batches_tracked")):
        assert new_sd[k] == ref_sd[k].item() == 8, k  # 7 set by the randomiser, + 1


# --- initialisation ------------------------------------------------------------------------


@functools.cache
def _init(name, **kw):
    """Real variables of `name`, initialised on the smallest input (parameters do not depend
    on the input size), once per process. Compiled with the options for programs that run
    once: the same values as XLA's defaults, in a third of the compilation time."""
    model = jaxcnn.create_model(name, **kw)
    init = jax.jit(model.init, compiler_options=run_once_compiler_options())
    return init(jax.random.key(0), jnp.zeros((1, 1, 1, 3)))


def _bn_scales(params, prefix=()):
    """{(path...): scale} of every BatchNorm in a params tree."""
    out = {}
    for k, v in params.items():
        if "scale" in v:
            out[(*prefix, k)] = np.asarray(v["scale"])
        elif isinstance(v, dict) and "kernel" not in v:
            out.update(_bn_scales(v, (*prefix, k)))
    return out


@pytest.mark.parametrize(("name", "last_bn"), [("resnet50", "bn3"), ("resnet20", "bn2")])
@pytest.mark.slow
def test_zero_init_residual(name, last_bn):
    """Both block types and both model classes (resnet18 is left out: `ResNet` passes the
    option to `BasicBlock` as to `Bottleneck`, and a real init compiles a whole program)."""
    default = _bn_scales(_init(name)["params"])
    assert all(np.all(s == 1) for s in default.values())
    zeroed = _bn_scales(_init(name, zero_init_residual=True)["params"])
    assert set(zeroed) == set(default)
    last = {p for p in zeroed if p[0].startswith("layer") and p[-1] == last_bn}
    assert len(last) == {"resnet50": 16, "resnet20": 9}[name]
    for path, s in zeroed.items():
        np.testing.assert_array_equal(s, 0 if path in last else 1, err_msg=str(path))


def _assert_normal(w, std, what):
    """w looks like N(0, std^2): mean, std within sampling error, tails not truncated."""
    w = np.asarray(w).ravel()
    assert abs(w.mean()) < 5 * std / np.sqrt(w.size), what
    assert abs(w.std() / std - 1) < 0.03, (what, w.std(), std)
    assert np.abs(w).max() > 3.5 * std, what  # a 2-sigma truncated normal would fail this


@pytest.mark.slow
def test_imagenet_init_is_torchvisions():
    params = _init("resnet50")["params"]
    # kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (kh * kw * C_out)).
    _assert_normal(params["conv1"]["kernel"], np.sqrt(2 / (7 * 7 * 64)), "conv1")
    _assert_normal(params["layer1.0"]["conv3"]["kernel"], np.sqrt(2 / 256), "layer1.0.conv3")
    _assert_normal(
        params["layer2.0"]["downsample.0"]["kernel"], np.sqrt(2 / 512), "layer2.0.downsample.0"
    )
    # BatchNorm weight 1, bias 0.
    np.testing.assert_array_equal(params["layer3.2"]["bn2"]["bias"], 0)
    # fc: nn.Linear's default init, U(+-1/sqrt(fan_in)) for weight and bias.
    bound = 1 / np.sqrt(2048)
    for leaf in ("kernel", "bias"):
        w = np.asarray(params["fc"][leaf])
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound, leaf
        assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.1, leaf


def test_cifar_init_is_he_fan_in():
    params = _init("resnet20")["params"]
    # He et al. 2015 ("as in [13]"): N(0, 2 / n), n = k * k * C_in.
    _assert_normal(params["layer3.0"]["conv1"]["kernel"], np.sqrt(2 / (3 * 3 * 32)), "l3.0.conv1")
    _assert_normal(params["layer3.1"]["conv2"]["kernel"], np.sqrt(2 / (3 * 3 * 64)), "l3.1.conv2")


# --- blocks and the option A shortcut -------------------------------------------------------


def test_zero_pad_shortcut_by_hand():
    x = jnp.arange(1 * 4 * 4 * 2, dtype=jnp.float32).reshape(1, 4, 4, 2)
    # x[0, i, j] = [2 * (4i + j), 2 * (4i + j) + 1]; keep (i, j) in {0, 2}^2, append 2 zeros.
    expected = np.array([[[[0, 1, 0, 0], [4, 5, 0, 0]], [[16, 17, 0, 0], [20, 21, 0, 0]]]])
    np.testing.assert_array_equal(zero_pad_shortcut(x, 4, 2), expected)
    # Odd sizes keep ceil(H / 2) rows, like the stride-2, padding-1 3x3 convolution beside it.
    x = jnp.arange(9, dtype=jnp.float32).reshape(1, 3, 3, 1)
    expected = np.array([[[[0, 0], [2, 0]], [[6, 0], [8, 0]]]])
    np.testing.assert_array_equal(zero_pad_shortcut(x, 2, 2), expected)
    with pytest.raises(ValueError, match="features"):
        zero_pad_shortcut(x, 0, 1)


def test_option_a_block_is_parameter_free_shortcut():
    block = BasicBlock(planes=32, stride=2, shortcut="zero_pad", zero_init_residual=True)
    x = jax.random.normal(jax.random.key(1), (2, 7, 9, 16))
    variables = block.init(jax.random.key(0), x)
    assert set(variables["params"]) == {"conv1", "bn1", "conv2", "bn2"}
    assert _count(variables["params"]) == 9 * 16 * 32 + 9 * 32 * 32 + 4 * 32
    # With bn2's scale (and bias) zero the residual branch is 0: the block is relu(shortcut).
    y = block.apply(variables, x)
    assert y.shape == (2, 4, 5, 32)
    np.testing.assert_array_equal(y, jax.nn.relu(zero_pad_shortcut(x, 32, 2)))


@pytest.mark.parametrize(
    ("block", "c_in", "c_out", "shortcut_params"),
    [
        (BasicBlock(planes=32, stride=2), 16, 32, 16 * 32 + 2 * 32),
        (BasicBlock(planes=32, stride=2, shortcut="zero_pad"), 16, 32, 0),
        (Bottleneck(planes=16, stride=2), 32, 64, 32 * 64 + 2 * 64),
    ],
    ids=["basic-projection", "basic-zero_pad", "bottleneck-projection"],
)
def test_stride2_block_shapes(block, c_in, c_out, shortcut_params):
    x = jnp.ones((2, 7, 9, c_in))
    variables = jax.eval_shape(block.init, jax.random.key(0), x)
    y = jax.eval_shape(block.apply, variables, x)
    assert y.shape == (2, 4, 5, c_out)  # ceil(7 / 2), ceil(9 / 2)
    shortcut = {k: v for k, v in variables["params"].items() if k.startswith("downsample")}
    assert _count(shortcut) == shortcut_params


def test_bad_shortcut_option():
    with pytest.raises(ValueError, match="shortcut"):
        BasicBlock(planes=8, stride=2, shortcut="pad").init(
            jax.random.key(0), jnp.ones((1, 4, 4, 4))
        )


# --- forward, dtype and input checks --------------------------------------------------------


def test_cifar_count_with_100_classes():
    wide = _variables_shapes("resnet20", num_classes=100)
    assert _count(wide["params"]) == _cifar_count_by_hand(3, num_classes=100)
    model = jaxcnn.create_model("resnet20", num_classes=100)
    assert jax.eval_shape(model.apply, wide, jnp.zeros((2, 32, 32, 3))).shape == (2, 100)


def test_min_input_size_runs():
    """1x1 inputs, the smallest (test_registry.py), really run (the ImageNet models are
    compared with torch at 1x1 above)."""
    x = jax.random.normal(jax.random.key(1), (2, 1, 1, 3))
    model = jaxcnn.create_model("resnet20")
    logits, _ = model.apply(_init("resnet20"), x, train=True, mutable=["batch_stats"])
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
