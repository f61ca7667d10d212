"""The performance benchmarks run (tiny settings) and their arithmetic is right.

The GPU paths (``--device gpu``: jax.devices("gpu"), channels_last, bf16 autocast,
torch.cuda synchronisation and peak memory) cannot run in CPU-only CI; these tests cover
everything else, including every worker subprocess on the CPU.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxcnn
from benchmarks import _perf_common as common
from benchmarks import _torch_peers, infer_latency, train_throughput

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_throughput_quick_lenet5(capsys, tmp_path):
    """All three peers run in their subprocesses and give well-formed, positive rows."""
    out_file = tmp_path / "rows.jsonl"
    rows = train_throughput.main(
        ["--quick", "--model", "lenet5", "--batch", "8", "--steps", "2", "--repeats", "1",
         "--peak-tflops", "1.0", "--json", str(out_file)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert [r["peer"] for r in rows] == ["jaxcnn", "torch_eager", "torch_compile"]
    assert common.read_jsonl(out_file) == json.loads(json.dumps(rows))
    flops = 3 * 2 * jaxcnn.summary("lenet5").total_macs
    for r in rows:
        assert "error" not in r, r.get("error")
        assert (r["model"], r["batch"], r["image_size"], r["device"]) == ("lenet5", 8, 32, "cpu")
        assert r["images_per_s"] > 0 and r["images_per_s_min"] <= r["images_per_s_max"]
        assert r["images_per_s_min"] <= r["images_per_s"] <= r["images_per_s_max"]
        assert r["jaxcnn_vs_peer"] > 0 and math.isfinite(r["jaxcnn_vs_peer"])
        assert r["peak_mem_bytes"] > 10 * 2**20  # an RSS, not a stray zero
        assert math.isfinite(r["final_loss"]) and 0 < r["final_loss"] < 10
        assert r["train_flops_per_image"] == flops
        assert r["peak_tflops"] == 1.0
        assert r["mfu"] == pytest.approx(r["images_per_s"] * flops / 1e12)
        assert r["cpu_model"] and r["cpus_usable"] >= 1
        assert json.dumps(r) in printed  # one JSON line per peer
    jax_row, eager, compiled = rows
    assert jax_row["jaxcnn_vs_peer"] == 1.0
    assert jax_row["vs"]["torch_eager"] == pytest.approx(
        jax_row["images_per_s"] / eager["images_per_s"]
    )
    assert jax_row["jax"] == jax.__version__ and eager["torch"] and eager["torch_threads"] >= 1
    # Same initial loss scale for both frameworks: ln(10) for 10 classes, give or take.
    assert abs(eager["final_loss"] - compiled["final_loss"]) < 1.0
    assert "| lenet5 | torch_compile |" in printed


@pytest.mark.slow
def test_infer_latency_quick_resnet18(capsys):
    rows = infer_latency.main(
        ["--quick", "--image-size", "32", "--peers", "jaxcnn,torch_eager", "--repeats", "3"]
    )
    printed = capsys.readouterr().out
    assert [(r["model"], r["batch"], r["peer"]) for r in rows] == [
        ("resnet18", 1, "jaxcnn"),
        ("resnet18", 1, "torch_eager"),
    ]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert 0 < r["min_ms"] <= r["p10_ms"] <= r["latency_ms"] <= r["p90_ms"] <= r["max_ms"]
        assert r["peer_over_jaxcnn"] > 0
        assert r["images_per_s"] == pytest.approx(1e3 / r["latency_ms"])
    assert rows[0]["peer_over_jaxcnn"] == 1.0
    assert "xla_flags" in rows[0] and rows[1]["torch_threads"] >= 1  # what the numbers depend on
    assert "| resnet18 | 1 |" in printed and "torch_eager / jaxcnn" in printed


@pytest.mark.slow
def test_torch_lenet5_is_jaxcnn_lenet5(torch):
    """Same parameter count, same names, and with jaxcnn's weights the same logits."""
    net = _torch_peers.torch_lenet5()
    assert _torch_peers.count_params(net) == jaxcnn.summary("lenet5").total_params == 61_706
    model = jaxcnn.create_model("lenet5")
    x = np.random.default_rng(0).standard_normal((3, 32, 32, 1)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), x)
    state = {k: torch.from_numpy(np.array(v)) for k, v in
             jaxcnn.convert.to_torch("lenet5", variables).items()}  # fmt: skip
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        y_torch = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    y_jax = np.asarray(model.apply(variables, x))
    np.testing.assert_allclose(y_torch, y_jax, rtol=1e-5, atol=1e-5)


def test_flops_and_mfu_of_resnet50():
    """6 x 4.09 GMACs (torchvision's figure): ~24.5 GFLOP per ResNet-50 training image, so
    6,850 images/s is 21% of an H200's 790 bfloat16 TFLOP/s."""
    flops = train_throughput.train_flops_per_image(jaxcnn.summary("resnet50").total_macs)
    assert flops == 6 * 4_089_184_256
    assert train_throughput.mfu(6_850, flops, 790.0) == pytest.approx(0.2127, abs=1e-3)
    assert train_throughput.mfu(6_850, flops, None) is None
    assert train_throughput.default_peak("gpu", "bfloat16", "NVIDIA H200")[0] == 790.0
    assert train_throughput.default_peak("gpu", "float32", "NVIDIA H200") == (None, None)
    assert train_throughput.default_peak("cpu", "bfloat16", "cpu") == (None, None)
    with pytest.raises(ValueError, match="peak_tflops"):
        train_throughput.mfu(1.0, 1.0, 0.0)


def test_compare_two_results_files(tmp_path, capsys):
    def row(device, rate, batch, **kw):
        base = {"benchmark": "train_throughput", "model": "alexnet", "peer": "jaxcnn"}
        return {**base, "device": device, "dtype": "float32", "batch": batch,
                "images_per_s": rate, **kw}  # fmt: skip

    cpu, gpu = tmp_path / "cpu.jsonl", tmp_path / "gpu.jsonl"
    common.write_jsonl(cpu, [row("cpu", 20.0, 16, cpu_model="Xeon", cpus_usable=2)])
    common.write_jsonl(gpu, [row("gpu", 1000.0, 256, device_kind="NVIDIA H200", cpu_model="EPYC")])
    (r,) = train_throughput.main(["--compare", str(cpu), str(gpu)])
    assert r["b_over_a"] == pytest.approx(50.0)
    assert r["a_machine"] == "2-core Xeon" and "NVIDIA H200" in r["b_machine"]
    assert "50.0x" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no \\(model, peer\\)"):
        train_throughput.compare(cpu, tmp_path / "cpu.jsonl", model="resnet50")


def test_summarize_and_argument_errors():
    st = common.summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (st["median"], st["min"], st["max"], st["q1"], st["q3"]) == (3.0, 1.0, 5.0, 2.0, 4.0)
    assert st["p10"] == pytest.approx(1.4) and st["p90"] == pytest.approx(4.6)
    with pytest.raises(ValueError, match="at least one"):
        common.summarize([])
    with pytest.raises(ValueError, match="--peers"):
        common.parse_peers("jaxcnn,tensorflow", train_throughput.PEERS)
    # resnet20 (the CIFAR ResNet) has no torchvision twin: refused before any work.
    with pytest.raises(ValueError, match="no torchvision twin"):
        train_throughput.main(["--model", "resnet20", "--quick"])
    with pytest.raises(ValueError, match="--warmup"):
        train_throughput.main(["--warmup", "0"])
    with pytest.raises(ValueError, match="--batches"):
        infer_latency.main(["--batches", "1,x"])


def test_scripts_import_no_data_stack():
    """The benchmarks run on machines that have JAX and torch but not the data stack (grain,
    TFDS, ml_collections): neither script (nor the engine modules its workers use) imports
    them."""
    code = (
        "import sys; import benchmarks.train_throughput, benchmarks.infer_latency; "
        "import jaxcnn.training.state, jaxcnn.training.steps, jaxcnn.training.optim, "
        "jaxcnn.training.parallel, jaxcnn.models; "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('grain', 'tensorflow_datasets', 'ml_collections', 'torch')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_loader_mode_runs():
    """--loader times create_datasets' training stream for the digits and 224x224 cases."""
    rows = train_throughput.main(
        ["--loader", "--loader-workers", "0", "--loader-jpegs", "8", "--loader-batch", "4",
         "--steps", "2", "--repeats", "1", "--warmup", "1"]
    )  # fmt: skip
    assert [r["case"] for r in rows] == ["digits", "imagenet_synthetic", "imagenet_jpeg"]
    assert [r["image_shape"] for r in rows] == [[32, 32, 1], [224, 224, 3], [224, 224, 3]]
    assert rows[0]["batch"] == 64  # the default job's batch (train/configs/lenet_digits.py)
    for r in rows:
        assert r["examples_per_s"] > 0 and r["worker_count"] == 0


def test_profile_xla_names_the_costliest_op(tmp_path):
    """The per-op profile behind the README's evidence: a matmul dominates a tiny program."""
    import jax.numpy as jnp

    f = jax.jit(lambda a, b: jnp.tanh(a @ b).sum())
    a = jnp.ones((256, 256))
    hlo = f.lower(a, a).compile().as_text()

    def run():
        for _ in range(5):
            jax.block_until_ready(f(a, a))

    top = common.profile_xla(hlo, run, tmp_path, calls=5, top=3, name="tiny")
    assert (tmp_path / "tiny_hlo.txt").read_text() == hlo
    assert top and all(op["ms_per_call"] > 0 and op["op"] in hlo for op in top)
    assert top[0]["count_per_call"] == 1.0
    assert " dot(" in top[0]["hlo"] or "fusion(" in top[0]["hlo"]


def test_run_worker_reads_the_result_line_and_reports_failures(tmp_path, monkeypatch):
    """The result line is found among a framework's chatter; a crash becomes an error row."""
    noisy = tmp_path / "noisy.py"
    noisy.write_text(
        "import sys\n"
        "from benchmarks._perf_common import emit_result\n"
        "print('compiler chatter {not json')\n"
        "emit_result({'peer': sys.argv[2], 'x': 1})\n"
        "print('more chatter')\n"
    )
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nprint('boom: bad spec', file=sys.stderr)\nsys.exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the scripts themselves insert the repo root
    ok = common.run_worker(noisy, "jaxcnn", {}, device="cpu", timeout=60)
    bad = common.run_worker(failing, "torch_eager", {}, device="cpu", timeout=60)
    assert ok == {"peer": "jaxcnn", "x": 1}
    assert bad["peer"] == "torch_eager" and "exit code 3" in bad["error"]
    assert "boom: bad spec" in bad["error"]


@pytest.mark.slow
def test_plain_flax_peer_is_a_resnet50():
    # The textbook peer must do the same work as jaxcnn's resnet50: the same parameter count
    # (torchvision's 25,557,032 at 1000 classes), and a step that maps a state to a state.
    import jax.numpy as jnp
    import optax

    from benchmarks import _flax_peer

    _, step, make_state = _flax_peer.build(1000, jnp.float32)
    tx = _flax_peer.sgd(0.01, 0.9, 1e-4)
    st = jax.eval_shape(lambda: make_state(jax.random.key(0), (64, 64, 3), tx))
    n = sum(math.prod(p.shape) for p in jax.tree.leaves(st["params"]))
    assert n == jaxcnn.summary("resnet50").total_params == 25_557_032
    batch = {"image": jnp.ones((2, 64, 64, 3)), "label": jnp.zeros((2,), jnp.int32)}
    new, metrics = jax.eval_shape(lambda: step(make_state(jax.random.key(0), (64, 64, 3), tx),
                                               batch, tx))  # fmt: skip
    assert jax.tree.structure(new) == jax.tree.structure(st) and metrics["loss"].shape == ()
    assert isinstance(tx, optax.GradientTransformation)


@pytest.mark.slow
def test_train_throughput_rows_time_each_startup_phase(capsys):
    rows = train_throughput.main(
        ["--quick", "--model", "resnet50", "--batch", "2", "--image-size", "32", "--steps", "1",
         "--repeats", "1", "--peers", "jaxcnn,plain_flax"]
    )  # fmt: skip
    assert [r["peer"] for r in rows] == ["jaxcnn", "plain_flax"]
    for r in rows:
        assert "error" not in r, r.get("error")
        phases = [r[k] for k in ("build_s", "lower_s", "compile_s", "step1_s")]
        assert all(t > 0 for t in phases)
        assert r["first_step_s"] == pytest.approx(r["lower_s"] + r["compile_s"] + r["step1_s"])
        assert r["start_to_first_step_s"] >= sum(phases)
    assert rows[0]["vs"]["plain_flax"] == pytest.approx(
        rows[0]["images_per_s"] / rows[1]["images_per_s"]
    )
    assert "(build " in capsys.readouterr().out
    with pytest.raises(ValueError, match="plain_flax peer is written for resnet50 only"):
        train_throughput.main(["--quick", "--model", "lenet5", "--peers", "jaxcnn,plain_flax"])


@pytest.mark.slow
def test_gpu_script_runs_in_its_cpu_form(tmp_path):
    # benchmarks/gpu.sh with SMALL=1: every model and peer of the GPU run, tiny shapes on the
    # CPU; torch.compile gets 1 s, so its rows record the timeout as such.
    out = tmp_path / "rows.jsonl"
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh")],
        env={**__import__("os").environ, "SMALL": "1", "OUT_FILE": str(out)},
        capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = common.read_jsonl(out)
    got = {(r["model"], r["peer"]) for r in rows}
    models = ("resnet50", "alexnet", "vgg16", "googlenet")
    peers = ("jaxcnn", "torch_eager", "torch_compile")
    want = {(m, p) for m in models for p in peers} | {("resnet50", "plain_flax")}
    assert got == want
    for r in rows:
        if r["peer"] == "torch_compile":
            assert r.get("images_per_s") or r["error"] == "timed out after 1 s"
        else:
            assert r["images_per_s"] > 0, r.get("error")
    assert "# done in" in proc.stdout


def test_lowering_reports_the_cuda_program(tmp_path):
    from benchmarks import lowering

    out = tmp_path / "rows.jsonl"
    (row,) = lowering.main(
        ["--models", "resnet20", "--batch", "2", "--image-size", "32", "--json", str(out)]
    )
    assert (row["model"], row["platform"], row["case_ops"]) == ("resnet20", "cuda", 0)
    # 19 BatchNorms x (2 forward + 2 backward) row sums, and the classifier's bias gradient.
    assert row["activation_row_sums"] == 4 * 19 + 1
    assert row["lower_s"] > 0 and row["ops"] > 1000
    assert common.read_jsonl(out) == [row]
