"""The PyTorch side of the performance benchmarks: the same models, timed the same way.

A "twin" says which torch model matches a jaxcnn model:

* ``{"kind": "torchvision", "name": "resnet50", "kwargs": {...}}``: torchvision's model of
  that name (the registry's `reference_name` / `reference_kwargs`), and
* ``{"kind": "lenet5"}``: `TorchLeNet5` below, layer for layer jaxcnn's ``lenet5``
  (torchvision has no LeNet).

Two peers: "torch_eager" (the module as is) and "torch_compile" (`torch.compile(model)`,
default mode: TorchInductor). On a GPU the model and input are channels_last, and with
``dtype="bfloat16"`` the forward pass and loss run under `torch.autocast(..., torch.bfloat16)`
(parameters stay float32), PyTorch's usual mixed-precision recipe.

torch is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._perf_common import peak_rss_bytes, summarize

TORCH_PEERS = ("torch_eager", "torch_compile")
# SGD settings shared with the jaxcnn worker (torch.optim.SGD's L2 = optax's add_decayed_weights).
LEARNING_RATE = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
AUX_LOSS_WEIGHT = 0.3  # the engine's default weight of auxiliary classifiers (GoogLeNet, v3)


def torch_lenet5(num_classes: int = 10):
    """jaxcnn's ``lenet5`` in PyTorch, layer for layer (61,706 parameters at 10 classes).

    conv1 6@5x5 -> tanh -> avg pool 2 -> conv2 16@5x5 -> tanh -> avg pool 2 -> flatten
    (C, H, W order, as jaxcnn's `flatten_chw`) -> fc1 120 -> tanh -> fc2 84 -> tanh -> fc3.
    Input (N, 1, 32, 32) -> (N, num_classes).
    """
    from torch import nn

    class TorchLeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5)
            self.pool1 = nn.AvgPool2d(2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.pool2 = nn.AvgPool2d(2)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, num_classes)

        def forward(self, x):
            x = self.pool1(self.conv1(x).tanh())
            x = self.pool2(self.conv2(x).tanh())
            x = x.flatten(1)
            x = self.fc1(x).tanh()
            x = self.fc2(x).tanh()
            return self.fc3(x)

    return TorchLeNet5()


def build_model(twin: dict, num_classes: int):
    """The torch model a twin describes, with `num_classes` outputs, on the CPU, float32."""
    if not isinstance(twin, dict) or "kind" not in twin:
        raise ValueError(f"twin must be a dict with a 'kind'; got {twin!r}")
    if twin["kind"] == "lenet5":
        return torch_lenet5(num_classes)
    if twin["kind"] == "torchvision":
        import torchvision

        factory = getattr(torchvision.models, twin["name"], None)
        if factory is None:
            raise ValueError(f"torchvision.models has no model {twin['name']!r}")
        return factory(num_classes=num_classes, **twin.get("kwargs", {}))
    raise ValueError(f"twin kind must be 'lenet5' or 'torchvision'; got {twin['kind']!r}")


def _loss(out, labels):
    """Cross-entropy of the main output plus weighted auxiliary heads (as the engine's)."""
    import torch.nn.functional as F

    if isinstance(out, tuple):  # GoogLeNetOutputs / InceptionOutputs: (main, aux...)
        main, aux = out[0], [a for a in out[1:] if a is not None]
    else:
        main, aux = out, []
    loss = F.cross_entropy(main, labels)
    for a in aux:
        loss = loss + AUX_LOSS_WEIGHT * F.cross_entropy(a, labels)
    return loss


def _setup(spec: dict):
    """(torch, device, sync, model) for a worker spec; GPU models are channels_last."""
    import torch

    gpu = spec["device"] == "gpu"
    if gpu and not torch.cuda.is_available():
        raise RuntimeError("--device gpu, but torch.cuda.is_available() is False")
    device = torch.device("cuda:0" if gpu else "cpu")
    if spec.get("torch_threads"):
        torch.set_num_threads(int(spec["torch_threads"]))
    torch.manual_seed(0)
    model = build_model(spec["twin"], spec["num_classes"]).to(device)
    if gpu:
        # NHWC lets cuDNN use its tensor-core kernels without transposes (as jaxcnn's NHWC).
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)

    def sync():
        if gpu:
            torch.cuda.synchronize(device)

    return torch, device, sync, model


def _input(torch, spec: dict, device, batch: int):
    c, s = spec["channels"], spec["image_size"]
    x = torch.randn(batch, c, s, s, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _framework_info(torch, device) -> dict:
    import torchvision

    info = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    if device.type == "cuda":
        info["device_kind"] = torch.cuda.get_device_name(device)
    else:
        info["device_kind"] = "cpu"
    return info


def _peak_memory(torch, device) -> dict:
    if device.type == "cuda":
        return {
            "peak_mem_bytes": int(torch.cuda.max_memory_allocated(device)),
            "peak_mem_kind": "torch.cuda.max_memory_allocated",
        }
    return {"peak_mem_bytes": peak_rss_bytes(), "peak_mem_kind": "peak RSS of the worker"}


def train_worker(spec: dict) -> dict:
    """Time the training step of the torch twin: SGD(momentum, L2), cross-entropy.

    Args:
      spec: {"peer", "device", "dtype", "twin", "num_classes", "channels", "image_size",
        "batch", "steps", "warmup", "repeats", "breakdown"}.

    Returns:
      {"peer", "times_s" (one per repetition of `steps` steps), "first_step_s" (includes
      torch.compile's compilation), "final_loss", peak memory, versions, and with
      `breakdown` the median seconds of forward alone and forward + backward}.
    """
    torch, device, sync, model = _setup(spec)
    peer = spec["peer"]
    if peer not in TORCH_PEERS:
        raise ValueError(f"peer must be one of {TORCH_PEERS}; got {peer!r}")
    model.train()
    opt = torch.optim.SGD(
        model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    fwd = torch.compile(model) if peer == "torch_compile" else model
    x = _input(torch, spec, device, spec["batch"])
    y = torch.randint(0, spec["num_classes"], (spec["batch"],), device=device)
    amp = spec["dtype"] == "bfloat16"

    def forward():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            return _loss(fwd(x), y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    loss = step()
    sync()
    first = time.perf_counter() - t0
    for _ in range(max(spec["warmup"] - 1, 0)):
        loss = step()
    sync()
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        for _ in range(spec["steps"]):
            loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    result = {
        "peer": peer,
        "times_s": times,
        "first_step_s": first,
        "final_loss": float(loss.detach().float().cpu()),
        **_peak_memory(torch, device),
        **_framework_info(torch, device),
    }
    if spec.get("breakdown"):
        result["breakdown_s"] = _train_breakdown(torch, sync, forward, opt, spec)
    return result


def _train_breakdown(torch, sync, forward, opt, spec: dict) -> dict:
    """Median seconds per call of the forward pass (with loss) and of forward + backward."""

    def timed(fn) -> float:
        for _ in range(2):
            fn()
        sync()
        ts = []
        for _ in range(max(spec["repeats"], 3)):
            t0 = time.perf_counter()
            for _ in range(spec["steps"]):
                fn()
            sync()
            ts.append((time.perf_counter() - t0) / spec["steps"])
        return summarize(ts)["median"]

    def fwd_only():
        with torch.no_grad():
            forward()

    def fwd_bwd():
        opt.zero_grad(set_to_none=True)
        forward().backward()

    return {"forward": timed(fwd_only), "forward_backward": timed(fwd_bwd)}


def infer_worker(spec: dict) -> dict:
    """Per-call inference latency of the torch twin in eval mode under inference_mode.

    Args:
      spec: {"peer", "device", "twin", "num_classes", "channels", "image_size", "batches",
        "warmup", "repeats"}.

    Returns:
      {"peer", "latency_s": {str(batch): [seconds per call, ...]}, "first_call_s": {...},
      peak memory, versions}.
    """
    torch, device, sync, model = _setup(spec)
    peer = spec["peer"]
    if peer not in TORCH_PEERS:
        raise ValueError(f"peer must be one of {TORCH_PEERS}; got {peer!r}")
    model.eval()
    fwd = torch.compile(model) if peer == "torch_compile" else model
    latency: dict[str, list[float]] = {}
    first: dict[str, float] = {}
    with torch.inference_mode():
        for batch in spec["batches"]:
            x = _input(torch, spec, device, batch)
            t0 = time.perf_counter()
            fwd(x)
            sync()
            first[str(batch)] = time.perf_counter() - t0
            for _ in range(max(spec["warmup"] - 1, 0)):
                fwd(x)
            sync()
            ts = []
            for _ in range(spec["repeats"]):
                t0 = time.perf_counter()
                fwd(x)
                sync()
                ts.append(time.perf_counter() - t0)
            latency[str(batch)] = ts
    return {
        "peer": peer,
        "latency_s": latency,
        "first_call_s": first,
        **_peak_memory(torch, device),
        **_framework_info(torch, device),
    }


def count_params(model: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())
