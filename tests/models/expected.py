"""What every registered model must be, in one table: test_registry.py holds each model to its
row, and the family files take their shared numbers from here.

Parameter counts are torchvision's and timm's (the sum of p.numel() over the reference built
with `reference`'s arguments; torchvision 0.29.1, timm 1.0.29) where there is a reference, else
the papers' layers summed: test_lenet.py, test_alexnet.py and test_googlenet.py show the sums,
test_resnet.py the CIFAR ResNets' formula and He et al.'s Table 6.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Expected(NamedTuple):
    params: int  # parameters at the default number of classes
    input_size: tuple[int, int, int]  # the (H, W, C) the model was designed for
    min_size: tuple[int, int]  # the smallest (H, W) the architecture admits
    classes: int = 1000
    batch_stats: bool = True  # has BatchNorm running statistics
    # (library, name, keyword arguments) of the torch model of the same structure, or None.
    reference: tuple[str, str, dict[str, Any]] | None = None
    # Models whose classifier takes a fixed map size: the largest (H, W), and further sizes
    # beyond it to try.
    max_size: tuple[int, int] | None = None
    too_large: tuple[tuple[int, int], ...] = ()
    # Training-mode outputs: None for logits alone, else the type of the tuple of logits and
    # auxiliary logits and its length.
    train_outputs: tuple[str, int] | None = None


def _tv(name, **kwargs):
    return ("torchvision", name, kwargs)


_IMAGENET = (224, 224, 3)
_INCEPTION = (299, 299, 3)
_TV_GOOGLENET = {"aux_logits": False, "init_weights": True, "transform_input": False}
_TV_INCEPTION_V3 = {"aux_logits": True, "init_weights": True, "transform_input": False}
_LENET = {"input_size": (32, 32, 1), "min_size": (32, 32), "classes": 10, "batch_stats": False,
          "max_size": (35, 35), "too_large": ((224, 224),)}  # fmt: skip
_CIFAR = {"input_size": (32, 32, 3), "min_size": (1, 1), "classes": 10}

EXPECTED: dict[str, Expected] = {
    # LeNet-5. Modern: 156 + 2,416 + 48,120 + 10,164 + 850. The paper's: C1 156, S2 12,
    # C3 1,516, S4 32, C5 48,120, F6 10,164, output 850.
    "lenet5": Expected(61_706, **_LENET),
    "lenet5_1998": Expected(60_850, **_LENET),
    "alexnet": Expected(61_100_840, _IMAGENET, (63, 63), batch_stats=False,
                        reference=_tv("alexnet")),
    "alexnet_2012": Expected(60_965_224, _IMAGENET, (223, 223), batch_stats=False,
                             max_size=(254, 254), too_large=((256, 256),)),
    **{name: Expected(count, _IMAGENET, (32, 32), batch_stats=name.endswith("_bn"),
                      reference=_tv(name))
       for name, count in [("vgg11", 132_863_336), ("vgg11_bn", 132_868_840),
                           ("vgg13", 133_047_848), ("vgg13_bn", 133_053_736),
                           ("vgg16", 138_357_544), ("vgg16_bn", 138_365_992),
                           ("vgg19", 143_667_240), ("vgg19_bn", 143_678_248)]},
    "googlenet": Expected(6_624_904, _IMAGENET, (15, 15),
                          reference=_tv("googlenet", **_TV_GOOGLENET)),
    "googlenet_2014": Expected(6_998_552, _IMAGENET, (31, 31), batch_stats=False),
    "inception_v3": Expected(27_161_264, _INCEPTION, (299, 299),
                             reference=_tv("inception_v3", **_TV_INCEPTION_V3),
                             train_outputs=("InceptionOutputs", 2)),
    "inception_v4": Expected(42_679_816, _INCEPTION, (75, 75),
                             reference=("timm", "inception_v4", {})),
    "inception_resnet_v2": Expected(55_843_464, _INCEPTION, (75, 75),
                                    reference=("timm", "inception_resnet_v2", {})),
    **{name: Expected(count, _IMAGENET, (1, 1), reference=_tv(name))
       for name, count in [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                           ("resnet50", 25_557_032), ("resnet101", 44_549_160),
                           ("resnet152", 60_192_808)]},
    **{name: Expected(count, **_CIFAR)
       for name, count in [("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586),
                           ("resnet56", 853_018), ("resnet110", 1_727_962)]},
}  # fmt: skip

# Configurations other than the default: id -> (name, create_model arguments, expected).
# The reference takes the same arguments on top of the registry's.
_AUX = {"aux_logits": True}
VARIANTS: dict[str, tuple[str, dict[str, Any], Expected]] = {
    "googlenet-aux": ("googlenet", _AUX, EXPECTED["googlenet"]._replace(
        params=13_004_888, train_outputs=("GoogLeNetOutputs", 3))),
    # The paper's auxiliary heads: 3,188,840 (aux1) + 3,190,888 (aux2).
    "googlenet_2014-aux": ("googlenet_2014", _AUX, EXPECTED["googlenet_2014"]._replace(
        params=13_378_280, train_outputs=("GoogLeNetOutputs", 3))),
    "inception_v3-noaux": ("inception_v3", {"aux_logits": False}, EXPECTED["inception_v3"]._replace(
        params=23_834_568, min_size=(75, 75), train_outputs=None)),
}  # fmt: skip
