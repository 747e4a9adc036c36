"""Tests of thermsr_tools.bench: the CPU small variant runs and writes complete, finite figures (no timing
thresholds: speeds depend on the machine)."""
import json
import math

import pytest
import torch

from thermsr_tools import bench
from thermsr_utils import accel


pytestmark = pytest.mark.usefixtures("one_thread")


def finite_positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_small_cpu_bench_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main(["--small", "--device", "cpu", "--steps", "2", "--warmup", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {"schema_version", "created_utc", "device", "settings", "model", "matmul_tflops", "train", "eval",
            "summary"} <= set(res)
    assert res["device"]["type"] == "cpu" and res["settings"]["small"] is True
    from thermsr_utils import models

    assert res["model"] == {"name": "pan-tiny", "n_params": models.count_params(models.new_model("pan-tiny"))}
    assert finite_positive(res["matmul_tflops"]["bf16"]) and finite_positive(res["matmul_tflops"]["fp32"])
    for name, patch in (("v1", 32), ("v2", 48)):
        rec = res["train"][name]
        assert rec["batch"] == 4 and rec["patch"] == patch and rec["steps_per_epoch"] == 3   # 12 crops / 4
        assert finite_positive(rec["flops_per_step"]) and finite_positive(rec["speedup"])
        for path in ("ours", "reference"):
            r = rec[path]
            for key in ("s_per_step", "patches_per_s", "s_per_epoch", "peak_memory_mb", "achieved_tflops", "mfu"):
                assert finite_positive(r[key]), (name, path, key, r[key])
            assert r["patches_per_s"] == pytest.approx(4 / r["s_per_step"])
            assert r["s_per_epoch"] == pytest.approx(3 * r["s_per_step"])
            assert r["mfu"] == pytest.approx(r["achieved_tflops"] / res["matmul_tflops"]["bf16"])
        assert rec["ours"]["data_pipeline"] == "device"
        assert rec["ours"]["amp"] == accel.resolve_amp("auto", "cpu")   # bf16 only on a CPU that multiplies it natively
        assert rec["speedup"] == pytest.approx(rec["ours"]["patches_per_s"] / rec["reference"]["patches_per_s"])
    # v2 adds LPIPS and uses larger patches, so it costs more FLOPs per step than v1
    assert res["train"]["v2"]["flops_per_step"] > res["train"]["v1"]["flops_per_step"]
    ev = res["eval"]
    assert ev["n_crops"] == 4 and finite_positive(ev["speedup"])
    for path in ("ours", "reference"):
        assert finite_positive(ev[path]["crops_per_s"]) and finite_positive(ev[path]["peak_memory_mb"])
    assert all(finite_positive(v) for v in res["summary"].values())
    printed = capsys.readouterr().out
    assert "speed-up" in printed and str(out) in printed


def test_flop_counter_counts_a_known_layer():
    layer = torch.nn.Linear(8, 4, bias=False)
    x, y = torch.randn(2, 8), torch.randn(2, 4)
    flops = bench.count_flops(layer, lambda a, b: (a - b).abs().mean(), x, y)
    # forward and the weight gradient (the input needs none): 2 FLOPs per multiply-add, 2·8·4 of them each
    assert flops == 2 * (2 * 2 * 8 * 4)
    assert layer.weight.grad is None              # the counting step leaves no gradients behind


@pytest.mark.parametrize("argv, message", [
    (["--small", "--steps", "0"], "--steps must be"),
    (["--small", "--model", "nope"], "invalid choice"),
    (["--small", "--threads", "0"], "--threads must be"),
    (["--small", "--warmup", "-1"], "--warmup"),
])
def test_bad_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv + ["--device", "cpu"])
    assert message in capsys.readouterr().err


def test_default_output_path_names_device_and_model():
    args = bench.argparse.Namespace(device="cpu", small=True, model=None, steps=None, warmup=None, compile=False,
                                    ref_workers=None, seed=0)
    cfg = bench.make_config(args)
    assert bench.default_out(cfg).name == "bench-cpu-pan-tiny-small.json"
    assert bench.default_out(cfg).parent.name == "bench"
