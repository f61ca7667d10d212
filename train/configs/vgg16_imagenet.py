r"""VGG-16 (configuration D, no batch normalisation) on ImageNet-1k with torchvision's recipe.

Command:

  python -m train --config=train/configs/vgg16_imagenet.py --workdir=runs/vgg16

  # the paper's weight decay instead of torchvision's:
  #   --config.optimizer.weight_decay=5e-4

Hardware: meant for one host with 8 GPUs (torchvision's reference runs used 8 V100s, 32
images per GPU; VGG-16 is about 15.5 GMACs per 224x224 image, so it is the slowest recipe
here) and enough CPU cores for JPEG decoding (16 loader processes; lower
`--config.data.worker_count` on a smaller host). The batch of 256 is global.

Data: TFDS `imagenet2012` (download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
into `<data_dir>/downloads/manual/` first). Random resized crop to 224 and horizontal flips
for training, resize to 256 and centre crop 224 for validation, torchvision's mean/std.

Recipe: torchvision's references/classification command for AlexNet and VGG,
`train.py --model vgg16 --lr 1e-2` on top of its defaults: batch 256 (8 x 32), 90 epochs,
SGD with momentum 0.9, learning rate 0.01 (0.1 is "too high" without batch normalisation),
weight decay 1e-4, x0.1 every 30 epochs. Simonyan and Zisserman (2015, Section 3.1) used
batch 256, momentum 0.9, weight decay 5e-4, dropout 0.5 on the first two fully connected
layers, learning rate 0.01 divided by 10 when the validation accuracy stopped improving
(three times, 370K iterations, 74 epochs), scale jittering rather than random resized
crops, and initialised the deeper networks from the shallower configuration A.

Expected result, with its source: torchvision's `VGG16_Weights.IMAGENET1K_V1` model card
gives 71.592% top-1 and 90.382% top-5 (single 224 crop) for this recipe. The paper's
figures come from multi-scale training and testing and are not comparable. Quoted, not
reproduced: a run needs the ImageNet download and GPUs, which CI does not have.
"""

from jaxcnn.training.config import default_config

# torchvision's normalisation constants (ImageNet's per-channel statistics in [0, 1] units).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config():
    """The locked config of this recipe."""
    config = default_config()
    config.model = "vgg16"

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

    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.decay_bn_and_bias = True  # torch.optim.SGD decays every parameter
    config.schedule.name = "step"
    config.schedule.step_epochs = 30.0
    config.schedule.gamma = 0.1
    config.schedule.warmup_epochs = 0.0

    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    config.log_every_steps = 100
    return config
