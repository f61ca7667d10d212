"""Run as a script with several (fake) devices: the three parallel modes on one global batch.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/training/multidevice_check.py

Prints one JSON object: for "jit" and "pmap", the largest absolute difference from the
one-device run ("none") of parameters, BatchNorm statistics and metrics after three steps,
and the same for a pmap run *without* synchronised BatchNorm (a control that must differ):
the model not configured with `DataParallel.bn_axis_name`.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from jaxcnn import layers, models
from jaxcnn.training import DataParallel, create_train_state, train_step


class Net(nn.Module):
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x, train=False):
        x = layers.Conv(8, 3, padding=1, name="conv")(x)
        x = layers.BatchNorm(
            axis_name=self.bn_axis_name, frozen_paths=self.frozen_batch_norms, name="bn"
        )(x, train=train)
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        return layers.Dense(5, name="fc")(x)


def batches(n=3, size=16):
    rng = np.random.default_rng(0)
    for _ in range(n):
        # Per-example scales differ a lot, so per-device BatchNorm statistics would differ.
        scale = rng.uniform(0.2, 5.0, (size, 1, 1, 1)).astype(np.float32)
        yield {
            "image": rng.standard_normal((size, 6, 6, 3)).astype(np.float32) * scale,
            "label": rng.integers(0, 5, size).astype(np.int32),
        }


def run(mode, *, sync_bn=True):
    tx = optax.sgd(0.1, momentum=0.9)
    par = DataParallel(mode)
    model = Net()
    if sync_bn:  # the control leaves it out: gradients averaged, per-device BatchNorm statistics
        model = models.configure_batch_norm(model, axis_name=par.bn_axis_name)
    state = create_train_state(model, tx, seed=0, input_shape=(6, 6, 3))
    state = par.put_state(state)
    step = par.compile_train_step(train_step, donate=False)
    metrics = []
    for b in batches():
        state, m = step(state, par.put_batch(b))
        metrics.append(par.fetch(m))
    host = par.get_state(state)
    return jax.tree.map(
        np.asarray, {"params": host.params, "stats": host.batch_stats, "metrics": metrics}
    )


def maxdiff(a, b):
    return max(
        float(np.max(np.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


if __name__ == "__main__":
    ref = run("none")
    out = {"devices": jax.device_count()}
    for name, res in [
        ("jit", run("jit")),
        ("pmap", run("pmap")),
        ("pmap_unsynced_bn", run("pmap", sync_bn=False)),
    ]:
        out[name] = {k: maxdiff(ref[k], res[k]) for k in ("params", "stats", "metrics")}
    print(json.dumps(out))
