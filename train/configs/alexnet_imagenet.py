r"""AlexNet (torchvision's single-GPU variant) on ImageNet-1k: torchvision's recipe + PCA lighting.

Command:

  python -m train --config=train/configs/alexnet_imagenet.py --workdir=runs/alexnet

  # the 2012 paper's weight decay instead of torchvision's:
  #   --config.optimizer.weight_decay=5e-4
  # the 2012 paper's schedule (divide by 10 when the validation loss stops improving):
  #   --config.schedule.name=plateau

Hardware: meant for one host with 8 GPUs (torchvision's reference runs used 8 V100s, 32
images per GPU) and enough CPU cores for JPEG decoding (16 loader processes here; lower
`--config.data.worker_count` on a smaller host). The batch of 256 is global.

Data: TFDS `imagenet2012` (download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
into `<data_dir>/downloads/manual/` first). Random resized crop to 224 and horizontal flips
for training, resize to 256 and centre crop 224 for validation, torchvision's mean/std; and,
from Krizhevsky et al. (2012, Section 4.1), PCA colour noise ("fancy PCA") with alphas of
standard deviation 0.1, which torchvision's recipe does not use.

Recipe: torchvision's references/classification command for AlexNet and VGG,
`train.py --model alexnet --lr 1e-2` on top of its defaults: batch 256 (8 x 32), 90 epochs,
SGD with momentum 0.9, learning rate 0.01 ("the default initial learning rate 0.1 is too
high" without batch normalisation), weight decay 1e-4, x0.1 every 30 epochs. The 2012
paper used batch 128, momentum 0.9, weight decay 5e-4 and learning rate 0.01 divided by 10
(three times) whenever the validation error stopped improving, for about 90 epochs; the
`plateau` schedule reproduces that rule (see the command above).

Expected result, with its source: torchvision's `AlexNet_Weights.IMAGENET1K_V1` model card
gives 56.522% top-1 and 79.066% top-5 (single 224 crop) for its recipe; the PCA lighting
added here is a departure from it, which the paper credits with reducing top-1 error by over
1%. The paper's own network (`alexnet_2012`, with LRN and grouped convolutions) reached
40.7% top-1 / 18.2% top-5 error on the ILSVRC-2012 validation set (Table 2, one CNN,
averaging ten crops). Both figures are quoted, not reproduced: a run needs the ImageNet
download and GPUs, which CI does not have.
"""

from jaxcnn.training.config import default_config

# torchvision's normalisation constants (ImageNet's per-channel statistics in [0, 1] units).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config():
    """The locked config of this recipe."""
    config = default_config()
    config.model = "alexnet"

    config.data.source = "tfds"
    config.data.name = "imagenet2012"
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.image_size = 224
    config.data.channels = 3
    config.data.num_classes = 1000
    config.data.random_resized_crop = True
    config.data.hflip = True
    config.data.eval_resize = 256
    config.data.pca_lighting = 0.1  # Krizhevsky et al. (2012), Section 4.1
    config.data.mean = IMAGENET_MEAN
    config.data.std = IMAGENET_STD
    config.data.worker_count = 16

    config.batch_size = 256
    config.eval_batch_size = 256
    config.num_epochs = 90.0

    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.decay_bn_and_bias = True  # torch.optim.SGD decays every parameter
    config.schedule.name = "step"
    config.schedule.step_epochs = 30.0
    config.schedule.gamma = 0.1
    config.schedule.warmup_epochs = 0.0
    # Used only with --config.schedule.name=plateau: the paper's "divide by 10 when the
    # validation error stops improving", judged over a few evaluations.
    config.schedule.plateau_metric = "eval_loss"
    config.schedule.plateau_patience = 3

    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    config.log_every_steps = 100
    return config
