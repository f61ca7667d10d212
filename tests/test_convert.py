"""jaxcnn.convert: weight files and the torch <-> jaxcnn mapping (models' parity is per family)."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxcnn
from jaxcnn import convert


def _state_dict():
    rng = np.random.default_rng(0)
    return {
        "features.0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "features.0.bias": rng.standard_normal(4).astype(np.float32),
        "bn.num_batches_tracked": np.array(5, np.int64),
    }


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_and_load_round_trip(tmp_path, suffix):
    sd = _state_dict()
    path = tmp_path / f"w{suffix}"
    convert.save_weights(path, sd)
    back = convert.load_weights(path)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
        assert back[k].dtype == sd[k].dtype
        assert back[k].shape == sd[k].shape, k  # a 0-d scalar stays 0-d


def test_load_pth_state_dict_and_wrapped_checkpoint(tmp_path, torch):
    sd = {k: torch.from_numpy(v) for k, v in _state_dict().items()}
    sd["half"] = torch.ones(2, dtype=torch.bfloat16)
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("plain.pth", "wrapped.pt"):
        back = convert.load_weights(tmp_path / name)
        assert set(back) == set(sd)
        np.testing.assert_array_equal(back["features.0.weight"], sd["features.0.weight"].numpy())
        assert back["half"].dtype.name == "bfloat16"


class _Payload:  # pickled by reference: loading it would run code from this module
    def __reduce__(self):
        return (print, ("this must never run",))


def test_load_pth_never_unpickles_code(tmp_path, torch):
    torch.save({"weight": torch.ones(1), "evil": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"never unpickles code"):
        convert.load_weights(tmp_path / "evil.pth")


def test_load_weights_errors(tmp_path, torch):
    with pytest.raises(FileNotFoundError, match=r"no such file"):
        convert.load_weights(tmp_path / "missing.safetensors")
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"unknown weight file type '.h5'"):
        convert.load_weights(tmp_path / "w.h5")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"holds no state dict"):
        convert.load_weights(tmp_path / "list.pth")


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "w.safetensors"
    convert.save_weights(path, _state_dict())
    before = path.read_bytes()
    with pytest.raises(Exception):
        convert.save_weights(path, {"bad": np.array([object()], dtype=object)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left
    with pytest.raises(ValueError, match=r"unsupported suffix"):
        convert.save_weights(tmp_path / "w.pth", _state_dict())


def test_safetensors_and_npz_work_without_torch(tmp_path):
    convert.save_weights(tmp_path / "w.safetensors", _state_dict())
    convert.save_weights(tmp_path / "w.npz", _state_dict())
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from jaxcnn import convert\n"
        f"a = convert.load_weights({str(tmp_path / 'w.safetensors')!r})\n"
        f"b = convert.load_weights({str(tmp_path / 'w.npz')!r})\n"
        "assert set(a) == set(b) == {'features.0.weight', 'features.0.bias', "
        "'bn.num_batches_tracked'}\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_model_round_trip_is_exact(torch):
    model = jaxcnn.create_model("resnet18", num_classes=5)
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x))(np.zeros((1, 32, 32, 3)))
    sd = convert.to_torch("resnet18", variables, num_classes=5)
    ref = __import__("torchvision").models.resnet18(num_classes=5).state_dict()
    assert set(sd) == set(ref)
    for k, v in ref.items():
        assert sd[k].shape == tuple(v.shape), k
        assert sd[k].dtype == v.numpy().dtype, k
    back = convert.from_torch("resnet18", sd, num_classes=5)
    flat_a = jax.tree_util.tree_flatten_with_path(variables)[0]
    flat_b = dict(jax.tree_util.tree_flatten_with_path(back)[0])
    assert len(flat_a) == len(flat_b)
    for path, leaf in flat_a:
        np.testing.assert_array_equal(np.asarray(leaf), flat_b[path])
        assert np.asarray(leaf).dtype == flat_b[path].dtype


def test_from_torch_names_what_does_not_match(torch):
    tv = __import__("torchvision").models
    sd = tv.resnet18(num_classes=10).state_dict()
    with pytest.raises(
        ValueError,
        match=r"shape mismatches \(2\): fc.bias: checkpoint \(10,\), model expects "
        r"\(1000,\), fc.weight: checkpoint \(10, 512\), model expects \(1000, 512\).*"
        r"num_classes=",
    ):
        convert.from_torch("resnet18", sd)
    sd = tv.resnet18().state_dict()
    sd["extra.weight"] = sd.pop("layer1.0.conv1.weight")
    with pytest.raises(
        ValueError,
        match=r"missing keys \(1\): layer1.0.conv1.weight.*"
        r"unexpected keys \(1\): extra.weight",
    ):
        convert.from_torch("resnet18", sd)
    with pytest.raises(ValueError, match=r"unknown model"):
        convert.from_torch("resnet19", sd)


def test_from_torch_copies(torch):
    """Converted variables never alias the torch tensors (a later torch step must not leak)."""
    m = __import__("torchvision").models.resnet18(num_classes=3)
    v = convert.from_torch("resnet18", m.state_dict(), num_classes=3)
    before = v["params"]["conv1"]["kernel"].copy()
    with torch.no_grad():
        m.conv1.weight.add_(1.0)
    np.testing.assert_array_equal(v["params"]["conv1"]["kernel"], before)


def test_to_torch_checks_the_variables_belong_to_the_model():
    partial = {"params": {"fc": {"kernel": np.zeros((512, 1000)), "bias": np.zeros(1000)}}}
    with pytest.raises(ValueError, match=r"resnet18: .*missing keys \(\d+\): bn1.bias"):
        convert.to_torch("resnet18", partial)


def _complex_state_dict(torch):
    sd = {k: torch.from_numpy(v) for k, v in _state_dict().items()}
    sd["features.0.weight"] = torch.complex(sd["features.0.weight"], torch.ones(4, 3, 3, 3))
    return sd


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental:UserWarning")
@pytest.mark.parametrize("dtype", ["complex64", "complex128", "complex32"])
def test_load_weights_refuses_complex_tensors_from_torch(tmp_path, torch, dtype):
    sd = _complex_state_dict(torch)
    sd["features.0.weight"] = sd["features.0.weight"].to(getattr(torch, dtype))
    torch.save(sd, tmp_path / "complex.pth")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("complex.pth", "wrapped.pt"):
        with pytest.raises(TypeError, match=rf"{name}: 'features.0.weight' holds complex values"):
            convert.load_weights(tmp_path / name)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_load_weights_refuses_complex_arrays(tmp_path, suffix):
    sd = _state_dict()
    sd["features.0.bias"] = sd["features.0.bias"] + 1j  # numpy: complex128
    path = tmp_path / f"w{suffix}"
    convert.save_weights(path, sd)  # both formats hold complex arrays
    with pytest.raises(TypeError, match=r"'features.0.bias' holds complex values.*complex64"):
        convert.load_weights(path)


@pytest.mark.slow
def test_from_torch_refuses_complex_weights_instead_of_dropping_the_imaginary_part(torch):
    model = jaxcnn.create_model("lenet5")
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x))(np.zeros((1, 32, 32, 1)))
    sd = {
        k: torch.from_numpy(np.array(v)) for k, v in convert.to_torch("lenet5", variables).items()
    }
    key = next(k for k in sd if k.endswith(".weight"))
    complex_sd = {**sd, key: torch.complex(sd[key], torch.ones_like(sd[key]))}
    with pytest.raises(TypeError, match=rf"lenet5: '{key}' holds complex values.*complex64"):
        convert.from_torch("lenet5", complex_sd)
    as_numpy = {k: v.numpy() for k, v in complex_sd.items()}
    with pytest.raises(TypeError, match=rf"'{key}' holds complex values"):
        convert.from_torch("lenet5", as_numpy)
    convert.from_torch("lenet5", sd)  # the real tensors still load
