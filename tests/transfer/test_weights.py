"""Pretrained weights: torchvision checkpoints written to .pth / .safetensors, new heads, and
clear errors for another architecture or class count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import transfer


def _randomise_bn(torch, model):
    """Non-trivial running statistics, so that loading them wrongly shows in the outputs."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.num_batches_tracked.fill_(7)


@pytest.fixture(scope="module")
def resnet18_files(torch, tmp_path_factory):
    """torchvision's resnet18 (random init) as .pth and .safetensors, and its logits."""
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    _randomise_bn(torch, model)
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    d = tmp_path_factory.mktemp("weights")
    sd = model.state_dict()
    torch.save(sd, d / "resnet18.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "resnet18.safetensors"))
    return {"pth": d / "resnet18.pth", "safetensors": d / "resnet18.safetensors", "x": x,
            "logits": logits, "state_dict": sd}  # fmt: skip


@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_load_pretrained_matches_torchvision(resnet18_files, suffix):
    model, variables = transfer.load_pretrained("resnet18", resnet18_files[suffix])
    assert model.num_classes == 1000
    out = model.apply(variables, jnp.asarray(resnet18_files["x"]), train=False)
    ref = resnet18_files["logits"]
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert int(variables["batch_stats"]["bn1"]["num_batches_tracked"]) == 7


@pytest.mark.slow
def test_load_pretrained_with_a_new_head(resnet18_files):
    key = jax.random.key(3)
    _, kept = transfer.load_pretrained("resnet18", resnet18_files["pth"])
    model, variables = transfer.load_pretrained(
        "resnet18", resnet18_files["safetensors"], num_classes=10, rng=key
    )
    assert model.num_classes == 10
    out = model.apply(variables, jnp.asarray(resnet18_files["x"]), train=False)
    assert out.shape == (2, 10)
    # The head is what a fresh 10-class model initialised with `key` has ...
    fresh = jax.jit(
        lambda k: jaxcnn.create_model("resnet18", num_classes=10).init(
            k, jnp.zeros((1, 224, 224, 3)), train=False
        )["params"]["fc"]
    )(key)
    for leaf in ("kernel", "bias"):
        np.testing.assert_array_equal(variables["params"]["fc"][leaf], fresh[leaf])
    # ... and everything else is the checkpoint's.
    for coll in ("params", "batch_stats"):
        for layer, tree in kept[coll].items():
            if layer == "fc":
                continue
            for a, b in zip(
                jax.tree.leaves(tree), jax.tree.leaves(variables[coll][layer]), strict=True
            ):
                np.testing.assert_array_equal(a, b)


def test_class_count_mismatch_without_rng_is_an_error(resnet18_files):
    with pytest.raises(ValueError, match=r"1000-class heads \(fc\) but num_classes=10.*rng="):
        transfer.load_pretrained("resnet18", resnet18_files["pth"], num_classes=10)


def test_class_count_is_read_from_the_file(torch, tmp_path):
    import torchvision

    sd = torchvision.models.resnet18(num_classes=7).state_dict()
    torch.save(sd, tmp_path / "r18_7.pth")
    model, variables = transfer.load_pretrained("resnet18", tmp_path / "r18_7.pth")
    assert model.num_classes == 7 and variables["params"]["fc"]["kernel"].shape == (512, 7)
    # A 7-class file asked for 7 classes needs no new head.
    model, _ = transfer.load_pretrained("resnet18", tmp_path / "r18_7.pth", num_classes=7)
    assert model.num_classes == 7


def test_mismatched_architecture_names_the_keys(resnet18_files):
    with pytest.raises(ValueError, match=r"resnet34: .*missing keys \(\d+\): .*layer1\.2\."):
        transfer.load_pretrained("resnet34", resnet18_files["pth"])
    with pytest.raises(ValueError, match=r"vgg11: .*unexpected keys"):
        transfer.load_pretrained("vgg11", resnet18_files["state_dict"])
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        transfer.load_pretrained("resnet18", resnet18_files["pth"].parent / "missing.pth")
    with pytest.raises(TypeError, match="weight source must be a path"):
        transfer.load_pretrained("resnet18", 42)


@pytest.mark.slow
def test_googlenet_file_with_auxiliary_heads_says_how_to_load_it(torch):
    import torchvision

    torch.manual_seed(0)
    sd = torchvision.models.googlenet(aux_logits=True, init_weights=True).state_dict()
    with pytest.raises(ValueError, match=r"unexpected keys.*aux1\..*pass aux_logits=True"):
        transfer.load_pretrained("googlenet", sd)
    model, variables = transfer.load_pretrained(
        "googlenet", sd, num_classes=5, rng=jax.random.key(0), aux_logits=True
    )
    assert model.num_classes == 5 and model.aux_logits
    p = variables["params"]
    assert p["fc"]["kernel"].shape == (1024, 5)
    assert p["aux1"]["fc2"]["kernel"].shape == (1024, 5) == p["aux2"]["fc2"]["kernel"].shape
    # The auxiliary heads' other layers are the checkpoint's.
    np.testing.assert_array_equal(p["aux1"]["fc1"]["kernel"], sd["aux1.fc1.weight"].numpy().T)


@pytest.mark.slow
def test_replace_head_keeps_everything_else_and_checks_the_architecture():
    model = jaxcnn.create_model("lenet5", num_classes=10)
    x = jnp.zeros((1, 32, 32, 1))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    new = transfer.replace_head("lenet5", variables, 3, rng=jax.random.key(1))
    assert new["params"]["fc3"]["kernel"].shape == (84, 3)
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert new["params"][layer]["kernel"] is variables["params"][layer]["kernel"]
    ref = jax.jit(jaxcnn.create_model("lenet5", num_classes=3).init)(jax.random.key(1), x)
    np.testing.assert_array_equal(new["params"]["fc3"]["bias"], ref["params"]["fc3"]["bias"])
    # The same with the module instead of the name.
    again = transfer.replace_head(
        model, variables, 3, rng=jax.random.key(1), input_shape=(32, 32, 1)
    )
    np.testing.assert_array_equal(again["params"]["fc3"]["kernel"], new["params"]["fc3"]["kernel"])

    with pytest.raises(ValueError, match=r"do not fit lenet5_1998: missing .*c1"):
        transfer.replace_head("lenet5_1998", variables, 3, rng=jax.random.key(1))
    broken = {"params": {**variables["params"], "conv2": {"kernel": jnp.zeros((3, 3, 6, 16)),
                                                         "bias": jnp.zeros(16)}}}  # fmt: skip
    with pytest.raises(ValueError, match=r"shape mismatches.*conv2/kernel: given \(3, 3, 6, 16\)"):
        transfer.replace_head("lenet5", broken, 3, rng=jax.random.key(1))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        transfer.replace_head("lenet5", variables, 0, rng=jax.random.key(1))
