"""Evaluate trained weights on a data set: top-1, top-5, loss and per-class accuracy.

    from jaxcnn.evaluation import evaluate_weights
    res = evaluate_weights("resnet20-12fca82f.th", model="resnet20", data="cifar10",
                           preset="cifar10_imagenet_stats")
    res["top1"], res["top5"], res["loss"], res["per_class"][3]

The weights are anything `jaxcnn.transfer.load_pretrained` reads (a PyTorch file in any
common container, a .safetensors or .npz file, or a jaxcnn workdir); the data is the bundled
digits, a TFDS name, or an image folder; the preprocessing a named preset
(`jaxcnn.data.PRESETS`) or explicit values. ``python -m train.evaluate`` is the command-line
form.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from . import data as data_lib

_PREPROCESSING_KEYS = ("image_size", "eval_resize", "channels", "mean", "std")


def _is_workdir(path: Any) -> bool:
    return isinstance(path, (str, os.PathLike)) and os.path.isdir(
        os.path.join(os.fspath(path), "checkpoints")
    )


def _data_config(data: str, split: str, data_dir: str | None) -> tuple[dict, str]:
    """The `data` section reading `split` of `data` for evaluation, and a description."""
    cfg = data_lib.DataConfig().to_dict()
    cfg.update(train_split=split, eval_split=split, worker_count=0, prefetch=0)
    if data == "digits":
        cfg.update(source="digits")
        return cfg, f"digits ({split})"
    if os.path.isdir(data):
        root = os.path.abspath(data)
        if not os.path.isdir(os.path.join(root, split)):
            # The folder itself is the split: one subfolder per class.
            root, split = os.path.dirname(root), os.path.basename(root)
            cfg.update(train_split=split, eval_split=split)
        cfg.update(source="folder", name=root)
        return cfg, f"image folder {os.path.join(root, split)}"
    name = data.removeprefix("tfds:")
    # TFDS names are "name", "name/config" or "name:version": anything else is a path.
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1
    if not name or looks_like_path or name.endswith("/"):
        raise ValueError(
            "data must be 'digits', an image folder or a TFDS name ('name' or 'name/config'); "
            f"got {data!r}, which is neither an existing folder nor a TFDS name"
        )
    cfg.update(source="tfds", name=name, data_dir=data_dir)
    return cfg, f"TFDS {name} ({split})"


def evaluate_weights(
    weights: Any,
    *,
    model: str | None = None,
    data: str = "digits",
    split: str = "test",
    preset: str | None = None,
    data_dir: str | None = None,
    image_size: int | None = None,
    eval_resize: int | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 256,
    rename: Sequence[tuple[str, str]] = (),
    json_path: str | os.PathLike | None = None,
    **model_kwargs,
) -> dict[str, Any]:
    """Top-1, top-5, mean cross-entropy and per-class top-1 of `weights` on a data split.

    Preprocessing, each key from the first of: the explicit argument, the `preset`, the
    workdir's own run (a jaxcnn workdir records the normalisation it trained with), the
    data set's defaults (`jaxcnn.data.create_datasets`).

    Args:
      weights: a weight file, a jaxcnn workdir, or a state dict (see
        `jaxcnn.transfer.load_pretrained`).
      model: the registry name; optional for a workdir (it names its model).
      data: "digits" (bundled), an image folder (a class-per-subfolder tree, or a root
        holding one per split), or a TFDS name ("cifar10", "tfds:mnist").
      split: the split to evaluate ("test", "validation", ...).
      preset: a `jaxcnn.data.PRESETS` name ("imagenet", "cifar10", "mnist", ...).
      data_dir: TFDS data_dir.
      image_size, eval_resize, channels, mean, std: preprocessing overrides (see the
        fields of `jaxcnn.data.DataConfig`).
      batch_size: examples per evaluation batch.
      rename: extra ``(regex, replacement)`` key rules (`jaxcnn.convert.from_torch`).
      json_path: also write the result there as JSON (atomically).
      **model_kwargs: `create_model` options the weights were made with.

    Returns:
      {"top1", "top5", "loss", "count", "correct", "per_class": [{"label", "name", "count",
      "top1"}], "model", "weights", "data", "preset", "preprocessing"}.
    """
    from . import transfer
    from .training.steps import cross_entropy, topk_correct

    if preset is not None:
        data_lib.preset(preset)  # an unknown name fails before anything is loaded
    run_pre: dict[str, Any] = {}
    if _is_workdir(weights):
        from .training.checkpoint import load_run

        _, _, info = load_run(os.fspath(weights))
        if model is not None and model != info["model"]:
            raise ValueError(f"{weights} holds a {info['model']}, not a {model}")
        model = info["model"]
        h, _, c = info["image_shape"]
        run_pre = {"image_size": h, "channels": c, "mean": info["mean"], "std": info["std"]}
    if model is None:
        raise ValueError("evaluate_weights: `model` (a registry name) is needed for a weight file")
    module, variables = transfer.load_pretrained(model, weights, rename=rename, **model_kwargs)

    cfg, description = _data_config(str(data), split, data_dir)
    explicit = dict(
        image_size=image_size, eval_resize=eval_resize, channels=channels, mean=mean, std=std
    )
    for source in (run_pre, data_lib.preset(preset) if preset else {}, explicit):
        cfg.update({k: v for k, v in source.items() if v is not None})
    for key in ("mean", "std"):
        if cfg[key] is not None:
            cfg[key] = tuple(float(v) for v in cfg[key])
    ds = data_lib.create_datasets(
        cfg,
        seed=0,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        process_index=0,
        process_count=1,
    )
    x0 = jnp.zeros((1, *ds.image_shape), jnp.float32)
    num_outputs = int(
        jax.eval_shape(lambda x: module.apply(variables, x, train=False), x0).shape[-1]
    )
    if ds.num_classes > num_outputs:
        raise ValueError(
            f"{description} has {ds.num_classes} classes but the weights' classifier has "
            f"{num_outputs} outputs"
        )

    @jax.jit
    def scores(variables, images, labels):
        # Without `mutable`, apply returns the model's output alone.
        logits = cast(jax.Array, module.apply(variables, images, train=False))
        return (
            cross_entropy(logits, labels),
            topk_correct(logits, labels, 1),
            topk_correct(logits, labels, 5),
        )

    k = max(ds.num_classes, 1)
    count, top1, top5 = np.zeros(k), np.zeros(k), np.zeros(k)
    loss_sum = 0.0
    for batch in ds.eval:
        loss, c1, c5 = (
            np.asarray(a, np.float64) for a in scores(variables, batch["image"], batch["label"])
        )
        m = np.asarray(batch["mask"], bool)
        labels = np.asarray(batch["label"])[m]
        np.add.at(count, labels, 1)
        np.add.at(top1, labels, c1[m])
        np.add.at(top5, labels, c5[m])
        loss_sum += float(loss[m].sum())
    n = int(count.sum())
    names = _class_names(ds, num_outputs)
    result = {
        "model": model,
        "weights": os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else "<dict>",
        "data": description,
        "preset": preset,
        "preprocessing": {key: cfg[key] for key in _PREPROCESSING_KEYS}
        | {"mean": list(ds.mean), "std": list(ds.std), "image_shape": list(ds.image_shape)},
        "count": n,
        "correct": int(top1.sum()),
        "top1": float(top1.sum() / n),
        "top5": float(top5.sum() / n),
        "loss": loss_sum / n,
        "per_class": [
            {
                "label": i,
                "name": names[i] if names else str(i),
                "count": int(count[i]),
                "top1": float(top1[i] / count[i]) if count[i] else None,
            }
            for i in range(k)
        ],
    }
    if json_path is not None:
        tmp = f"{os.fspath(json_path)}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                json.dump(result, f, indent=2)
                f.write("\n")
            os.replace(tmp, json_path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return result


def _class_names(ds: data_lib.Datasets, num_outputs: int) -> list[str] | None:
    classes = getattr(ds.eval_source, "classes", None)
    if classes:
        return [str(c) for c in classes]
    if num_outputs == 1000 and ds.num_classes == 1000:
        return data_lib.imagenet_classes()
    return None
