"""Evaluate a checkpoint: `python -m train.evaluate`.

  # A jaxcnn workdir (its model and normalisation are recorded in it), on its own test split:
  python -m train.evaluate --weights runs/lenet_digits

  # A PyTorch file from elsewhere, on CIFAR-10's test split through TFDS:
  python -m train.evaluate --model resnet20 --weights resnet20-12fca82f.th \\
      --data cifar10 --preset cifar10_imagenet_stats

  # torchvision weights on an ImageNet-style folder (one subfolder per class):
  python -m train.evaluate --model resnet50 --weights resnet50-11ad3fa6.pth \\
      --data /data/imagenet/val --preset imagenet

Prints top-1, top-5, mean cross-entropy and per-class top-1, and writes them as JSON
(--json; by default beside the weights: FILE.eval.json, or WORKDIR/evaluation.json). The
same from Python: `jaxcnn.evaluation.evaluate_weights`. Presets: `jaxcnn.data.PRESETS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, e.g. 0.485,0.456,0.406; got {text!r}"
        ) from None


def _rule(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected PATTERN=REPLACEMENT; got {text!r}")
    pattern, replacement = text.split("=", 1)
    return pattern, replacement


def parse(argv=None) -> argparse.Namespace:
    from jaxcnn.data import PRESETS

    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True, help="weight file or jaxcnn workdir")
    p.add_argument("--model", default=None, help="registry name (optional for a workdir)")
    p.add_argument("--data", default="digits", help="digits | a TFDS name | an image folder")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="preprocessing")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--resize", type=int, default=None, help="shorter side before the centre crop")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3))
    p.add_argument("--mean", type=_floats, default=None, help="per channel, [0, 1] units")
    p.add_argument("--std", type=_floats, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--rename", type=_rule, action="append", default=[], help="key rule PATTERN=REPLACEMENT"
    )
    p.add_argument("--json", default=None, help="where to write the result")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1; got {args.batch_size}")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    from jaxcnn.evaluation import evaluate_weights

    weights = os.path.abspath(args.weights)
    if args.json is None:
        args.json = (
            os.path.join(weights, "evaluation.json")
            if os.path.isdir(weights)
            else f"{weights}.eval.json"
        )
    res = evaluate_weights(
        weights,
        model=args.model,
        data=args.data,
        split=args.split,
        preset=args.preset,
        data_dir=args.data_dir,
        image_size=args.image_size,
        eval_resize=args.resize,
        channels=args.channels,
        mean=args.mean,
        std=args.std,
        batch_size=args.batch_size,
        rename=args.rename,
        json_path=args.json,
    )
    print(f"{res['model']} on {res['data']}: {res['count']} images")
    rows = sorted(
        (c for c in res["per_class"] if c["count"]), key=lambda c: (c["top1"], c["label"])
    )
    shown = rows if len(rows) <= 20 else rows[:10] + rows[-10:]
    if len(rows) > 20:
        print(f"per-class top-1 (the 10 lowest and 10 highest of {len(rows)} classes):")
    else:
        print("per-class top-1:")
    for c in shown:
        print(f"  {c['label']:>4} {c['name'][:30]:<30} {c['top1'] * 100:6.2f}%  ({c['count']})")
    print(f"loss {res['loss']:.4f}  top-5 {res['top5'] * 100:.2f}%  (written to {args.json})")
    print(f"top-1: {res['top1'] * 100:.2f}% ({res['correct']}/{res['count']} correct)")
    return res


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
