"""What a training step lowers to for a target platform, measured on any machine.

    python benchmarks/lowering.py                                   # resnet50, googlenet, CUDA
    python benchmarks/lowering.py --models vgg16 --batch 64 --platform cpu

Exports the engine's train step (`jaxcnn.training.steps.train_step`, SGD with momentum) with
`jax.export(..., platforms=(PLATFORM,))`, which lowers for that platform without needing its
hardware, and reports per model: the seconds tracing and lowering took, the size of the
StableHLO text, its operation count, how many run-time `case` selections it holds, and how
many sums of an activation over its rows (per BatchNorm: two forward, two backward). XLA's own
compilation for the platform is not included (that needs the device).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def lower_train_step(model: str, *, batch: int, image_size: int, platform: str) -> dict:
    """Export `model`'s train step for `platform` and describe the program."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax import export

    import jaxcnn
    from jaxcnn.models import get_spec
    from jaxcnn.training import state as state_lib
    from jaxcnn.training import steps

    channels = get_spec(model).input_size[2]
    module = jaxcnn.create_model(model)
    shape = (image_size, image_size, channels)
    st = jax.eval_shape(
        lambda: state_lib.create_train_state(
            module, optax.sgd(0.1, momentum=0.9), seed=0, input_shape=shape
        )
    )
    data = {
        "image": jax.ShapeDtypeStruct((batch, *shape), jnp.float32),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32),
    }
    t0 = time.perf_counter()
    exported = export.export(
        jax.jit(lambda s, b: steps.train_step(s, b, jax.random.PRNGKey(0))),
        platforms=(platform,),
    )(st, data)
    text = exported.mlir_module()
    seconds = time.perf_counter() - t0
    return {
        "benchmark": "lowering",
        "model": model,
        "platform": platform,
        "batch": batch,
        "image_size": image_size,
        "lower_s": seconds,
        "stablehlo_mb": len(text) / 1e6,
        "ops": len(re.findall(r"= stablehlo\.", text)),
        "case_ops": text.count("stablehlo.case"),
        "activation_row_sums": len(
            re.findall(r"stablehlo\.reduce\(.*across dimensions = \[0\] : \(tensor<\d+x\d+x", text)
        ),
        "jax": jax.__version__,
    }


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet50,googlenet")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--platform", default="cuda", choices=("cuda", "rocm", "tpu", "cpu"))
    p.add_argument("--json", default="", help="append one JSON object per model to this file")
    args = p.parse_args(argv)
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        row = lower_train_step(
            model, batch=args.batch, image_size=args.image_size, platform=args.platform
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
        print(
            f"# {model} -> {args.platform}: lowered in {row['lower_s']:.1f} s, "
            f"{row['stablehlo_mb']:.1f} MB, {row['ops']} ops, {row['case_ops']} case, "
            f"{row['activation_row_sums']} activation row sums"
        )
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return rows


if __name__ == "__main__":
    main()
