"""srpkd profile: parameters, MACs, latency per runtime; failing runtimes are reported, not raised."""
from __future__ import annotations

import json

import pytest
import torch

from srpkd.cli.main import main
from srpkd.metrics.latency import percentile, profile_model, summarize
from srpkd.models import create_generator


def test_percentile_and_summary():
    xs = [float(i) for i in range(1, 11)]
    assert percentile(xs, 50) == pytest.approx(5.5)
    assert percentile(xs, 90) == pytest.approx(9.1)
    s = summarize(xs)
    assert s["median_ms"] == 5.5 and s["min_ms"] == 1.0 and s["runs"] == 10


def test_profile_eager_and_failed_compile(monkeypatch):
    def broken_compile(*a, **k):
        raise RuntimeError("no C++ compiler\nmore detail")

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = create_generator("resnet_9blocks", ngf=4)
    before = torch.get_num_threads()
    r = profile_model(model, size=32, runtimes=["eager", "compile"], threads=1, warmup=1, runs=3)
    assert torch.get_num_threads() == before  # restored
    assert r["params"] > 0 and r["macs"] > 0 and r["threads"] == 1 and r["batch"] == 1
    e = r["runtimes"]["eager"]
    assert e["ok"] and 0 < e["min_ms"] <= e["median_ms"] <= e["p90_ms"] and e["runs"] == 3
    c = r["runtimes"]["compile"]
    assert not c["ok"] and c["error"] == "RuntimeError: no C++ compiler"


def test_profile_onnx_runtime():
    pytest.importorskip("onnxruntime")
    r = profile_model(create_generator("resnet_9blocks", ngf=4), size=32, runtimes=["onnx"], threads=1, warmup=1, runs=3)
    o = r["runtimes"]["onnx"]
    assert o["ok"], o.get("error")
    assert o["median_ms"] > 0 and "CPUExecutionProvider" in o["providers"] and r["versions"]["onnxruntime"]


def test_cli_profile_json(capsys, tmp_path):
    out = tmp_path / "p.json"
    assert main(["profile", "--arch", "resnet_9blocks", "--ngf", "4", "--size", "32", "--runtime", "eager",
                 "--warmup", "0", "--runs", "2", "--threads", "1", "--json", "-o", str(out)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["runtimes"]["eager"]["ok"] and json.loads(out.read_text())["macs"] == r["macs"]


@pytest.mark.parametrize("argv, message", [
    (["profile"], "give a checkpoint or --arch"),
    (["profile", "--arch", "resnet_9blocks", "--size", "30"], "multiple of"),
    (["profile", "--arch", "resnet_9blocks", "--runtime", "tensorrt", "--size", "32"], "unknown runtime"),
    (["profile", "--arch", "resnet_9blocks", "--runs", "0", "--size", "32"], "--runs"),
])
def test_cli_profile_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
