"""srpkd export: ONNX and TorchScript match PyTorch, carry their metadata, and never leave a bad file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from srpkd import SrpkdError, create_generator, load_generator, save_generator
from srpkd.cli.main import main
from srpkd.export import export_model
from srpkd.inference import load_runner
from srpkd.runtime import OnnxRunner, TorchScriptRunner, export_metadata, max_abs_diff

# (id, arch, kwargs, sizes checked: square, non-square both ways)
FAMILIES = [
    ("resnet-instance", "resnet_9blocks", {"norm": "instance"}, [(64, 64), (96, 128), (128, 64)]),
    ("resnet-instance-affine", "resnet_9blocks", {"norm": "instance_affine"}, [(64, 64), (96, 128), (128, 64)]),
    ("skip-resnet", "skip_resnet_9blocks", {"norm": "instance"}, [(64, 64), (96, 128), (128, 64)]),
    ("mobile-resnet", "mobile_resnet_9blocks", {"norm": "instance"}, [(64, 64), (96, 128), (128, 64)]),
    ("unet-batchnorm", "unet_128", {"norm": "batch"}, [(128, 128), (256, 128), (128, 256)]),
]
IDS = [f[0] for f in FAMILIES]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_generator(arch: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A tiny generator whose norm parameters and running statistics are far from their defaults,
    so an export that drops or freezes them cannot pass."""
    torch.manual_seed(seed)
    g = create_generator(arch, ngf=4, **kwargs)
    for m in g.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)):
            if m.weight is not None:
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)
            if m.running_mean is not None:
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return g.eval()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("srpkd: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Path]]]:
    """Every family saved as a checkpoint and exported through the CLI in both formats (once per module:
    an ONNX export takes seconds)."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for name, arch, kwargs, sizes in FAMILIES:
        ckpt = root / f"{name}.safetensors"
        save_generator(make_generator(arch, **kwargs), ckpt)
        size = f"{sizes[0][0]}"
        assert main(["export", str(ckpt), "--size", size]) == 0  # default name: beside the checkpoint
        ts = root / f"{name}.ts.torchscript"
        assert main(["export", str(ckpt), "--format", "torchscript", "--size", size, "-o", str(ts)]) == 0
        out[name] = (ckpt, {"onnx": ckpt.with_suffix(".onnx"), "torchscript": ts})
    return out


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name, arch, kwargs, sizes", FAMILIES, ids=IDS)
def test_parity_at_three_sizes(exported, name, arch, kwargs, sizes, fmt):
    ckpt, files = exported[name]
    model = load_generator(ckpt)
    runner = load_runner(files[fmt])
    assert isinstance(runner, OnnxRunner if fmt == "onnx" else TorchScriptRunner)
    for i, (h, w) in enumerate(sizes):
        batch = 2 if i == 1 else 1
        assert max_abs_diff(model, runner, (batch, 3, h, w), seed=i) <= 1e-4, (h, w)


@pytest.mark.parametrize("name", IDS)
def test_metadata_round_trip_and_checker(exported, name):
    ckpt, files = exported[name]
    model = load_generator(ckpt)
    expected = export_metadata(model)
    assert expected["size_multiple"] == model.size_multiple
    assert expected["input_range"] == [-1.0, 1.0]
    for path in files.values():
        meta = load_runner(path).metadata
        assert meta == expected
        rebuilt = create_generator(meta["arch"], **meta["kwargs"])
        assert rebuilt.size_multiple == model.size_multiple
    proto = onnx.load(str(files["onnx"]))
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_instance_norm_exports_as_instance_normalization(exported):
    for name in ("resnet-instance", "resnet-instance-affine"):
        proto = onnx.load(str(exported[name][1]["onnx"]))
        ops = {n.op_type for n in proto.graph.node}
        assert "InstanceNormalization" in ops and "Pad" in ops and "ConvTranspose" in ops
        assert "Reshape" not in ops  # not the training path's group norm (models.base.InstanceNorm2d)
        assert "Concat" not in ops  # nor the training path's reflection pad from slices (models.base.ReflectionPad2d)


def test_static_export_has_fixed_shape(tmp_path, capsys):
    model = make_generator("resnet_9blocks")
    path = tmp_path / "static.onnx"
    report = export_model(model, path, "onnx", size=(64, 96), dynamic=False)
    assert report.checked_shapes == [(1, 3, 64, 96)] and report.max_abs_diff <= 1e-4
    runner = load_runner(path)
    assert runner.fixed_shape == (1, 3, 64, 96)
    assert max_abs_diff(model, runner, (3, 3, 64, 96)) <= 1e-4  # a batch of 3 is fed one by one
    with pytest.raises(SrpkdError, match="fixed input of 1x3x64x96"):
        runner(np.zeros((1, 3, 64, 64), np.float32))
    # translate refuses up front, naming the size to use
    img = tmp_path / "in.png"
    Image.new("RGB", (50, 40)).save(img)
    assert main(["translate", str(path), str(img), str(tmp_path / "out.png")]) == 2
    assert "use --size 64x96" in one_line_error(capsys)
    assert main(["translate", str(path), str(img), str(tmp_path / "out.png"), "--size", "64x96"]) == 0
    assert Image.open(tmp_path / "out.png").size == (96, 64)


def test_refuses_to_overwrite(exported, tmp_path, capsys):
    ckpt, _ = exported["resnet-instance"]
    target = tmp_path / "model.torchscript"
    target.write_bytes(b"keep me")
    for fmt in ("onnx", "torchscript"):
        assert main(["export", str(ckpt), "--format", fmt, "-o", str(target)]) == 2
        assert f"{target} exists; use --overwrite" in one_line_error(capsys)
    assert target.read_bytes() == b"keep me"
    assert main(["export", str(ckpt), "--format", "torchscript", "-o", str(target), "--overwrite", "--size", "64"]) == 0
    assert load_runner(target).metadata["arch"] == "resnet_9blocks"


def wrong_output(self, x):
    return np.zeros_like(x) + 0.5


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_failing_parity_writes_nothing(exported, tmp_path, monkeypatch, capsys, fmt):
    ckpt, files = exported["resnet-instance"]
    runner_class = OnnxRunner if fmt == "onnx" else TorchScriptRunner
    monkeypatch.setattr(runner_class, "__call__", wrong_output)
    if fmt == "onnx":  # reuse the module's export: the test is about what happens after it
        data = files["onnx"].read_bytes()
        monkeypatch.setattr("srpkd.export.onnx.to_onnx", lambda *a, **k: data)
    fresh, existing = tmp_path / f"fresh.{fmt}", tmp_path / f"existing.{fmt}"
    existing.write_bytes(b"previous export")
    assert main(["export", str(ckpt), "--format", fmt, "-o", str(fresh), "--size", "64"]) == 2
    line = one_line_error(capsys)
    assert "differs from PyTorch by" in line and f"nothing written to {fresh}" in line
    assert main(["export", str(ckpt), "--format", fmt, "-o", str(existing), "--size", "64", "--overwrite"]) == 2
    one_line_error(capsys)
    assert not fresh.exists()
    assert existing.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name]  # no temporary files left


def test_export_errors_are_single_lines(exported, tmp_path, capsys):
    ckpt, _ = exported["unet-batchnorm"]
    cases = [
        (["export", str(tmp_path / "missing.safetensors")], "checkpoint not found"),
        (["export", str(ckpt), "--size", "64", "-o", str(tmp_path / "u.onnx")], "multiples of 128, got 64x64"),
        (["export", str(ckpt), "--size", "big"], "expected S or HxW"),
        (["export", str(ckpt), "--format", "torchscript", "--static"], "--static applies to ONNX only"),
        (["export", str(ckpt), "--format", "tflite"], "invalid choice"),
        (["export", str(ckpt), "-o", str(tmp_path)], "is a folder"),
        (["export", str(ckpt), "--opset", "17", "-o", str(tmp_path / "u.onnx")], "needs opset 18 or newer"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_unreadable_exports_are_clear_errors(tmp_path):
    bad_onnx, bad_ts = tmp_path / "bad.onnx", tmp_path / "bad.torchscript"
    bad_onnx.write_bytes(b"not a model")
    bad_ts.write_bytes(b"not a model")
    with pytest.raises(SrpkdError, match="not a readable ONNX model"):
        load_runner(bad_onnx)
    with pytest.raises(SrpkdError, match="not a readable TorchScript file"):
        load_runner(bad_ts)
    with pytest.raises(SrpkdError, match="ONNX model not found"):
        load_runner(tmp_path / "missing.onnx")
