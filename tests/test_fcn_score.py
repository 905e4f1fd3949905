"""FCN-score (srpkd eval --segmenter): palettes, the confusion-matrix scores, segmenter files, the CLI path, and a
real segmenter trained on the facades photos that must tell real photos from blurred or shuffled ones."""
from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

from srpkd.checkpoint import save_generator
from srpkd.cli.main import main
from srpkd.config import load_config
from srpkd.errors import SrpkdError
from srpkd.metrics.segmentation import (CITYSCAPES, FACADES, IGNORE, FcnScorer, Palette, Segmenter, confusion,
                                        fcn_scores, infer_palette, label_ids, load_palette)
from srpkd.models import create_generator

ROOT = Path(__file__).resolve().parents[1]


def as_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def blocks(palette: Palette, size: int = 32, seed: int = 0, block: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A label map of square blocks of random palette classes: (H, W, 3) uint8 colours and (H, W) class ids."""
    rng = np.random.default_rng(seed)
    ids = np.kron(rng.integers(0, len(palette.classes), (size // block, size // block)), np.ones((block, block), int))
    return np.array(palette.colors, np.uint8)[ids], ids


def jpeg(rgb: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


class NearestColour(nn.Module):
    """A segmenter that is exact on clean label maps: class scores 2 x.c - |c|^2 (a 1x1 convolution) pick the
    palette colour nearest to each pixel in [-1, 1]."""

    def __init__(self, palette: Palette):
        super().__init__()
        c = torch.tensor(palette.colors, dtype=torch.float32) / 127.5 - 1
        self.conv = nn.Conv2d(3, len(c), 1)
        with torch.no_grad():
            self.conv.weight.copy_(2 * c[:, :, None, None])
            self.conv.bias.copy_(-(c**2).sum(1))

    def forward(self, x):
        return self.conv(x)


def torchscript_file(model: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.trace(model.eval(), torch.zeros(1, 3, 16, 16)), str(path))
    return path


@pytest.fixture(scope="module")
def onnx_segmenter(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seg") / "nearest.onnx"
    dyn = torch.export.Dim.DYNAMIC
    torch.onnx.export(NearestColour(FACADES).eval(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=True,
                      dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},), verbose=False)
    return path


# ----------------------------------------------------------------------------- palettes and label maps


def test_jpeg_label_maps_map_to_their_classes():
    rgb, ids = blocks(FACADES, 128, block=32)
    got = label_ids(as_tensor(jpeg(rgb)), FACADES)[0].numpy()
    known = got != IGNORE
    assert known.mean() > 0.85  # JPEG's chroma smear at block borders leaves some pixels unmatched
    assert (got[known] == ids[known]).mean() > 0.95
    assert (label_ids(as_tensor(rgb), FACADES)[0].numpy() == ids).all()  # lossless: exact


def test_far_and_void_colours_are_ignored():
    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[:, :8] = (128, 128, 128)  # grey: far from every facades colour
    rgb[:, 8:] = (0, 0, 222)  # background
    ids = label_ids(as_tensor(rgb), FACADES)[0]
    assert (ids[:, :8] == IGNORE).all() and (ids[:, 8:] == 0).all()
    void = np.zeros((4, 4, 3), np.uint8)  # Cityscapes "unlabeled" is black: void
    assert (label_ids(as_tensor(void), CITYSCAPES) == IGNORE).all()


def test_palettes_by_name_file_and_data_folder(tmp_path):
    assert load_palette("facades") is FACADES and len(FACADES.classes) == 12
    assert infer_palette("/data/facades") is FACADES and infer_palette("x/cityscapes/") is CITYSCAPES
    with pytest.raises(SrpkdError, match="--palette"):
        infer_palette("/data/shoes")
    spec = {"classes": [{"name": "sky", "color": [0, 0, 255]}, {"name": "grass", "color": [0, 255, 0]}],
            "void": [[0, 0, 0]], "tolerance": 50}
    (tmp_path / "mine.json").write_text(json.dumps(spec))
    p = load_palette(str(tmp_path / "mine.json"))
    assert p.classes == ("sky", "grass") and p.void == ((0, 0, 0),) and p.tolerance == 50
    for bad in ('{"classes": [{"name": "x", "color": [0, 0]}]}', '{"classes": 3}', "not json", "[]"):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(SrpkdError, match="palette"):
            load_palette(str(tmp_path / "bad.json"))
    with pytest.raises(SrpkdError, match="unknown palette"):
        load_palette("nope")


# ----------------------------------------------------------------------------- scores


def test_scores_as_pix2pix_computes_them():
    target = torch.tensor([[0, 0, 0, 1, 1, IGNORE]])
    pred = torch.tensor([[0, 0, 1, 1, 2, 0]])  # class 2 is predicted but absent from the labels
    conf = confusion(pred, target, 3)
    assert conf.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    s = fcn_scores(conf, ["a", "b", "c"])
    assert s["pixel_acc"] == pytest.approx(3 / 5)
    assert s["mean_class_acc"] == pytest.approx((2 / 3 + 1 / 2) / 2)  # class c has no pixels: no accuracy
    ious = [2 / 3, 1 / 3, 0.0]  # a: 2 / (3 + 2 - 2); b: 1 / (2 + 2 - 1); c: predicted, never true: 0
    assert s["mean_iou"] == pytest.approx(sum(ious) / 3)
    assert s["per_class"]["c"] == {"acc": None, "iou": 0.0, "pixels": 0}
    # a class neither present nor predicted has no IoU either, and ids outside the palette are wrong predictions
    s = fcn_scores(confusion(torch.tensor([0, 0, 7]), torch.tensor([0, 0, 0]), 2), ["a", "b"])
    assert s["per_class"]["b"]["iou"] is None and s["mean_iou"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- segmenter files


def test_torchscript_and_onnx_segmenters_agree_and_are_exact_on_label_maps(tmp_path, onnx_segmenter):
    rgb, ids = blocks(FACADES, 32, seed=1)
    x = as_tensor(rgb).repeat(2, 1, 1, 1)
    ts = Segmenter(torchscript_file(NearestColour(FACADES), tmp_path / "nearest.pt"))
    onnx = Segmenter(onnx_segmenter)
    assert (ts.runtime, onnx.runtime) == ("torchscript", "onnx")
    for seg in (ts, onnx):
        assert (seg(x, 12)[0].numpy() == ids).all()
    s = FcnScorer(onnx, FACADES).score(x, torch.from_numpy(ids)[None].repeat(2, 1, 1))
    assert s["pixel_acc"] == 1.0 and s["mean_iou"] == 1.0


class HalfSize(nn.Module):
    def forward(self, x):
        return nn.functional.avg_pool2d(x[:, :2], 2)  # 2 classes, at half the size


class Ids(nn.Module):
    def forward(self, x):
        return (x[:, 0] > 0).long()


def test_segmenter_outputs_are_resized_and_ids_accepted(tmp_path):
    x = torch.zeros(1, 3, 8, 8)
    x[:, 1] = 1.0  # channel 1 wins everywhere
    assert Segmenter(torchscript_file(HalfSize(), tmp_path / "half.pt"))(x, 2).shape == (1, 8, 8)
    x[:, 0, :, :4] = 1.0
    ids = Segmenter(torchscript_file(Ids(), tmp_path / "ids.pt"))(x, 2)
    assert ids[0, 0].tolist() == [1] * 4 + [0] * 4


def test_segmenter_input_ranges(tmp_path):
    class Echo(nn.Module):
        def forward(self, x):
            return x

    path = torchscript_file(Echo(), tmp_path / "echo.pt")
    x = torch.full((1, 3, 2, 2), -1.0)
    assert Segmenter(path, inputs="unit")._prepare(x).max() == 0.0
    assert Segmenter(path, inputs="imagenet")._prepare(x)[0, 0, 0, 0] == pytest.approx(-0.485 / 0.229)


@pytest.mark.parametrize("content, message", [
    (None, "segmenter not found"),
    (b"garbage, not a model", "not a readable ONNX model"),
    ("zip", "not a readable TorchScript file"),
])
def test_bad_segmenter_files_are_one_error(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("data.pkl", b"\x80\x04K\x01.")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SrpkdError, match=message):
        Segmenter(path)


def test_segmenter_of_the_wrong_classes_is_an_error(tmp_path):
    seg = Segmenter(torchscript_file(HalfSize(), tmp_path / "half.pt"))
    with pytest.raises(SrpkdError, match="scores 2 classes; the palette has 12"):
        seg(torch.zeros(1, 3, 8, 8), 12)


# ----------------------------------------------------------------------------- srpkd eval --segmenter


def label_dataset(root: Path, n_test: int = 3, size: int = 32) -> Path:
    """pix2pix layout [photo | label map]; the 'photo' is the label map itself, so the real photos score 1."""
    for split, n in (("train", 2), ("test", n_test)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            rgb, _ = blocks(FACADES, size, seed=10 * (split == "test") + i)
            Image.fromarray(np.concatenate([rgb, rgb], 1)).save(root / split / f"{i}.png")
    return root


def write_run(tmp_path: Path, data: Path) -> Path:
    teacher = tmp_path / "teacher.safetensors"
    torch.manual_seed(1)
    save_generator(create_generator("resnet_9blocks", ngf=8), teacher)
    cfg = load_config(None, ["task=paired", "data.mode=aligned", f"data.root={data}", "data.direction=BtoA",
                             "data.crop_size=32", f"teacher.checkpoint={teacher}", "optim.steps=1"])
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    torch.manual_seed(0)
    save_generator(create_generator("resnet_9blocks", ngf=4), run / "student.safetensors")
    return run


def test_cli_eval_with_a_segmenter_writes_per_class_fcn_scores(tmp_path, onnx_segmenter, monkeypatch, capsys):
    monkeypatch.setenv("SRPKD_CACHE", str(tmp_path / "cache"))
    run = write_run(tmp_path, label_dataset(tmp_path / "facades"))
    assert main(["eval", str(run), "-q", "--no-perceptual", "--segmenter", str(onnx_segmenter)]) == 0
    out = capsys.readouterr().out
    assert "FCN-score" in out and "mean IoU" in out
    fcn = json.loads((run / "metrics.json").read_text())["directions"]["BtoA"]["fcn"]
    assert fcn["palette"] == "facades" and fcn["runtime"] == "onnx" and fcn["ignore_label"] == IGNORE
    assert set(fcn) >= {"student", "teacher", "real"}
    assert fcn["real"]["pixel_acc"] == 1.0 and fcn["real"]["mean_iou"] == 1.0  # the real 'photos' are the maps
    assert fcn["student"]["pixel_acc"] < 0.9  # an untrained generator's outputs are not
    assert set(fcn["student"]["per_class"]) == set(FACADES.classes)
    assert sum(c["pixels"] for c in fcn["real"]["per_class"].values()) == 3 * 32 * 32


@pytest.mark.parametrize("extra, message", [
    (["--segmenter", "MISSING"], "segmenter not found"),
    (["--segmenter", "GARBAGE"], "not a readable ONNX model"),
    (["--palette", "facades"], "--palette goes with --segmenter"),
    (["--segmenter", "SEG", "--palette", "nope"], "unknown palette"),
    (["--segmenter", "SEG", "--direction", "AtoB", "--data", "PHOTOS"], "do not look like facades label maps"),
])
def test_cli_segmenter_errors_are_one_line(tmp_path, onnx_segmenter, monkeypatch, capsys, extra, message):
    monkeypatch.setenv("SRPKD_CACHE", str(tmp_path / "cache"))
    run = write_run(tmp_path, label_dataset(tmp_path / "facades"))
    (tmp_path / "garbage.onnx").write_bytes(b"\x00" * 64)
    photos = tmp_path / "photos_facades"
    for split in ("train", "test"):  # photo halves of random noise: not label maps
        (photos / split).mkdir(parents=True)
        for i in range(2):
            rgb = np.random.default_rng(i).integers(0, 256, (32, 64, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(photos / split / f"{i}.png")
    names = {"MISSING": str(tmp_path / "missing.onnx"), "GARBAGE": str(tmp_path / "garbage.onnx"),
             "SEG": str(onnx_segmenter), "PHOTOS": str(photos)}
    argv = ["eval", str(run), "-q", "--no-perceptual", *[names.get(a, a) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("srpkd: error:") and err.count("\n") == 0 and message in err


# ----------------------------------------------------------------------------- a real segmenter on facades


def test_real_segmenter_tells_real_photos_from_blurred_and_shuffled(shared_data, tmp_path):
    """benchmarks/train_segmenter.py --quick: a small U-Net, 150 steps on 100 facades photos at 64 px, exported
    to ONNX and scored through srpkd's Segmenter on 24 test photos."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_segmenter.py"), "--quick", "--json", "--data",
         str(shared_data), "--out", str(tmp_path / "seg")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["set"]: r for r in map(json.loads, proc.stdout.splitlines()) if "set" in r}
    real, blurred, shuffled = rows["real"], rows["blurred"], rows["shuffled"]
    for other in (blurred, shuffled):
        assert real["pixel_acc"] > other["pixel_acc"] + 0.08
        assert real["mean_iou"] > 1.5 * other["mean_iou"]
        assert real["mean_class_acc"] > 1.3 * other["mean_class_acc"]
    results = json.loads((tmp_path / "seg" / "results.json").read_text())
    assert results["onnx_max_abs_diff"] < 1e-3 and (tmp_path / "seg" / "facades_segmenter.onnx").is_file()
