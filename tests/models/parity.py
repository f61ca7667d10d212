"""Shared parity check: a torch model and its jaxcnn port give the same eval-mode logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn import convert


def randomize_batchnorm_stats(torch, module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters.

    Freshly built torch models have mean 0 / var 1 / weight 1 / bias 0, under which a port
    that ignored the statistics (or swapped mean and var) would still agree.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.num_batches_tracked.fill_(7)


def assert_parity(
    torch,
    name: str,
    torch_model,
    sizes,
    *,
    rtol: float,
    atol: float,
    batch: int = 2,
    seed: int = 0,
    **model_kwargs,
):
    """Convert `torch_model`'s weights, run both in eval mode on the same random inputs.

    Args:
      name: jaxcnn registry name.
      torch_model: the reference module (random weights are fine; BatchNorm statistics are
        randomised here).
      sizes: (H, W) input sizes to compare at.
      rtol, atol: tolerances on the logits (float32).
      model_kwargs: passed to `jaxcnn.create_model` and `convert.from_torch`.

    Returns:
      The largest absolute logit difference seen, for reporting.
    """
    randomize_batchnorm_stats(torch, torch_model, seed)
    torch_model.eval()
    variables = convert.from_torch(name, torch_model.state_dict(), **model_kwargs)
    # The round trip is exact: to_torch gives back the state dict it was made from.
    back = convert.to_torch(name, variables, **model_kwargs)
    sd = torch_model.state_dict()
    assert set(back) == set(sd)
    for k, v in sd.items():
        if not np.array_equal(back[k], v.numpy()):  # the fast check; details only on failure
            np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)

    model = jaxcnn.create_model(name, **model_kwargs)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))  # op-by-op would be slower
    spec = jaxcnn.models.get_spec(name)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for h, w in sizes:
        x = rng.standard_normal((batch, h, w, spec.input_size[2])).astype(np.float32)
        y = np.asarray(apply(variables, jnp.asarray(x)))
        with torch.no_grad():
            ref = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        assert y.shape == ref.shape, (h, w, y.shape, ref.shape)
        np.testing.assert_allclose(y, ref, rtol=rtol, atol=atol, err_msg=f"{name} at {h}x{w}")
        worst = max(worst, float(np.max(np.abs(y - ref))))
    return worst
