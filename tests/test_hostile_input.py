"""Issue 15, "hostile input, round two": the real failures, not simulations of them.

- a genuinely full disk: a small tmpfs mounted for the test (skipped, with the
  reason, where mounting is not permitted), filled with a real file;
- real concurrent ``python -m srpkd`` processes on one run folder;
- images written by Pillow with an EXIF orientation and 16 bits per sample;
- YAML alias bombs under a time limit;
- a real ``srpkd translate`` of a folder killed with SIGKILL half-way.

The one-line error rows of the same classes are in ``test_bad_input.py``;
RELIABILITY.md lists both.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import srpkd.data.images as images
import srpkd.metrics.evaluate as evaluate
from srpkd.cli.main import main
from srpkd.data.datasets import AlignedDataset, image_size
from srpkd.data.images import list_images, load_image
from srpkd.metrics.fid import FeatureCache

from conftest import srpkd_env, write_image
from test_bad_input import Case, check_one_error, distill, distill_world, foreign_pth, tiny_generator

ENV = srpkd_env(OMP_NUM_THREADS="1")

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- class 2: a really full disk


def _no_tmp(folder: Path) -> None:
    left = [p.name for p in folder.rglob(".*.tmp")]
    assert not left, f"temporary files left: {left}"


def test_import_onto_a_full_disk(full_disk, tmp_path, capsys):
    """safetensors raises its own SafetensorError on a real ENOSPC (the matrix's mock raised OSError)."""
    pth = foreign_pth(tmp_path / "w.pth")
    out = full_disk.path / "g.safetensors"
    tiny_generator(out, ngf=2)  # an older good file, smaller than the new one
    old = out.read_bytes()
    full_disk.fill()
    rc, _, err = run_cli(capsys, ["import", str(pth), str(out), "--overwrite"])
    check_one_error(rc, err, Case([], [str(out), "No space left"]))
    assert out.read_bytes() == old
    _no_tmp(full_disk.path)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_onto_a_full_disk(fmt, full_disk, tmp_path, capsys):
    ckpt = tiny_generator(tmp_path / "g.safetensors")
    out = full_disk.path / f"g.{fmt}"
    out.write_bytes(b"an older export")
    full_disk.fill()
    rc, _, err = run_cli(capsys, ["export", str(ckpt), "--format", fmt, "-o", str(out), "--size", "32",
                                  "--overwrite"])
    check_one_error(rc, err, Case([], [str(out), "No space left"]))
    assert out.read_bytes() == b"an older export"
    _no_tmp(full_disk.path)


def test_translate_onto_a_full_disk_stops_at_once(full_disk, tmp_path, capsys):
    ckpt = tiny_generator(tmp_path / "g.safetensors")
    for i in range(4):
        write_image(tmp_path / "in" / f"{i}.png", 32, 32, seed=i)
    full_disk.fill()
    rc, _, err = run_cli(capsys, ["translate", str(ckpt), str(tmp_path / "in"), str(full_disk.path / "out")])
    line = check_one_error(rc, err, Case([], ["No space left", "0 of 4", "--skip-existing"]))
    assert "skipped" not in err, line
    _no_tmp(full_disk.path)


def test_eval_onto_a_full_disk(full_disk, tmp_path, capsys, monkeypatch):
    """metrics.json on a full disk: one line, the older file intact (a tiny extractor stands in for Inception)."""
    class Tiny(torch.nn.Module):
        extractor_id = "tiny-mean-std"

        def forward(self, x):
            return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)

    monkeypatch.setattr(evaluate, "inception", lambda device: Tiny())
    ckpt = tiny_generator(tmp_path / "g.safetensors")
    for i in range(3):
        write_image(tmp_path / "data" / "test" / f"{i}.png", 64, 32, seed=i)
    out = full_disk.path / "m.json"
    out.write_text('{"older": true}\n')
    full_disk.fill()
    rc, _, err = run_cli(capsys, ["eval", str(ckpt), "--data", str(tmp_path / "data"), "--mode", "aligned", "-q",
                                  "--teacher", "none", "--size", "32", "--no-perceptual", "--no-cache",
                                  "-o", str(out), "--overwrite"])
    check_one_error(rc, err, Case([], [str(out), "No space left"]))
    assert json.loads(out.read_text()) == {"older": True}
    _no_tmp(full_disk.path)


def test_checkpoint_onto_a_full_disk_keeps_the_last_good_one(full_disk, tmp_path, capsys, monkeypatch):
    """A run on a tmpfs; the disk fills; the resumed run's next checkpoint cannot be written: one line,
    last.safetensors byte-identical, no temporary file, log.jsonl whole records only."""
    monkeypatch.chdir(tmp_path)
    distill_world(tmp_path)
    argv = distill(tmp_path, "--set", "ckpt_every=1", steps=2)
    argv[argv.index("--out-dir") + 1] = str(full_disk.path / "runs")
    rc, _, err = run_cli(capsys, argv)
    assert rc == 0, err
    run = full_disk.path / "runs" / "r"
    last = run / "checkpoints" / "last.safetensors"
    old = last.read_bytes()
    shutil.rmtree(run / "tb", ignore_errors=True)
    full_disk.fill(leave=16 * 1024)  # room for config.yaml and log lines, not for a checkpoint
    rc, _, err = run_cli(capsys, ["distill", "--resume", str(run), "--quiet", "--set", "optim.steps=4"])
    err = "\n".join(ln for ln in err.splitlines() if "srpkd: error:" in ln or "Traceback" in ln)
    check_one_error(rc, err, Case([], ["No space left", "checkpoints/step_0000003.safetensors"]))
    assert last.read_bytes() == old
    _no_tmp(run)
    for line in (run / "log.jsonl").read_text().splitlines():
        json.loads(line)


# ----------------------------------------------------------------------------- class 3: YAML bombs


def _laughs(levels: int = 9, width: int = 9) -> list[str]:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return lines


def _indent(lines: list[str], n: int) -> str:
    return "\n".join(" " * n + ln for ln in lines)


BOMBS = {
    "top_level": "\n".join(_laughs()) + "\n",
    "under_a_float_key": "optim:\n  lr:\n" + _indent(_laughs(), 4) + "\n",
    "under_kwargs": "student:\n  kwargs:\n" + _indent(_laughs(), 4) + "\n",
    "under_a_list_key": "loss:\n  srp_taps: &t [encoder, encoder, encoder, encoder, encoder, encoder]\n"
                        + "\n".join(f"  x{i}: &x{i} [{', '.join([f'*{p}'] * 9)}]"
                                    for i, p in enumerate(['t'] + [f'x{j}' for j in range(8)])) + "\n",
    "dict_of_dicts": "\n".join(
        ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9}"]
        + [f"m{i}: &m{i} {{a: *m{i - 1}, b: *m{i - 1}, c: *m{i - 1}, d: *m{i - 1}, e: *m{i - 1}, f: *m{i - 1}, "
           f"g: *m{i - 1}, h: *m{i - 1}, i: *m{i - 1}}}" for i in range(1, 9)]) + "\n",
    "deep_nesting": "seed: " + "[" * 20000 + "]" * 20000 + "\n",
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", sorted(BOMBS))
def test_yaml_bomb_is_one_line_quickly(where, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    distill_world(tmp_path)
    (tmp_path / "bomb.yaml").write_text(BOMBS[where])
    t0 = time.perf_counter()
    rc, _, err = run_cli(capsys, distill(tmp_path, "--config", str(tmp_path / "bomb.yaml")))
    assert time.perf_counter() - t0 < 20
    check_one_error(rc, err, Case([], ["bomb.yaml"], absent=[tmp_path / "runs"]))
    assert len(err) < 1000


@pytest.mark.timeout(120)
def test_yaml_bomb_in_a_set_value_and_in_a_resumed_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    distill_world(tmp_path)
    value = "{" + ", ".join(ln.replace(":", ":", 1) for ln in _laughs()) + "}"
    t0 = time.perf_counter()
    rc, _, err = run_cli(capsys, distill(tmp_path, "--set", f"optim.lr={value}"))
    check_one_error(rc, err, Case([], ["optim.lr", "aliases"], absent=[tmp_path / "runs"]))
    # a run folder whose config.yaml was replaced by a bomb: --resume and report stay bounded
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(BOMBS["under_a_float_key"])
    rc, _, err = run_cli(capsys, ["distill", "--resume", str(run), "--quiet"])
    check_one_error(rc, err, Case([], ["config.yaml", "aliases"]))
    rc, _, err = run_cli(capsys, ["report", str(run)])
    assert rc == 0 and "Traceback" not in err
    assert time.perf_counter() - t0 < 60


# ----------------------------------------------------------------------------- class 4: two processes, one folder


def _distill_cmd(t: Path, *extra: str) -> list[str]:
    argv = distill(t, *extra, steps=2)
    i = argv.index("--name")
    del argv[i:i + 2]
    return [sys.executable, "-m", "srpkd", *argv]


@pytest.mark.slow
def test_two_runs_with_one_name_never_share_the_folder(tmp_path):
    distill_world(tmp_path)
    cmd = _distill_cmd(tmp_path, "--name", "same")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 2], results
    _, _, err = next(r for r in results if r[0] == 2)
    check_one_error(2, err, Case([], ["runs/same", "--name"]))
    run = tmp_path / "runs" / "same"
    assert (run / "student.safetensors").is_file() and (run / "checkpoints" / "last.safetensors").is_file()
    steps = [json.loads(ln)["step"] for ln in (run / "log.jsonl").read_text().splitlines() if '"loss/' in ln]
    assert steps == sorted(set(steps)), f"two runs wrote one log: {steps}"


@pytest.mark.slow
def test_two_runs_in_one_second_with_the_default_name(tmp_path):
    """Started together with the default name (a time stamp): two folders, each one whole run."""
    distill_world(tmp_path)
    cmd = _distill_cmd(tmp_path)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert [rc for rc, _, _ in results] == [0, 0], results
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2, runs
    for run in runs:
        assert (run / "student.safetensors").is_file()
        assert f"name: {run.name}" in (run / "config.yaml").read_text()
    if runs[0].name[:15] == runs[1].name[:15]:  # the same second: the second took NAME-2
        assert runs[1].name == runs[0].name + "-2"


# ----------------------------------------------------------------------------- class 5: damaged run files


def test_log_with_bytes_that_are_not_utf8(tmp_path, capsys, monkeypatch):
    """report and --resume read a log.jsonl with non-UTF-8 bytes: the damaged line is skipped (and said)."""
    monkeypatch.chdir(tmp_path)
    distill_world(tmp_path)
    rc, _, err = run_cli(capsys, distill(tmp_path, "--set", "ckpt_every=1", "--set", "log_every=1", steps=2))
    assert rc == 0, err
    run = tmp_path / "runs" / "r"
    with open(run / "log.jsonl", "ab") as f:
        f.write(b'{"step": 1, "loss/G_l1": \xff\xfe}\n\x80\x81 garbage\n')
    rc, _, err = run_cli(capsys, ["report", str(run)])
    assert rc == 0 and "Traceback" not in err
    rc, _, err = run_cli(capsys, ["distill", "--resume", str(run), "--quiet", "--set", "optim.steps=3"])
    assert rc == 0 and "Traceback" not in err, err
    records = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss/G_l1" in r] == [1, 2, 3]


@pytest.mark.parametrize("content", ["wrong_rank", "wrong_rows", "integers", "nan"])
def test_feature_cache_entry_of_the_wrong_shape_is_reported_and_recomputed(content, tmp_path, caplog):
    cache = FeatureCache(tmp_path / "cache")
    key = "k" * 64
    bad = {"wrong_rank": torch.zeros(3, 4, 5), "wrong_rows": torch.zeros(7, 4),
           "integers": torch.zeros(3, 4, dtype=torch.int64), "nan": torch.full((3, 4), float("nan"))}[content]
    cache.root.mkdir()
    save_file({"features": bad}, str(cache.path(key)))  # a valid safetensors file, content of the wrong shape
    good = torch.randn(3, 4)
    with caplog.at_level("WARNING"):
        feats, cached = cache.features(key, lambda: good, {"count": 3})
    assert not cached and torch.equal(feats, good)
    assert any("damaged feature cache entry" in r.getMessage() for r in caplog.records)
    feats, cached = cache.features(key, lambda: 1 / 0, {"count": 3})  # rewritten: now a hit
    assert cached and torch.equal(feats, good)


# ----------------------------------------------------------------------------- class 6: images as cameras write them


def _exif_image(path: Path, arr: np.ndarray, orientation: int) -> Path:
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied(suffix, tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # stored: 40 wide, left half white
    p = _exif_image(tmp_path / f"cam{suffix}", arr, 6)  # 6: shown turned 90 degrees clockwise
    img = load_image(p)
    assert img.size == (20, 40) and image_size(p) == (20, 40)
    shown = np.asarray(img)[..., 0].astype(int)
    assert shown[:15].mean() > 200 and shown[25:].mean() < 50  # the white half is now on top


def test_aligned_pair_stored_rotated(tmp_path, capsys):
    """An A|B pair a phone stored sideways (32 wide, 64 high, orientation 6) is 64x32 as shown: accepted,
    and split into the right halves."""
    shown = np.zeros((32, 64, 3), np.uint8)
    shown[:, 32:] = 255  # B (right half) white
    stored = np.ascontiguousarray(np.rot90(shown, 1))  # what a camera stores for orientation 6
    p = _exif_image(tmp_path / "aligned" / "train" / "0.jpg", stored, 6)
    assert Image.open(p).size == (32, 64)
    ds = AlignedDataset(tmp_path / "aligned", "train")
    item = ds[0]
    assert item["A"].mean() < -0.9 and item["B"].mean() > 0.9


def test_translate_writes_exif_rotated_inputs_upright(tmp_path, capsys):
    ckpt = tiny_generator(tmp_path / "g.safetensors")
    _exif_image(tmp_path / "in" / "0.png", np.zeros((24, 40, 3), np.uint8), 8)
    rc, _, err = run_cli(capsys, ["translate", str(ckpt), str(tmp_path / "in"), str(tmp_path / "out")])
    assert rc == 0, err
    assert Image.open(tmp_path / "out" / "0.png").size == (24, 40)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_scaled_by_their_bit_depth(suffix, tmp_path):
    dark = np.full((16, 16), 1000, np.uint16)  # 1000 of 65535: nearly black
    dark[0, 0] = 2000
    Image.fromarray(dark).save(tmp_path / f"d{suffix}")
    assert Image.open(tmp_path / f"d{suffix}").mode.startswith("I")
    arr = np.asarray(load_image(tmp_path / f"d{suffix}"))
    assert arr.max() <= 8 and arr[1, 1, 0] == round(1000 / 65535 * 255)


def test_folders_hidden_by_convention_are_skipped(tmp_path):
    for rel in ("a.png", ".ipynb_checkpoints/a-checkpoint.png", ".git/x.png", "__MACOSX/._a.png", "__MACOSX/a.png",
                "sub/b.png", "sub/.hidden/c.png"):
        write_image(tmp_path / "imgs" / rel, 8, 8)
    assert [p.relative_to(tmp_path / "imgs").as_posix() for p in list_images(tmp_path / "imgs")] == [
        "a.png", "sub/b.png"]


# ----------------------------------------------------------------------------- class 7: interrupted batch jobs


@pytest.mark.slow
def test_translate_killed_half_way_then_continued(tmp_path):
    ckpt = tiny_generator(tmp_path / "g.safetensors")
    n = 60
    for i in range(n):
        write_image(tmp_path / "in" / f"{i:02d}.png", 96, 96, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "srpkd", "translate", str(ckpt), str(tmp_path / "in"), str(out), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.png"))) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.png")}
    assert 5 <= len(finished) < n, f"kill landed at {len(finished)} of {n}"
    # without a flag the existing outputs are refused, as before
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = subprocess.run(cmd + ["--skip-existing"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{len(finished)} existing outputs kept" in r.stdout
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:02d}.png" for i in range(n)]
    for name, (data, mtime) in finished.items():  # not redone, not overwritten
        assert (out / name).read_bytes() == data and (out / name).stat().st_mtime_ns == mtime
    _no_tmp(out)


def test_translate_sigterm_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    """SIGTERM during a write (raised in-process at the moment of the write): exit 143, no temp file."""
    ckpt = tiny_generator(tmp_path / "g.safetensors")
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", 32, 32, seed=i)
    real_save = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            real_save(self, fp, *a, **k)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(images.Image.Image, "save", save)
    rc, _, err = run_cli(capsys, ["translate", str(ckpt), str(tmp_path / "in"), str(tmp_path / "out")])
    assert rc == 128 + signal.SIGTERM and "Traceback" not in err
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    _no_tmp(tmp_path / "out")
