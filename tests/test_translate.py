"""srpkd translate and srpkd.translate: any image size, folders, failures reported, runtimes agree."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import srpkd
from srpkd import SrpkdError, create_generator, save_generator
from srpkd.cli.main import main
from srpkd.export.onnx import export_onnx
from srpkd.inference import TorchRunner, load_runner, pad_reflect, padded_size, run_batch


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny ResNet as a checkpoint and as an ONNX export (exported once: it takes seconds)."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    g = create_generator("resnet_9blocks", ngf=4, norm="instance_affine")
    save_generator(g, root / "g.safetensors")
    export_onnx(g, root / "g.onnx", size=(64, 64))
    return {"torch": root / "g.safetensors", "onnx": root / "g.onnx"}


@pytest.fixture
def photos(tmp_path) -> Path:
    """Nested folders, odd sizes, grayscale, RGBA, JPEG, and one corrupt file."""
    root = tmp_path / "photos"
    write_image(root / "odd.png", 37, 53, seed=1)
    write_image(root / "a" / "gray.png", 40, 24, seed=2, mode="L")
    write_image(root / "a" / "b" / "alpha.png", 30, 33, seed=3, mode="RGBA")
    write_image(root / "a" / "b" / "photo.jpg", 64, 48, seed=4)
    write_image(root / "a" / "same_size.png", 38, 54, seed=5)  # pads to odd.png's 40x56: one batch
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return root


EXPECTED = {  # output path -> size (w, h)
    "odd.png": (37, 53),
    "a/gray.png": (40, 24),
    "a/b/alpha.png": (30, 33),
    "a/b/photo.jpg": (64, 48),
    "a/same_size.png": (38, 54),
}


def outputs(folder: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with Image.open(p) as img:
                assert img.mode == "RGB"
                found[p.relative_to(folder).as_posix()] = img.size
    return found


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.int16)


def test_folder_with_a_corrupt_file(models, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["translate", str(models["torch"]), str(photos), str(out), "--batch", "2"]) == 2
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "broken.png" in skipped[0]
    assert captured.err.strip().splitlines()[-1] == "srpkd: error: 1 of 6 images failed"
    assert "translated 5 of 6 images" in captured.out
    assert outputs(out) == EXPECTED  # the rest written, relative paths and names kept, JPEG stays JPEG

    # the CLI's batched, padded result is what the API gives for each image alone
    model = srpkd.load_generator(models["torch"])
    for rel in ("odd.png", "a/gray.png", "a/b/alpha.png"):
        alone = srpkd.translate(model, Image.open(photos / rel))
        assert np.array_equal(np.asarray(alone, dtype=np.int16), pixels(out / rel)), rel


def test_existing_outputs_refused_before_any_work(models, photos, tmp_path, capsys):
    (photos / "a" / "broken.png").unlink()
    out = tmp_path / "out"
    assert main(["translate", str(models["torch"]), str(photos), str(out)]) == 0
    capsys.readouterr()
    (out / "odd.png").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.*")}
    assert main(["translate", str(models["torch"]), str(photos), str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("srpkd: error: ") and "exists (and 3 more); use --overwrite" in line and "\n" not in line
    assert not (out / "odd.png").exists()  # nothing was done
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.*")} == before
    assert main(["translate", str(models["torch"]), str(photos), str(out), "--overwrite"]) == 0
    assert outputs(out) == EXPECTED


def test_onnx_and_torch_runtimes_agree(models, photos, tmp_path, monkeypatch):
    (photos / "a" / "broken.png").unlink()
    # A checkpoint with --runtime onnx is exported in memory and checked; the export itself (seconds,
    # tested in test_export) is replaced by the fixture's export of the same model.
    data = models["onnx"].read_bytes()
    monkeypatch.setattr("srpkd.export.onnx.to_onnx", lambda *a, **k: data)
    runs = {
        "torch": [str(models["torch"])],
        "onnx-file": [str(models["onnx"]), "--batch", "3"],
        "checkpoint-on-onnx": [str(models["torch"]), "--runtime", "onnx"],
    }
    for name, argv in runs.items():
        assert main(["translate", argv[0], str(photos), str(tmp_path / name), "--ext", "png", *argv[1:]]) == 0
    for rel in EXPECTED:
        rel = rel.replace(".jpg", ".png")
        reference = pixels(tmp_path / "torch" / rel)
        for name in ("onnx-file", "checkpoint-on-onnx"):
            assert np.abs(pixels(tmp_path / name / rel) - reference).max() <= 1, (name, rel)


def test_resize_single_file_and_ext(models, photos, tmp_path, capsys):
    src = photos / "odd.png"
    assert main(["translate", str(models["onnx"]), str(src), str(tmp_path / "r.jpg"), "--size", "48"]) == 0
    assert Image.open(tmp_path / "r.jpg").size == (48, 48) and Image.open(tmp_path / "r.jpg").format == "JPEG"
    assert main(["translate", str(models["torch"]), str(src), str(tmp_path / "wide.png"), "--size", "30x50"]) == 0
    assert Image.open(tmp_path / "wide.png").size == (50, 30)
    folder = tmp_path / "into"
    folder.mkdir()
    assert main(["translate", str(models["torch"]), str(photos / "a" / "b" / "photo.jpg"), str(folder)]) == 0
    assert main(["translate", str(models["torch"]), str(src), str(folder), "--ext", "jpg", "--threads", "1"]) == 0
    assert outputs(folder) == {"photo.jpg": (64, 48), "odd.jpg": (37, 53)}


def test_translate_errors_are_single_lines(models, photos, tmp_path, capsys):
    bad_model = tmp_path / "bad.onnx"
    bad_model.write_bytes(b"junk")
    (tmp_path / "file.png").write_bytes(b"")
    ckpt, onnx_file = str(models["torch"]), str(models["onnx"])
    cases = [
        ([ckpt, str(tmp_path / "nope"), str(tmp_path / "o")], "input not found"),
        ([ckpt, str(photos), str(tmp_path / "file.png")], "the output of a folder must be a folder"),
        ([ckpt, str(photos / "odd.png"), str(tmp_path / "o.txt")], "name it .png or .jpg"),
        ([ckpt, str(photos / "odd.png"), str(photos / "odd.png"), "--overwrite"], "is the input itself"),
        ([str(bad_model), str(photos), str(tmp_path / "o")], "not a readable ONNX model"),
        ([onnx_file, str(photos), str(tmp_path / "o"), "--runtime", "torch"], "is an ONNX model"),
        ([ckpt, str(photos), str(tmp_path / "o"), "--batch", "0"], "--batch must be at least 1"),
        ([ckpt, str(photos), str(tmp_path / "o"), "--size", "32", "--keep-size"], "not allowed with"),
        ([ckpt, str(tmp_path / "empty_dir"), str(tmp_path / "o")], "no images in"),
        ([ckpt, str(photos), str(tmp_path / "o"), "--device", "gpu0"], "unknown --device"),
    ]
    (tmp_path / "empty_dir").mkdir()
    for argv, message in cases:
        assert main(["translate", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("srpkd: error: ") and message in err[0], (argv, err)
    write_image(photos / "dup.png", 8, 8)
    write_image(photos / "dup.bmp", 8, 8)
    assert main(["translate", ckpt, str(photos), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "dup.bmp and " in err and "would both be written to" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_end_to_end_subprocess(models, photos, tmp_path):
    out = tmp_path / "out"
    argv = ["translate", str(models["onnx"]), str(photos), str(out), "--batch", "4", "--threads", "1"]
    proc = subprocess.run([sys.executable, "-m", "srpkd", *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "srpkd: error: 1 of 6 images failed"
    assert "Traceback" not in proc.stderr
    assert outputs(out) == EXPECTED


# --------------------------------------------------------------------------- API


def test_api_accepts_pil_and_arrays(models):
    model = srpkd.load_generator(models["torch"])
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (21, 30, 3), dtype=np.uint8)
    out = srpkd.translate(model, rgb)
    assert isinstance(out, Image.Image) and out.size == (30, 21) and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(srpkd.translate(model, Image.fromarray(rgb))))
    gray = rgb[..., 0]
    assert np.array_equal(
        np.asarray(srpkd.translate(model, gray)), np.asarray(srpkd.translate(model, np.repeat(gray[..., None], 3, 2)))
    )
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])  # opaque: same as RGB
    assert np.array_equal(np.asarray(srpkd.translate(model, rgba)), np.asarray(out))
    assert srpkd.translate(models["onnx"], rgb).size == (30, 21)  # a path works too
    assert srpkd.translate(str(models["torch"]), rgb).size == (30, 21)
    with pytest.raises(TypeError, match="uint8"):
        srpkd.translate(model, rgb.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        srpkd.translate(model, rgb[..., :2])


def test_api_leaves_training_mode_alone():
    g = create_generator("unet_128", ngf=4, norm="batch", dropout=0.5).train()
    a = srpkd.translate(g, np.full((5, 7, 3), 128, np.uint8))  # 5x7 pads to 128x128 by reflection
    b = srpkd.translate(g, np.full((5, 7, 3), 128, np.uint8))
    assert a.size == (7, 5) and np.array_equal(np.asarray(a), np.asarray(b))  # eval: no dropout
    assert g.training


def test_batch_is_the_sum_of_its_images(models):
    runner = load_runner(models["torch"])
    assert isinstance(runner, TorchRunner) and runner.size_multiple == 4
    rng = np.random.default_rng(1)
    imgs = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(13, 14), (16, 15), (14, 16)]]
    together = run_batch(runner, imgs)
    for img, out in zip(imgs, together):
        assert out.size == img.size
        assert np.array_equal(np.asarray(out), np.asarray(run_batch(runner, [img])[0]))
    with pytest.raises(ValueError, match="one size"):
        run_batch(runner, [imgs[0], Image.new("RGB", (40, 40))])


def test_padded_size():
    assert padded_size(256, 256, 4) == (256, 256)
    assert padded_size(37, 53, 4) == (40, 56)
    assert padded_size(1, 129, 128) == (128, 256)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), multiple=st.sampled_from([1, 4, 32, 128]))
def test_pad_reflect_crops_back_to_the_original(h, w, multiple):
    x = np.random.default_rng(h * 100 + w).random((3, h, w)).astype(np.float32)
    size = padded_size(h, w, multiple)
    padded, (rows, cols) = pad_reflect(x, size)
    assert padded.shape == (3, *size)
    assert np.array_equal(padded[:, rows, cols], x)
    if h > 1 and size[0] > h:  # a reflection, not a copy of the edge: the row beside the border mirrors row 1
        top = rows.start
        if top > 0:
            assert np.array_equal(padded[:, top - 1, cols], x[:, 1])


def test_unreadable_model_paths():
    with pytest.raises(SrpkdError, match="checkpoint not found"):
        load_runner("no/such/model.safetensors")
    with pytest.raises(SrpkdError, match="unknown runtime"):
        load_runner("x.onnx", runtime="tensorrt")
