r"""VGG-16 started from a trained VGG-11, as Simonyan and Zisserman trained their deep nets.

Command (after training configuration A, e.g. with the VGG-16 recipe and --config.model=vgg11):

  python -m train --config=train/configs/vgg16_imagenet.py --config.model=vgg11 \
      --workdir=runs/vgg11_imagenet
  python -m train --config=train/configs/finetune_vgg16_from_vgg11.py --workdir=runs/vgg16_staged

  # or from torchvision's VGG-11 weights (the variant is recognised from the file's keys):
  #   --config.init_from=vgg11-8a719046.pth

Hardware: as `vgg16_imagenet.py`: one host with 8 GPUs; the batch of 256 is global.

Data: as `vgg16_imagenet.py` (TFDS `imagenet2012`, manual download).

What transfers (`init_mapping="vgg_stages"`, `jaxcnn.transfer.vgg_stage_init`): "we
initialised the first four convolutional layers and the last three fully-connected layers
with the layers of net A (the intermediate layers were initialised randomly)" (Simonyan and
Zisserman, ICLR 2015, Section 3.1). A's first four convolutions, conv1_1, conv2_1, conv3_1
and conv3_2 (features.0/3/6/8), go to VGG-16's layers of the same stage and position
(features.0/5/10/12), whose shapes are the same; classifier.0/3/6 are copied as they are.
The other nine convolutions start from the usual random initialisation. Only a fresh run
reads the source; resuming restores the workdir's own checkpoint.

Recipe: torchvision's VGG-16 recipe (`vgg16_imagenet.py`): batch 256, 90 epochs, SGD with
momentum 0.9, learning rate 0.01 divided by 10 every 30 epochs, weight decay 1e-4. The paper
kept its learning rate schedule for the deeper nets and let the initialised layers change.

Expected result, with its source: not measured here (a run needs the ImageNet download and
GPUs, which CI does not have), so none is reproduced. Simonyan and Zisserman used the staged
initialisation so that the deep nets would train at all; they add that after submission they
found Glorot and Bengio's random initialisation works without pre-training. torchvision's
VGG-16, trained from scratch with this recipe, reaches 71.592% top-1
(`VGG16_Weights.IMAGENET1K_V1`): the figure to compare with.
"""

from jaxcnn.training.config import default_config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config():
    """The locked config of this recipe."""
    config = default_config()
    config.model = "vgg16"
    config.init_from = "runs/vgg11_imagenet"
    config.init_mapping = "vgg_stages"

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
    config.optimizer.weight_decay = 1e-4
    config.optimizer.decay_bn_and_bias = True
    config.schedule.name = "step"
    config.schedule.step_epochs = 30.0
    config.schedule.gamma = 0.1

    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    config.log_every_steps = 100
    return config
