r"""GoogLeNet (torchvision's, with batch normalisation) on ImageNet-1k, auxiliary heads on.

Command:

  python -m train --config=train/configs/googlenet_imagenet.py --workdir=runs/googlenet

Hardware: meant for one host with 8 GPUs or a TPU slice of similar size, with CPU cores for
JPEG decoding (16 loader processes; lower `--config.data.worker_count` on a smaller host).
The batch of 256 is global.

Model: `googlenet` is torchvision's GoogLeNet: every convolution is followed by batch
normalisation (see jaxcnn/models/googlenet.py for its other departures from the paper).
Both auxiliary classifiers are trained (`aux_logits=True`), their losses weighted by 0.3 as
in Szegedy et al. (2015, Section 5: "their loss gets added to the total loss of the network
with a discount weight (the losses of the auxiliary classifiers were weighted by 0.3)");
they are dropped at inference.

Data: TFDS `imagenet2012` (download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
into `<data_dir>/downloads/manual/` first). Random resized crops (the scale 8%-100% and
aspect 3/4-4/3 sampling comes from this paper, Section 6) to 224 with horizontal flips;
resize to 256 and centre crop 224 for validation; torchvision's mean/std.

Recipe: torchvision's default reference recipe, the one its references/classification
README prescribes for batch-normalised networks (vgg*_bn are "trained with the default
parameters"): batch 256, 90 epochs, SGD with momentum 0.9, learning rate 0.1, weight decay
1e-4, x0.1 every 30 epochs. Chosen because this network has batch normalisation, which the
paper's did not; the paper's own schedule (asynchronous SGD, momentum 0.9, the learning rate
decreased by 4% every 8 epochs, Polyak averaging for the final model) was designed for
a much longer run on a CPU cluster and has no counterpart here.

Expected result, with its source: torchvision's `GoogLeNet_Weights.IMAGENET1K_V1` model card
gives 69.778% top-1 and 89.530% top-5 (single 224 crop). Those weights were not trained
with torchvision's reference script (its documentation says they were ported; earlier
metadata pointed to a contributor's fork of pytorch/examples), so the figure is a target,
not the known outcome of this recipe. The paper's breakdown of its classification results
gives 10.07% top-5 error for one model evaluated on one crop, for its own network. Both
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
    config.model = "googlenet"
    config.model_kwargs = {"aux_logits": True}
    config.aux_loss_weight = 0.3  # Szegedy et al. (2015), Section 5

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

    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    config.log_every_steps = 100
    return config
