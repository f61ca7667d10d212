r"""LeNet-5 on the bundled handwritten digits: the default job, offline, on a laptop CPU.

Command (also what `python -m train` runs with no flags):

  python -m train --config=train/configs/lenet_digits.py --workdir=runs/lenet_digits

Hardware: any CPU; measured on a 2-core x86_64 machine (jax 0.10.2), where the whole run —
start-up, compilation, training and evaluation — takes 13 to 15 s
(`python benchmarks/default_job.py`).

Data: scikit-learn's 1,797 real 8x8 handwritten digits (Alpaydin & Kaynak's UCI set),
upsampled to 32x32, with the fixed split of `jaxcnn.data.digits` (1,438 train / 359 test).
No download: the images ship inside scikit-learn.

Recipe: the modern LeNet-5 (tanh, average pooling), SGD with Nesterov momentum 0.9, learning
rate 0.1 for batch 64 with a cosine decay over 40 epochs, weight decay 5e-4. Augmentation:
rotations of up to 15 degrees, rescaling by 0.85-1.15 and shifts of up to 2 pixels (the
classic distortions for handwritten digits, Simard et al. 2003); no flips (digits are not
mirror-symmetric).

Expected result: 98.5-99.5% test accuracy (5 or fewer errors out of 359); the README has
the measured figures.
"""

from jaxcnn.training.config import default_config


def get_config():
    """The locked config of the default job."""
    config = default_config()
    config.model = "lenet5"
    config.data.source = "digits"
    config.data.image_size = 32
    config.data.random_crop_padding = 2
    config.data.random_rotation = 15.0
    config.data.random_scale = 0.15
    config.batch_size = 64
    config.eval_batch_size = 360
    config.num_epochs = 40.0
    config.optimizer.learning_rate = 0.1
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.eval_every_epochs = 5.0
    config.checkpoint_every_epochs = 10.0
    config.log_every_steps = 22  # one row per epoch (22 steps of 64 on 1,438 images)
    return config
