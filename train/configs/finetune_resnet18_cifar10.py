r"""Fine-tune torchvision's ImageNet ResNet-18 on CIFAR-10: pretrained trunk, new 10-way head.

Command (download the weights first, see README "Transfer learning"):

  curl -LO https://download.pytorch.org/models/resnet18-f37072fd.pth
  python -m train --config=train/configs/finetune_resnet18_cifar10.py --workdir=runs/ft_r18

  # a linear probe instead (only the new head trains; every BatchNorm in inference mode):
  #   --config.freeze_all_but_last=0
  # fine-tune only the last two residual blocks and the head:
  #   --config.freeze_all_but_last=2
  # freeze by name: --config.freeze="('conv1', 'bn1', 'layer1.*')"

Hardware: one GPU. 224x224 inputs (ResNet-18 is about 1.8 GMACs per image there), 5 epochs
of CIFAR-10's 50,000 training images. On a CPU it runs, very slowly.

Data: TFDS `cifar10` (downloaded by TFDS on first use), upsampled from 32x32 to 224x224 so
that the pretrained filters see objects at about the scale they were trained on, random
crops after 28 pixels of padding (4 pixels at CIFAR's scale) and horizontal flips, and
normalised with ImageNet's mean and standard deviation, which the pretrained weights expect.

What transfers: `init_from` reads the torchvision file through `jaxcnn.convert` (shapes
checked, missing and unexpected keys named); its 1000-class `fc` does not fit 10 classes, so
`init_mapping="auto"` keeps the run's freshly initialised `fc` and copies every other layer.
The new head trains at ten times the learning rate of the pretrained layers
(`head_lr_multiplier`), a common fine-tuning choice. Resuming the workdir restores its own
checkpoint; the weight file is only read when the run starts.

Recipe: batch 128, SGD with momentum 0.9, learning rate 0.01 with a cosine decay over 5
epochs and a half-epoch warm-up, weight decay 5e-4 except on BatchNorm parameters and
biases.

Expected result, with its source: not measured here (a run needs a GPU and the CIFAR-10
download, which CI does not have), so no figure is claimed, and none is reproduced.
Fine-tuning an ImageNet ResNet on CIFAR-10 at 224 pixels is commonly reported in the mid-90s
percent test accuracy (e.g. Kornblith, Shlens and Le, "Do better ImageNet models transfer
better?", CVPR 2019, for larger ResNets and longer schedules); measure this recipe and record
what it gives.
"""

from jaxcnn.training.config import default_config

# torchvision's normalisation constants (ImageNet's per-channel statistics in [0, 1] units).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1


def get_config():
    """The locked config of this recipe."""
    config = default_config()
    config.model = "resnet18"

    config.data.source = "tfds"
    config.data.name = "cifar10"
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.image_size = 224
    config.data.channels = 3
    config.data.num_classes = 10
    config.data.random_crop_padding = 28
    config.data.hflip = True
    config.data.mean = IMAGENET_MEAN
    config.data.std = IMAGENET_STD

    config.init_from = WEIGHTS
    config.init_mapping = "auto"
    config.freeze = ()
    config.freeze_all_but_last = -1  # every layer trains
    config.head_lr_multiplier = 10.0

    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_epochs = 5.0
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.optimizer.decay_bn_and_bias = False
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 0.5

    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    config.log_every_steps = 50
    return config
