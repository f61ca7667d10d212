"""The plain-Flax peer of the training benchmark: a textbook linen ResNet-50 step.

What a Flax user would write without jaxcnn: `flax.linen.Conv` / `flax.linen.BatchNorm`
(batch statistics with Flax's own fast variance, running averages with momentum 0.9), a
bottleneck ResNet-50 with the stride on the 3x3 convolution (torchvision's layout, so the
FLOPs are those of jaxcnn's ``resnet50``), optax SGD with momentum and L2 weight decay at the
settings every peer shares, mean cross-entropy and top-1 accuracy, one `jax.jit` with the
state donated. Mixed precision as jaxcnn's: compute in ``dtype``, parameters in float32.

This is the floor jaxcnn's engine must reach: any time its step spends beyond this one is
overhead of the library, not of the model.
"""

from __future__ import annotations

import functools

MODELS = ("resnet50",)


def build(num_classes: int, dtype):
    """(model, train_step, make_state) of the textbook ResNet-50.

    Returns:
      model: the linen Module, input (N, H, W, 3) -> (N, num_classes) float32 logits.
      train_step: ``(state, batch, tx) -> (state, metrics)`` with state ``{"params",
        "batch_stats", "opt_state"}``; not jitted (the caller does that).
      make_state: ``(key, image_shape, tx) -> state``.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from flax import linen as nn

    conv = functools.partial(nn.Conv, use_bias=False, dtype=dtype)

    class Bottleneck(nn.Module):
        features: int
        stride: int

        @nn.compact
        def __call__(self, x, train: bool):
            norm = functools.partial(
                nn.BatchNorm,
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                dtype=dtype,
            )
            y = nn.relu(norm()(conv(self.features, (1, 1))(x)))
            y = conv(self.features, (3, 3), (self.stride, self.stride), padding=((1, 1), (1, 1)))(y)
            y = nn.relu(norm()(y))
            y = norm(scale_init=nn.initializers.zeros)(conv(4 * self.features, (1, 1))(y))
            if x.shape != y.shape:
                x = conv(4 * self.features, (1, 1), (self.stride, self.stride))(x)
                x = norm()(x)
            return nn.relu(x + y)

    class ResNet50(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)))(x.astype(dtype))
            x = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype
            )(x)
            x = nn.max_pool(nn.relu(x), (3, 3), (2, 2), padding=((1, 1), (1, 1)))
            for stage, blocks in enumerate((3, 4, 6, 3)):
                for block in range(blocks):
                    stride = 2 if stage > 0 and block == 0 else 1
                    x = Bottleneck(64 * 2**stage, stride)(x, train)
            x = jnp.mean(x, axis=(1, 2))
            return nn.Dense(num_classes, dtype=dtype)(x).astype(jnp.float32)

    model = ResNet50()

    def make_state(key, image_shape, tx):
        variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        return {
            "params": variables["params"],
            "batch_stats": variables["batch_stats"],
            "opt_state": tx.init(variables["params"]),
        }

    def train_step(state, batch, tx):
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state["batch_stats"]},
                batch["image"],
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            return jnp.mean(loss), (logits, updates["batch_stats"])

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"]
        )
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        new = {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}
        return new, {"loss": loss, "top1": accuracy}

    return model, train_step, make_state


def sgd(learning_rate: float, momentum: float, weight_decay: float):
    """torch.optim.SGD's update: L2 added to the gradient, then heavy-ball momentum."""
    import optax

    return optax.chain(
        optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum)
    )
