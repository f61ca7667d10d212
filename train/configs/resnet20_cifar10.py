r"""ResNet-20 on CIFAR-10 with He et al.'s recipe: 64k iterations, lr /10 at 32k and 48k.

Command:

  python -m train --config=train/configs/resnet20_cifar10.py --workdir=runs/resnet20

Hardware: one GPU (He et al. used two); 0.27M parameters and about 41 MMACs per image. On a
CPU it runs, slowly.

Data: TFDS `cifar10` (downloaded by TFDS on first use). Training images are padded by 4
pixels on each side and a 32x32 crop is sampled at random, with random horizontal flips;
test images are used as they are. Pixels are normalised per channel with CIFAR-10's own
mean and standard deviation (the paper subtracts the per-pixel mean).

Recipe (He, Zhang, Ren and Sun, "Deep residual learning for image recognition", CVPR 2016,
Section 4.2): batch 128, SGD with momentum 0.9, weight decay 1e-4, learning rate 0.1
divided by 10 at 32k and 48k iterations, training stopped at 64k iterations. The config
schema gives milestones in epochs; they are converted at 390 steps per epoch (the 50,000
training images in full batches of 128, the last partial batch dropped), which puts the
decays exactly at steps 32,000 and 48,000. (Were an epoch counted as 50000 / 128 = 390.625
steps, they would land at 32,051 and 48,077 instead, 0.16% later.)

Splits: the paper chose this schedule on a 45k/5k train/validation split; this config
trains on all 50,000 training images (TFDS `train`) and evaluates on the 10,000 test images
(TFDS `test`). The schedule is fixed and the figure printed at the end is the final
network's, so watching the test set during training decides nothing (the "best" checkpoint
kept beside the others is chosen on it, though: do not report that one).

Expected result, with its source: He et al. (2016), Table 6: 8.75% test error for ResNet-20
(91.25% accuracy). Quoted, not reproduced: a run needs the CIFAR-10 download and a GPU, which CI
does not have.
"""

from jaxcnn.training.config import default_config

NUM_STEPS = 64_000  # He et al.: "terminate training at 64k iterations"
# Iterations at which the learning rate is divided by 10, and the steps per epoch that turn
# them into the schema's epochs: floor(50000 / 128) full batches.
DECAY_STEPS = (32_000, 48_000)
STEPS_PER_EPOCH = 50_000 // 128


def get_config():
    """The locked config of this recipe."""
    config = default_config()
    config.model = "resnet20"

    config.data.source = "tfds"
    config.data.name = "cifar10"
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.image_size = 32
    config.data.channels = 3
    config.data.num_classes = 10
    config.data.random_crop_padding = 4
    config.data.hflip = True

    config.batch_size = 128
    config.eval_batch_size = 1000
    config.num_steps = NUM_STEPS

    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.decay_bn_and_bias = True  # as in the paper's Torch/Caffe training
    config.schedule.name = "multistep"
    config.schedule.milestones = tuple(s / STEPS_PER_EPOCH for s in DECAY_STEPS)
    config.schedule.gamma = 0.1
    config.schedule.warmup_epochs = 0.0

    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 5.0
    config.log_every_steps = 100
    return config
