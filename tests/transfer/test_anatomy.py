"""Which layers are heads and blocks, and which ones `frozen_layers` and `lr_multipliers` pick."""

from __future__ import annotations

import jax
import pytest

import jaxcnn
from jaxcnn import transfer


@pytest.mark.parametrize(
    "name, kwargs, heads",
    [
        ("lenet5", {}, ("fc3",)),
        ("lenet5_1998", {}, ("output",)),
        ("resnet18", {}, ("fc",)),
        ("vgg11", {}, ("classifier.6",)),
        ("googlenet", {}, ("fc",)),
        ("googlenet", {"aux_logits": True}, ("aux1/fc2", "aux2/fc2", "fc")),
        ("inception_v3", {}, ("AuxLogits/fc", "fc")),
        ("inception_v4", {}, ("last_linear",)),
    ],
)
def test_head_layers_are_the_layers_sized_by_num_classes(name, kwargs, heads):
    assert transfer.head_layers(name, **kwargs) == heads


def test_blocks_follow_execution_order_and_modules_need_a_shape():
    assert transfer.blocks("lenet5") == ("conv1", "conv2", "fc1", "fc2", "fc3")
    r18 = transfer.blocks("resnet18")
    assert r18[:3] == ("conv1", "bn1", "layer1.0") and r18[-2:] == ("layer4.1", "fc")
    assert len(r18) == 2 + 8 + 1  # stem conv and BatchNorm, 8 basic blocks, fc
    # GoogLeNet's auxiliary heads run right after the module they hang on.
    g = transfer.blocks("googlenet", aux_logits=True)
    assert g.index("aux1") == g.index("inception4a") + 1
    assert g.index("aux2") == g.index("inception4d") + 1
    model = jaxcnn.create_model("lenet5", num_classes=3)
    assert transfer.blocks(model, input_shape=(32, 32, 1))[-1] == "fc3"
    with pytest.raises(ValueError, match="input_shape"):
        transfer.blocks(model)
    with pytest.raises(TypeError, match="registry name"):
        transfer.blocks(model, input_shape=(32, 32, 1), num_classes=3)


def test_layer_paths_include_nested_layers():
    paths = transfer.layer_paths("resnet18")
    assert {"layer1.0", "layer1.0/conv1", "layer1.0/bn1", "layer2.0/downsample.0"} <= set(paths)


def test_frozen_layers_by_pattern_keep_the_outermost_match():
    frozen = transfer.frozen_layers("resnet18", ("conv1", "bn1", "layer1.*", "layer1.0/bn1"))
    assert frozen == ("bn1", "conv1", "layer1.0", "layer1.1")
    # "*" crosses "/": every BatchNorm, nested or not.
    bns = transfer.frozen_layers("resnet18", "*bn*")
    assert "bn1" in bns and "layer4.1/bn2" in bns and all("conv" not in b for b in bns)
    assert transfer.frozen_layers("resnet18") == ()


def test_frozen_layers_by_depth_never_freeze_heads():
    assert transfer.frozen_layers("lenet5", all_but_last=0) == ("conv1", "conv2", "fc1", "fc2")
    assert transfer.frozen_layers("lenet5", all_but_last=2) == ("conv1", "conv2")
    assert transfer.frozen_layers("lenet5", all_but_last=4) == ()
    r18 = transfer.frozen_layers("resnet18", all_but_last=2)
    assert "layer3.1" in r18 and "layer4.0" not in r18 and "fc" not in r18
    # GoogLeNet: the auxiliary heads count as heads wherever they run.
    g = transfer.frozen_layers("googlenet", all_but_last=0, aux_logits=True)
    assert "inception5b" in g and not {"aux1", "aux2", "fc"} & set(g)
    # Depth and patterns combine.
    both = transfer.frozen_layers("lenet5", ("fc1",), all_but_last=3)
    assert both == ("conv1", "fc1")


def test_frozen_layers_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"'layr1\.\*' matches no layer.*layer1\.0"):
        transfer.frozen_layers("resnet18", "layr1.*")
    with pytest.raises(ValueError, match=r"all_but_last must be in \[0, 4\].*got 5"):
        transfer.frozen_layers("lenet5", all_but_last=5)
    with pytest.raises(ValueError, match="leaves no parameter to train"):
        transfer.frozen_layers("lenet5", ("*",))
    with pytest.raises(TypeError, match="non-empty strings"):
        transfer.frozen_layers("lenet5", (3,))
    with pytest.raises(TypeError, match="all_but_last must be an int"):
        transfer.frozen_layers("lenet5", all_but_last=1.5)


def test_lr_multipliers_first_group_wins_and_heads_multiply():
    m = transfer.lr_multipliers(
        "lenet5", (("conv1", 0.01), ("conv*", 0.1), ("fc*", 0.5)), head_multiplier=10.0
    )
    assert jax.tree.structure(m) == jax.tree.structure(jaxcnn.convert.template("lenet5")["params"])
    assert m["conv1"] == {"kernel": 0.01, "bias": 0.01}
    assert m["conv2"]["kernel"] == 0.1 and m["fc1"]["bias"] == 0.5
    assert m["fc3"]["kernel"] == pytest.approx(5.0)  # "fc*" x the head's 10
    plain = transfer.lr_multipliers("lenet5")
    assert set(jax.tree.leaves(plain)) == {1.0}


def test_lr_multipliers_errors():
    with pytest.raises(ValueError, match="'nope' matches no layer"):
        transfer.lr_multipliers("lenet5", (("nope", 1.0),))
    with pytest.raises(ValueError, match="must be >= 0"):
        transfer.lr_multipliers("lenet5", (("conv1", -1.0),))
    with pytest.raises(TypeError, match=r"\(pattern, multiplier\)"):
        transfer.lr_multipliers("lenet5", ("conv1",))
    with pytest.raises(ValueError, match="head_multiplier must be >= 0"):
        transfer.lr_multipliers("lenet5", head_multiplier=float("nan"))
