r"""LeNet-5 on MNIST (TFDS), 10 epochs.

Command:

  python -m train --config=train/configs/lenet_mnist.py

Hardware: any CPU (a laptop is enough: 61,706 parameters, 60,000 28x28 training images).
The data set comes from TFDS (`mnist`), which downloads it on first use; offline, prepare it
elsewhere and point `--config.data.data_dir` at it.

Data: the 28x28 digits are resized to the 32x32 the network was designed for (LeCun et al.
pad them to 32x32 instead, so that stroke ends reach the centre of the top feature
detectors' receptive fields; `lenet5` accepts 32 to 35 pixels only, so 28 is not an option).
Pixels are normalised with MNIST's own mean and standard deviation; no augmentation.

Optimiser: SGD with momentum 0.9, learning rate 0.05 for batches of 128, weight decay 5e-4,
cosine decay over 10 epochs. This is a modern recipe, not the paper's (which trained with a
stochastic diagonal Levenberg-Marquardt method for 20 passes with a hand-set step-size
schedule).

Expected result, with its source: LeCun, Bottou, Bengio and Haffner, "Gradient-based learning
applied to document recognition" (Proc. IEEE, 1998), Section III.C: LeNet-5's test error
"stabilizes after around 10 passes through the training set at 0.95%" (0.8% when trained on
distorted images), i.e. about 99.0% test accuracy. `lenet5` is the textbook variant (full C3
connectivity, linear output), not the paper's exact network (`lenet5_1998`), so the figure is
a guide. It was not reproduced here: a run needs the MNIST download, which CI does not have.
"""

from jaxcnn.training.config import default_config


def get_config():
    """The locked config of this recipe."""
    config = default_config()
    config.model = "lenet5"

    config.data.source = "tfds"
    config.data.name = "mnist"
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.image_size = 32
    config.data.channels = 1
    config.data.num_classes = 10

    config.batch_size = 128
    config.eval_batch_size = 1000
    config.num_epochs = 10.0

    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 0.0

    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    config.log_every_steps = 50
    return config
