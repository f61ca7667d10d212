"""The benchmark scripts run (tiny shapes), so they cannot rot between measurements."""

from __future__ import annotations

import jax

from benchmarks import conv_algorithms


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
