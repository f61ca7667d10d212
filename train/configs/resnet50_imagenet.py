r"""ResNet-50 on ImageNet-1k with torchvision's reference recipe: 90 epochs, step decay.

Command:

  python -m train --config=train/configs/resnet50_imagenet.py --workdir=runs/resnet50

  # several hosts: the same command on each, plus
  #   --config.distributed=True

Hardware: meant for one host with 8 GPUs (torchvision trained it on 8 V100s, 32 images per
GPU) or a TPU slice of similar size, with CPU cores to spare for JPEG decoding (16 loader
processes here; lower `--config.data.worker_count` on a smaller host). Batches are global:
256 images split over all devices, so the recipe is the same on any device count that
divides 256.

Data: TFDS `imagenet2012`, which TFDS cannot download: place ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in `<data_dir>/downloads/manual/` first. Training images get an
Inception-style random resized crop to 224x224 and a random horizontal flip; validation
images are resized to 256 on the shorter side and centre-cropped to 224. Pixels are
normalised with the mean and standard deviation torchvision uses.

Recipe, exactly torchvision's (references/classification, "all models have been trained on
8x V100 GPUs with the following parameters"): batch 256 (8 x 32), 90 epochs, SGD with
momentum 0.9 (not Nesterov), learning rate 0.1, weight decay 1e-4 on every parameter, the
learning rate multiplied by 0.1 every 30 epochs, no warm-up, no label smoothing.

Expected result, with its source: torchvision's `ResNet50_Weights.IMAGENET1K_V1` model card
gives 76.130% top-1 and 92.862% top-5 on the ImageNet validation set (single 224 crop) for
this recipe. He, Zhang, Ren and Sun (2016), Table 3, give 22.85% top-1 error for their
ResNet-50 with 10-crop testing, which is not comparable with the single crop here. Both
figures are quoted, not reproduced: a run needs the ImageNet download and GPUs, which CI does
not have.
"""

from jaxcnn.training.config import default_config

# torchvision's normalisation constants (ImageNet's per-channel statistics in [0, 1] units).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config():
    """The locked config of this recipe."""
    config = default_config()
    config.model = "resnet50"

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
    config.data.mean = IMAGENET_MEAN
    config.data.std = IMAGENET_STD
    config.data.worker_count = 16

    config.batch_size = 256
    config.eval_batch_size = 256
    config.num_epochs = 90.0

    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.decay_bn_and_bias = True  # torch.optim.SGD decays every parameter
    config.schedule.name = "step"
    config.schedule.step_epochs = 30.0
    config.schedule.gamma = 0.1
    config.schedule.warmup_epochs = 0.0
    config.label_smoothing = 0.0

    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    config.log_every_steps = 100
    return config
