"""Checkpoints as people bring them: every PyTorch container and wrapper, DataParallel /
torch.compile / Lightning prefixes, files without BatchNorm counters, user rename rules, and
a third-party CIFAR ResNet port whose option-A shortcut pads on both sides.

Every file here is written by the test with torch; the reference outputs are torch's.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxcnn
from jaxcnn import convert, transfer
from jaxcnn.models import resnet
from tests.helpers import to_torch_nchw

# ----------------------------------------------------------------- a third-party port


def _port_resnet(torch, blocks_per_stage: int = 3, num_classes: int = 10):
    """A CIFAR ResNet laid out as akamaster/pytorch_resnet_cifar10 (written here from its
    description): option-A shortcuts that subsample and pad ``planes // 4`` zero channels
    on *both* sides, classifier named ``linear``."""
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.pad = planes // 4 if (stride != 1 or cin != planes) else None

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            short = x
            if self.pad is not None:
                short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
            return F.relu(out + short)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            cin, stages = 16, []
            for i, planes in enumerate((16, 32, 64)):
                blocks = []
                for j in range(blocks_per_stage):
                    blocks.append(Block(cin, planes, 2 if i > 0 and j == 0 else 1))
                    cin = planes
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = stages
            self.linear = nn.Linear(64, num_classes)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # trained-looking BatchNorm statistics, not 0 / 1
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def _images(n=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 32, 32, 3)).astype(np.float32)


def _torch_logits(torch, net, x):
    with torch.no_grad():
        return net(to_torch_nchw(torch, x)).numpy()


def test_port_checkpoint_loads_in_one_call_with_its_original_predictions(torch, tmp_path):
    net = _port_resnet(torch)
    # As the port saves them: DataParallel's "module." prefix, a {"state_dict", "best_prec1"}
    # wrapper, a .th suffix, and (older files) no num_batches_tracked.
    sd = {f"module.{k}": v for k, v in net.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "resnet20-12fca82f.th"
    torch.save({"state_dict": sd, "best_prec1": torch.tensor(91.73)}, path)
    with pytest.warns(UserWarning, match="num_batches_tracked"):
        model, variables = transfer.load_pretrained("resnet20", path)
    assert model.shortcut_pad == "both"
    x = _images()
    got = np.asarray(model.apply(variables, x, train=False))
    want = _torch_logits(torch, net, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_port_checkpoint_with_the_wrong_layout_is_refused_not_silently_wrong(torch):
    net = _port_resnet(torch)
    sd = dict(net.state_dict())
    with pytest.raises(ValueError, match=r"akamaster.*shortcut_pad='both'"):
        convert.from_torch("resnet20", sd)
    variables = convert.from_torch("resnet20", sd, shortcut_pad="both")
    x = _images(seed=1)
    model = jaxcnn.create_model("resnet20", shortcut_pad="both")
    got = np.asarray(model.apply(variables, x, train=False))
    np.testing.assert_allclose(got, _torch_logits(torch, net, x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"only with shortcut_pad='both'; got shortcut_pad='end'"):
        transfer.load_pretrained("resnet20", sd, shortcut_pad="end")
    # Control: the same weights in the "end" layout compute something else.
    wrong = jaxcnn.create_model("resnet20").apply(variables, x, train=False)
    assert np.abs(np.asarray(wrong) - got).max() > 1e-2


def test_zero_pad_shortcut_layouts(x64):
    x = np.arange(2 * 4 * 4 * 2, dtype=np.float64).reshape(2, 4, 4, 2) + 1
    end = np.asarray(resnet.zero_pad_shortcut(x, 6, 2, "end"))
    both = np.asarray(resnet.zero_pad_shortcut(x, 6, 2, "both"))
    np.testing.assert_array_equal(end[..., :2], x[:, ::2, ::2])
    np.testing.assert_array_equal(both[..., 2:4], x[:, ::2, ::2])
    assert not end[..., 2:].any() and not both[..., :2].any() and not both[..., 4:].any()
    with pytest.raises(ValueError, match="`layout` must be one of"):
        resnet.zero_pad_shortcut(x, 6, 2, "middle")
    with pytest.raises(ValueError, match="`shortcut_pad` must be one of"):
        jaxcnn.create_model("resnet20", shortcut_pad="left").init(
            jax.random.key(0), x[:1, :, :, :1].repeat(3, -1).astype(np.float32)
        )


# ------------------------------------------------------------- containers and wrappers


def _tv_resnet18(torch):
    import torchvision

    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=7).eval()


WRAPPED = {
    "plain": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 90, "arch": "resnet18"},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {}},
    "model": lambda sd: {"model": sd, "args": {"lr": 0.1}},
    "net": lambda sd: {"net": sd, "acc": 0.9},
    "nested": lambda sd: {"model": {"state_dict": sd}},
    "dataparallel": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    "compiled": lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
    "lightning": lambda sd: {
        "state_dict": {f"model.{k}": v for k, v in sd.items()},
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "hyper_parameters": {"lr": 0.1, "arch": "resnet18"},
        "optimizer_states": [],
    },
    "ddp_of_compiled": lambda sd: {f"module._orig_mod.{k}": v for k, v in sd.items()},
}
SUFFIXES = [".pth", ".pt", ".th", ".tar", ".pth.tar", ".bin", ".ckpt"]


@pytest.mark.parametrize("wrapper", sorted(WRAPPED))
def test_every_wrapper_and_prefix_loads(torch, tmp_path, wrapper):
    net = _tv_resnet18(torch)
    path = tmp_path / f"w{SUFFIXES[len(wrapper) % len(SUFFIXES)]}"
    torch.save(WRAPPED[wrapper](net.state_dict()), path)
    model, variables = transfer.load_pretrained("resnet18", path)
    x = np.random.default_rng(2).standard_normal((2, 64, 64, 3)).astype(np.float32)
    got = np.asarray(model.apply(variables, x, train=False))
    np.testing.assert_allclose(got, _torch_logits(torch, net, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_torch_suffix_is_read(torch, tmp_path, suffix):
    sd = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.zeros(2)}
    path = tmp_path / f"weights{suffix}"
    torch.save({"state_dict": sd}, path)
    got = convert.load_weights(path)
    assert sorted(got) == ["a.bias", "a.weight"]
    np.testing.assert_array_equal(got["a.weight"], np.arange(6.0).reshape(2, 3))


def test_unknown_layout_lists_the_top_level_keys(torch, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"weights_here": {"x": 1}, "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"top-level keys 'weights_here', 'epoch'"):
        convert.load_weights(path)


def test_code_is_never_unpickled(torch, tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "callback": _Unsafe()}, path)
    with pytest.raises(ValueError, match="never unpickles code"):
        convert.load_weights(path)


class _Unsafe:
    pass


# ---------------------------------------------------------------- names and reports


@pytest.mark.slow
def test_rename_rules_and_the_closest_candidate_report(torch):
    net = _tv_resnet18(torch)
    sd = {k.replace("fc.", "head.").replace("layer", "stage"): v for k, v in
          net.state_dict().items()}  # fmt: skip
    with pytest.raises(ValueError) as err:
        convert.from_torch("resnet18", sd, num_classes=7)
    msg = str(err.value)
    assert "missing keys" in msg and "unexpected keys" in msg
    assert "fc.weight (closest: head.weight)" in msg
    variables = convert.from_torch(
        "resnet18", sd, num_classes=7, rename=[(r"^head\.", "fc."), (r"^stage", "layer")]
    )
    x = np.random.default_rng(3).standard_normal((1, 64, 64, 3)).astype(np.float32)
    got = jaxcnn.create_model("resnet18", num_classes=7).apply(variables, x, train=False)
    np.testing.assert_allclose(got, _torch_logits(torch, net, x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="two checkpoint keys map to"):
        convert.from_torch("resnet18", sd, num_classes=7, rename=[(r"\.(weight|bias)$", ".w")])


def test_missing_counters_are_filled_with_a_note_not_an_error(torch):
    net = _tv_resnet18(torch)
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    with pytest.warns(UserWarning, match=r"no BatchNorm num_batches_tracked counters \(20 layers"):
        variables = convert.from_torch("resnet18", sd, num_classes=7)
    counts = [v for p, v in jax.tree_util.tree_leaves_with_path(variables["batch_stats"])
              if "num_batches_tracked" in jax.tree_util.keystr(p)]  # fmt: skip
    assert len(counts) == 20 and all(int(c) == 0 for c in counts)


def test_a_stray_key_stays_unexpected_after_a_prefix_is_stripped(torch):
    # "model." is stripped where that makes model keys; what is left is reported.
    net = _tv_resnet18(torch)
    sd = {f"model.{k}": v for k, v in net.state_dict().items()}
    sd["model_extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): model_extra"):
        convert.from_torch("resnet18", sd, num_classes=7)


def test_an_npy_renamed_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "w.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match=r"holds one ndarray \(an .npy file\?\), not an .npz"):
        convert.load_weights(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"is not a readable \.npz archive"):
        convert.load_weights(tmp_path / "junk.npz")
