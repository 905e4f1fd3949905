"""srpkd profile: parameters, MACs, latency per runtime; failing runtimes are reported, not raised."""
from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest
import torch

from srpkd import SrpkdError
from srpkd.cli.main import main
from srpkd.metrics.latency import percentile, profile_model, summarize
from srpkd.models import create_generator
from srpkd.runtime import export_metadata


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
    model = create_generator("resnet_9blocks", ngf=4)
    r = profile_model(model, size=32, runtimes=["onnx"], threads=1, warmup=1, runs=3)
    o = r["runtimes"]["onnx"]
    assert o["ok"], o.get("error")
    assert o["median_ms"] > 0 and "CPUExecutionProvider" in o["providers"] and r["versions"]["onnxruntime"]


def onnx_sources(monkeypatch) -> list:
    """Record what every ONNX Runtime session in this test is opened on (serialized bytes or a path)."""
    sources = []
    real = ort.InferenceSession

    def spy(source, *args, **kwargs):
        sources.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    return sources


def test_profile_onnx_times_the_checked_export(monkeypatch):
    """ONNX Runtime times what srpkd export ships: the project's export (its srpkd record, dynamic axes),
    after the same parity check, in sessions opened by the one session builder."""
    sources = onnx_sources(monkeypatch)
    model = create_generator("resnet_9blocks", ngf=4)
    o = profile_model(model, size=32, runtimes=["onnx"], threads=1, warmup=0, runs=1)["runtimes"]["onnx"]
    assert o["ok"], o.get("error")
    assert o["export"]["opset"] == 18 and o["export"]["dynamic"] and o["export"]["max_abs_diff"] <= 1e-4
    # two sessions: the export's parity check, then the timed one, on the same bytes
    assert len(sources) == 2 and sources[0] == sources[1] and isinstance(sources[1], bytes)
    proto = onnx.load_from_string(sources[1])
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["srpkd"]) == export_metadata(model)
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", "", "height", "width"]


def test_profile_onnx_never_falls_back_to_a_plain_export(monkeypatch):
    """If the project's exporter fails, profiling ONNX fails with its reason; nothing else is exported and timed
    in its place (it once fell back to a bare torch.onnx.export on a TypeError, timing an unchecked graph)."""
    plain_exports = []
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: plain_exports.append(a))

    def broken(*args, **kwargs):
        raise TypeError("to_onnx() got an unexpected keyword argument")

    monkeypatch.setattr("srpkd.export.onnx.to_onnx", broken)
    sources = onnx_sources(monkeypatch)
    r = profile_model(create_generator("resnet_9blocks", ngf=4), size=32, runtimes=["eager", "onnx"], threads=1,
                      warmup=0, runs=1)
    o = r["runtimes"]["onnx"]
    assert not o["ok"] and o["error"] == "TypeError: to_onnx() got an unexpected keyword argument"
    assert plain_exports == [] and sources == [] and "median_ms" not in o
    assert r["runtimes"]["eager"]["ok"]  # one failing runtime never stops the others


def test_profile_onnx_reports_a_failed_parity_check(monkeypatch):
    """An export that does not match PyTorch is a failed runtime with the check's one-line reason."""
    def differs(model, runner, shapes, atol, what):
        raise SrpkdError(f"{what} output differs from PyTorch by 0.5 (> {atol:g}) on a 1x3x32x32 input")

    monkeypatch.setattr("srpkd.export.onnx.check_parity", differs)
    o = profile_model(create_generator("resnet_9blocks", ngf=4), size=32, runtimes=["onnx"], threads=1,
                      warmup=0, runs=1)["runtimes"]["onnx"]
    assert not o["ok"] and o["error"].startswith("ONNX Runtime output differs from PyTorch by 0.5")


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
