"""The training configuration: every key the engine reads, with its default and meaning.

Configs in `train/configs/` start from `default_config()` and override what they change, so
a key is documented once, here. `train_and_evaluate` accepts any object with these
attributes (an `ml_collections.ConfigDict`, or the plain mapping `default_config` builds).

Learning rates are given for `batch_size` (the global batch, over all devices and
processes); nothing rescales them silently.
"""

from __future__ import annotations

from typing import Any

# Kept as plain data so that this module imports without ml_collections (it is imported
# lazily by `default_config`); the dictionary is also what `validate` checks keys against.
DEFAULTS: dict[str, Any] = {
    "model": "lenet5",  # a registered name: jaxcnn.list_models()
    "model_kwargs": {},  # extra create_model keywords (dropout_rate, aux_logits, ...)
    "seed": 0,  # one seed for initialisation, data order, augmentation and dropout
    "batch_size": 128,  # global training batch (all devices, all processes)
    "eval_batch_size": 256,  # global evaluation batch; the last one is padded and masked
    "num_epochs": 30.0,  # length of training in epochs of the training set ...
    "num_steps": 0,  # ... or in steps, if > 0 (overrides num_epochs)
    "data": {
        "source": "digits",  # "digits" | "tfds" | "folder" | "synthetic"
        "name": "",  # TFDS name ("mnist", "cifar10", "imagenet2012", ...) or folder root
        "data_dir": None,  # TFDS data_dir; None: TFDS's default (~/tensorflow_datasets)
        "train_split": "train",
        "eval_split": "test",  # TFDS split or folder subdirectory used for validation
        "image_size": 32,  # side of the (square) image the model sees
        "channels": None,  # 1 or 3 to convert; None: the source's own
        "eval_resize": 0,  # resize the shorter side to this before the centre crop (0: off)
        "random_crop_padding": 0,  # pad by this much and crop back at random (0: off)
        "random_rotation": 0.0,  # rotate by up to +-this many degrees (0: off) ...
        "random_scale": 0.0,  # ... and scale by a factor in [1 - this, 1 + this] (0: off)
        "random_resized_crop": False,  # Inception-style scale (0.08, 1) and aspect (3/4, 4/3)
        "hflip": False,  # random horizontal flips
        "pca_lighting": 0.0,  # AlexNet's PCA colour noise, std of the alphas (0.1 in 2012)
        "mean": None,  # per-channel mean in [0, 1] units; None: the data set's own
        "std": None,  # per-channel std; None: the data set's own
        "num_classes": 0,  # 0: from the data source
        "skip_corrupt": False,  # skip (and count) undecodable image files instead of raising
        "synthetic_examples": 1024,  # size of the "synthetic" source
        "worker_count": 0,  # grain worker processes (0: load in the training process)
        "prefetch": 2,  # batches placed on the devices ahead of the step that uses them
    },
    "optimizer": {
        "learning_rate": 0.1,  # peak learning rate for `batch_size`
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,  # L2 via decoupled add_decayed_weights, as torch.optim.SGD does
        "decay_bn_and_bias": True,  # False: exclude BatchNorm scales/biases and all biases
        "clip_grad_norm": 0.0,  # clip the global gradient norm to this (0: off)
    },
    "schedule": {
        "name": "cosine",  # "constant" | "step" | "multistep" | "cosine" | "plateau"
        "warmup_epochs": 0.0,  # linear warm-up from 0 over this many epochs
        "step_epochs": 30.0,  # "step": multiply by `gamma` every this many epochs
        "milestones": (),  # "multistep": epochs at which to multiply by `gamma`
        "gamma": 0.1,
        "plateau_patience": 3,  # "plateau": evaluations without improvement before decay
        "plateau_metric": "eval_loss",  # monitored (lower is better)
        "min_learning_rate": 0.0,  # floor for "plateau" and "cosine"
    },
    "label_smoothing": 0.0,
    "aux_loss_weight": 0.3,  # weight of auxiliary classifiers' losses (GoogLeNet/Inception)
    # Transfer learning (see jaxcnn.transfer). Layer paths are Flax module paths, "/"-separated
    # ("conv1", "layer1.0/bn1"); patterns are shell-style globs over them ("layer1.*").
    "init_from": "",  # start from: "" (random) | a jaxcnn workdir (its newest checkpoint) |
    # a weight file (.pth/.safetensors/.npz, torchvision/timm names). Read only when the workdir
    # has no checkpoint yet: a resumed run restores its own.
    "init_mapping": "auto",  # "auto": by layer name; heads whose class count differs start
    # fresh | "strict": everything must match | "vgg_stages": copy a shallower VGG's first four
    # convolutions and its fully connected layers into this VGG (Simonyan & Zisserman's stages)
    "freeze": (),  # patterns of layers kept fixed: parameters, and BatchNorm statistics
    # (those BatchNorms run in inference mode)
    "freeze_all_but_last": -1,  # also freeze all but the last N blocks (top-level layers in
    # execution order; classifier heads always train): -1 off, 0 trains the heads only
    "head_lr_multiplier": 1.0,  # classifier heads (the layers sized by num_classes) train at
    # this times the learning rate
    "lr_multipliers": (),  # ((pattern, multiplier), ...): learning rate per layer group; the
    # first matching pattern applies (discriminative fine-tuning)
    "dtype": "float32",  # compute dtype: "float32" | "bfloat16" (parameters stay float32)
    "parallel": "jit",  # "jit" (mesh + NamedSharding) | "pmap" | "none" (one device)
    "eval_every_epochs": 1.0,  # evaluate (and plot) every this many epochs, and at the end
    "log_every_steps": 50,  # training-metric rows in metrics.jsonl / TensorBoard
    "checkpoint_every_epochs": 1.0,  # periodic checkpoints (also at the end and on SIGTERM)
    "keep_checkpoints": 3,  # most recent checkpoints kept
    "keep_best": True,  # also keep the best checkpoint by `best_metric`
    "best_metric": "eval_top1",  # higher is better
    "async_checkpointing": True,
    "progress": True,  # a tqdm progress bar on stderr
    "tensorboard": True,  # TensorBoard event files under workdir/tensorboard
    "plot": True,  # workdir/curves.png, redrawn after evaluations (at most every 30 s)
    "distributed": False,  # call jax.distributed.initialize() (multi-process / multi-host)
    "compilation_cache": "",  # JAX's persistent compilation cache: "" workdir/compile_cache,
    # a folder (shared by runs), or "off"; a resumed or repeated run then skips compilation
}


def default_config():
    """An `ml_collections.ConfigDict` holding `DEFAULTS` (keys locked against typos)."""
    import ml_collections

    cfg = ml_collections.ConfigDict(_copy(DEFAULTS))
    cfg.lock()
    return cfg


def _copy(d: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in d.items()}
