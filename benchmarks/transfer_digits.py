"""Transfer learning on the real handwritten digits: does a network trained on 0-4 help on 5-9?

    python benchmarks/transfer_digits.py            # the table in benchmarks/README.md
    python benchmarks/transfer_digits.py --quick    # fewer seeds and steps (a smoke run)
    python benchmarks/transfer_digits.py --json out.jsonl

Offline, on the CPU, in a few minutes. The bundled digits (`jaxcnn.data.digits`: scikit-learn's
1,797 real 8x8 digits at 32x32, split 1,438 train / 359 test) are cut in two tasks:

* source: digits 0-4. LeNet-5 (5 outputs) is trained on all their training images, once.
* target: digits 5-9, relabelled 0-4, with only k labelled training images per class
  (k = 5, 10, 50, drawn per seed); accuracy is measured on every 5-9 test image.

Four ways to learn the target task, as Oquab et al. (2014) and Yosinski et al. (2014) compare
them:

  (a) scratch     LeNet-5 from a random initialisation, every layer trained;
  (b) probe       a linear classifier (multinomial logistic regression, scikit-learn) on the
                  frozen pretrained network's fc2 features (`transfer.extract_features`);
  (c) top         pretrained, new head (`transfer.replace_head`), conv1 and conv2 frozen
                  (`transfer.frozen_layers(..., all_but_last=2)`): fc1, fc2 and the head train;
  (d) all         pretrained, new head, every layer trained.

(a), (c) and (d) share one recipe chosen before any measurement and not tuned on the test
images: SGD with Nesterov momentum 0.9, learning rate 0.05 with a cosine decay, weight decay
5e-4, batches of 32 drawn with replacement from the k x 5 images, random shifts of up to 2
pixels, the same number of steps. They run through the library's own `make_optimizer`,
`train_step` and `models.configure_batch_norm` (frozen layers included), each compiled once and
reused over every k and seed.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import jaxcnn
from jaxcnn import transfer
from jaxcnn.data import digits
from jaxcnn.training import create_train_state, default_config, eval_step, make_optimizer
from jaxcnn.training import train_step as library_train_step
from jaxcnn.training.optim import learning_rate_schedule
from jaxcnn.training.parallel import DataParallel

STRATEGIES = ("scratch", "probe", "top", "all")
TITLES = {
    "scratch": "(a) from scratch",
    "probe": "(b) linear probe",
    "top": "(c) fine-tune top",
    "all": "(d) fine-tune all",
}
BATCH = 32
SHIFT = 2
PROBE_LAYER = "fc2"


def split_tasks() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Normalised float images and labels: source (0-4) and target (5-9 -> 0-4) train/test."""
    train, test = digits("train"), digits("test")
    mean, std = train.mean[0], train.std[0]

    def prep(src, classes):
        keep = np.isin(src.labels, classes)
        x = (src.images[keep].astype(np.float32) / 255.0 - mean) / std
        return x, (src.labels[keep] - classes[0]).astype(np.int32)

    lo, hi = np.arange(5), np.arange(5, 10)
    return {
        "source_train": prep(train, lo),
        "source_test": prep(test, lo),
        "target_train": prep(train, hi),
        "target_test": prep(test, hi),
    }


def few_shot(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k examples of each class, drawn with seed `seed`."""
    rng = np.random.default_rng([seed, k])
    idx = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c in np.unique(y)]
    )
    return x[idx], y[idx]


def shifted_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict:
    """A batch of BATCH drawn with replacement, each shifted by up to SHIFT pixels."""
    idx = rng.integers(0, x.shape[0], size=BATCH)
    background = float(x.min())  # the normalised value of a blank pixel
    padded = np.pad(
        x[idx], ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT), (0, 0)), constant_values=background
    )
    h, w = x.shape[1:3]
    offsets = rng.integers(0, 2 * SHIFT + 1, size=(BATCH, 2))
    images = np.stack([p[i : i + h, j : j + w] for p, (i, j) in zip(padded, offsets, strict=True)])
    return {"image": images, "label": y[idx]}


class Trainer:
    """One strategy's compiled step and optimizer, reused over every k and seed."""

    def __init__(self, model, params_like, *, steps: int, frozen=(), lr: float = 0.05):
        cfg = default_config()
        cfg.optimizer.learning_rate = lr
        cfg.optimizer.nesterov = True
        cfg.optimizer.weight_decay = 5e-4
        schedule = learning_rate_schedule(
            cfg.optimizer, cfg.schedule, steps_per_epoch=steps, total_steps=steps
        )
        # Frozen BatchNorms run in inference mode (LeNet-5 has none: the model comes back as is).
        self.model = jaxcnn.models.configure_batch_norm(model, frozen=frozen)
        self.steps = steps
        self.tx = make_optimizer(cfg.optimizer, schedule, params_like, frozen=frozen)
        par = DataParallel("none")
        self.par = par
        # No donation: runs start from shared variables (the pretrained trunk), kept intact.
        self.step = par.compile_train_step(
            functools.partial(library_train_step, frozen=frozen), donate=False
        )
        self.eval = par.compile_eval_step(eval_step)

    def fit(self, variables, x, y, *, seed: int):
        state = create_train_state(
            self.model, self.tx, seed=seed, input_shape=x.shape[1:], variables=variables
        )
        state = self.par.put_state(state)
        rng = np.random.default_rng([seed, 7])
        for _ in range(self.steps):
            state, _ = self.step(state, self.par.put_batch(shifted_batch(x, y, rng)))
        return state

    def accuracy(self, state, x, y) -> float:
        sums = self.eval(state, self.par.put_batch({"image": x, "label": y}))
        return float(sums["top1_correct"]) / float(sums["count"])


def probe_accuracy(model, variables, data, k: int, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = few_shot(*data["target_train"], k, seed)
    f_train = transfer.extract_features(model, variables, x, layer=PROBE_LAYER)
    f_test = transfer.extract_features(model, variables, data["target_test"][0], layer=PROBE_LAYER)
    scaler = StandardScaler().fit(f_train)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(f_train), y)
    return float(np.mean(clf.predict(scaler.transform(f_test)) == data["target_test"][1]))


def run(ks, seeds, *, steps: int, pretrain_steps: int, log=print) -> dict:
    t0 = time.time()
    data = split_tasks()
    model = jaxcnn.create_model("lenet5", num_classes=5)
    shape = data["source_train"][0].shape[1:]

    # Pretraining on 0-4, once (seed 0), with the same recipe over more steps.
    init = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
    pre = Trainer(model, init["params"], steps=pretrain_steps)
    state = pre.fit(init, *data["source_train"], seed=0)
    pretrained = {"params": jax.device_get(state.params)}
    source_acc = pre.accuracy(state, *data["source_test"])
    log(f"# pretrained LeNet-5 on digits 0-4: {source_acc:.2%} test accuracy "
        f"({len(data['source_test'][1])} images), {time.time() - t0:.1f} s")  # fmt: skip

    frozen_top = transfer.frozen_layers(model, all_but_last=2, input_shape=shape)
    trainers = {
        "scratch": Trainer(model, init["params"], steps=steps),
        "top": Trainer(model, init["params"], steps=steps, frozen=frozen_top),
        "all": Trainer(model, init["params"], steps=steps),
    }
    rows = []
    for k in ks:
        for seed in seeds:
            x, y = few_shot(*data["target_train"], k, seed)
            key = jax.random.key(1000 + seed)
            new_head = transfer.replace_head(model, pretrained, 5, rng=key, input_shape=shape)
            starts = {
                "scratch": model.init(key, jnp.zeros((1, *shape)), train=False),
                "top": new_head,
                "all": new_head,
            }
            row = {"k": k, "seed": seed}
            for name, trainer in trainers.items():
                final = trainer.fit(starts[name], x, y, seed=seed)
                row[name] = trainer.accuracy(final, *data["target_test"])
                if name == "top":  # the frozen layers must not have moved, bit for bit
                    for layer in frozen_top:
                        same = jax.tree.map(
                            np.array_equal, final.params[layer], pretrained["params"][layer]
                        )
                        assert all(jax.tree.leaves(same)), layer
            row["probe"] = probe_accuracy(model, pretrained, data, k, seed)
            rows.append(row)
    return {
        "rows": rows,
        "source_accuracy": source_acc,
        "frozen_top": list(frozen_top),
        "target_test_images": len(data["target_test"][1]),
        "wall_s": time.time() - t0,
    }


def format_table(rows: list[dict]) -> str:
    ks = sorted({r["k"] for r in rows})
    n = len({r["seed"] for r in rows})
    head = "| labelled / class | " + " | ".join(TITLES[s] for s in STRATEGIES) + " |"
    lines = [head, "|---:|" + "---:|" * len(STRATEGIES)]
    for k in ks:
        cells = []
        for s in STRATEGIES:
            acc = np.array([r[s] for r in rows if r["k"] == k]) * 100
            cells.append(f"{acc.mean():.1f} ± {acc.std(ddof=1) if n > 1 else 0.0:.1f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 seeds, fewer steps (a smoke run)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per k (default 5)")
    p.add_argument("--json", default="", help="also write one JSON object per row here")
    args = p.parse_args(argv)
    ks = (5, 10, 50)
    seeds = range(2 if args.quick else args.seeds)
    steps, pretrain_steps = (60, 300) if args.quick else (200, 1000)
    dev = jax.devices()[0]
    print(
        f"# jax {jax.__version__} on {dev.platform}; "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}; "
        f"{len(seeds)} seeds, {steps} steps per run, {pretrain_steps} pretraining steps"
    )
    result = run(ks, seeds, steps=steps, pretrain_steps=pretrain_steps)
    print(
        f"# target: digits 5-9, accuracy (%) on all {result['target_test_images']} test "
        f"images, mean ± std over {len(seeds)} seeds; (c) froze {', '.join(result['frozen_top'])}"
    )
    print(format_table(result["rows"]))
    print(f"# {result['wall_s']:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            for r in result["rows"]:
                f.write(json.dumps(r) + "\n")
    return result


if __name__ == "__main__":
    main()
