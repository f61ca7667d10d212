"""The benchmark scripts run (tiny shapes), so they cannot rot between measurements."""

from __future__ import annotations

import json

import jax
import pytest

from benchmarks import conv_algorithms


@pytest.mark.slow
def test_conv_algorithms_quick_run(capsys):
    rows = conv_algorithms.main(["--quick", "--repeats", "1", "--min-time", "0"])
    out = capsys.readouterr().out
    assert "| layer" in out and "winograd_f4" in out
    by_key = {(r["layer"], r["algorithm"]): r for r in rows}
    assert len(by_key) == len(conv_algorithms.QUICK_LAYERS) * len(conv_algorithms.ALGORITHMS)
    # Winograd runs exactly on the 3x3 stride-1 layer; everything else that runs is accurate.
    for (layer, algo), r in by_key.items():
        expect_supported = not algo.startswith("winograd") or layer == "small 3x3"
        assert r["supported"] == expect_supported, (layer, algo)
        if r["supported"]:
            assert r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0
            assert r["rel_error"] < 1e-5, (layer, algo, r["rel_error"])
    # The float64 reference must not leave x64 switched on for the rest of the process.
    assert not jax.config.jax_enable_x64


@pytest.mark.slow
def test_decoders_quick_run(tmp_path):
    """decoders.py generates its JPEGs, times the installed decoders, reports the others as
    skipped, and appends well-formed rows; Pillow's own rows agree with Pillow exactly."""
    from benchmarks import decoders

    out = tmp_path / "decoders.jsonl"
    rows = decoders.main(
        ["--n", "4", "--repeats", "1", "--only", "pillow,pillow_simd", "--out", str(out)]
    )
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    measured = {r["task"]: r for r in rows if r["candidate"] == "pillow"}
    assert set(measured) == {"decode", "decode_resize", "reduced_resize"}
    for r in measured.values():
        for key in ("images_per_s", "ms_per_image", "cpu_images_per_s", "versions", "licences",
                    "installed_mib", "max_abs_diff", "mean_abs_diff", "n_images", "cpu_model",
                    "date"):  # fmt: skip
            assert key in r, key
        assert r["images_per_s"] > 0 and r["n_images"] == 4
    assert measured["decode"]["identical_to_pillow"] == "4/4"
    assert measured["decode"]["max_abs_diff"] == 0
    skipped = [r for r in rows if r.get("skipped")]
    assert [r["candidate"] for r in skipped] == ["pillow_simd"]


def test_decoders_jpeg_set_is_deterministic(tmp_path):
    from benchmarks import decoders

    a = decoders.write_jpegs(tmp_path / "a", 3, sizes="64x48,48x64", seed=3)
    b = decoders.write_jpegs(tmp_path / "b", 3, sizes="64x48,48x64", seed=3, classes=2)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert [decoders.jpeg_size(p.read_bytes()) for p in a] == [(48, 64), (64, 48), (48, 64)]
    assert sorted(p.parent.name for p in b) == ["class0", "class0", "class1"]


def test_loader_table_one_worker_count(capsys):
    """--loader --loader-workers 0: one row per source, images/s and per-core figures, and
    the readable table."""
    from benchmarks import train_throughput

    rows = train_throughput.main(
        ["--loader", "--loader-workers", "0", "--loader-jpegs", "4", "--loader-batch", "2",
         "--steps", "1", "--repeats", "1", "--warmup", "1"]
    )  # fmt: skip
    assert [(r["case"], r["worker_count"]) for r in rows] == [
        ("digits", 0),
        ("imagenet_synthetic", 0),
        ("imagenet_jpeg", 0),
    ]
    for r in rows:
        assert r["images_per_s"] > 0 and r["images_per_s_per_core"] == r["images_per_s"]
        assert r["batches_measured"] == 1 and r["cores_used"] == 1
    assert "| imagenet_jpeg |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--loader-workers"):
        train_throughput.main(["--loader", "--loader-workers", "x"])
    assert train_throughput.default_loader_workers()[:3] == [0, 1, 2]


@pytest.mark.slow
def test_loader_device_rows_time_the_device_half_separately(capsys):
    """--loader-augment device: the loader rows name the host resize backend the flag chose,
    and each case gets one device_augment row timing augment_batch on a loader batch."""
    from benchmarks import train_throughput

    rows = train_throughput.main(
        ["--loader", "--loader-workers", "0", "--loader-jpegs", "4", "--loader-batch", "2",
         "--loader-augment", "device", "--loader-host-resize", "pillow",
         "--steps", "1", "--repeats", "1", "--warmup", "1"]
    )  # fmt: skip
    loader = [r for r in rows if r["benchmark"] == "loader"]
    augment = {r["case"]: r for r in rows if r["benchmark"] == "device_augment"}
    assert [r["case"] for r in loader] == ["digits", "imagenet_synthetic", "imagenet_jpeg"]
    assert all(
        r["augment_on"] == "device" and r["host_resize"].startswith("pillow") for r in loader
    )
    assert set(augment) == {"digits", "imagenet_synthetic", "imagenet_jpeg"}
    assert augment["digits"]["input_shape"] == augment["digits"]["output_shape"] == [32, 32, 1]
    assert augment["imagenet_jpeg"]["output_shape"] == [224, 224, 3]
    for r in augment.values():
        assert r["ms_per_batch"] > 0 and r["images_per_s"] > 0 and r["backend"] == "cpu"
    out = capsys.readouterr().out
    assert "# device augmentation, imagenet_jpeg (cpu):" in out and "| digits | device |" in out


@pytest.mark.slow
def test_default_job_benchmark_times_a_cold_run_and_holds_it_to_the_bar(tmp_path, capsys):
    from benchmarks import default_job

    out = tmp_path / "rows.jsonl"
    # 30 steps: a real cold run of the job, far too short to reach the accuracy bar.
    code = default_job.main(["--runs", "1", "--json", str(out), "--", "--config.num_steps=30"])
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["benchmark"] == "default_job" and row["augment_on"] == "device"
    assert row["wall_s"] > row["job_s"] > 0 and row["total"] == 359
    assert 0 <= row["correct"] <= 359 and row["accuracy"] < default_job.ACCURACY_BAR
    assert code == 1 and "below the 98.5% bar" in capsys.readouterr().err


@pytest.mark.slow
def test_input_bound_small_form_measures_jpeg_against_the_device_step(tmp_path):
    from benchmarks import input_bound

    out = tmp_path / "rows.jsonl"
    assert input_bound.main(["--small", "--json", str(out)]) == 0
    device, jpeg = [json.loads(line) for line in out.read_text().splitlines()]
    assert (device["data"], jpeg["data"]) == ("device", "jpeg")
    assert device["model"] == jpeg["model"] == "resnet18" and jpeg["workers"] == 1
    for row in (device, jpeg):
        assert row["images_per_s_min"] <= row["images_per_s"] <= row["images_per_s_max"]
        assert row["images_per_s"] > 0 and row["intervals"] == 2
    assert jpeg["ratio_to_device"] == pytest.approx(jpeg["images_per_s"] / device["images_per_s"])
