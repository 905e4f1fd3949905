"""srpkd report: self-contained HTML of a run, with or without metrics/logs; several runs side by side."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from srpkd.checkpoint import load_generator, save_generator
from srpkd.cli.main import main
from srpkd.config import load_config
from srpkd.models import create_generator
from srpkd.report import loss_curves_png, read_log, write_comparison, write_report
from srpkd.train.validation import labelled_grid, sample_columns
from train_helpers import TINY, tiny_teacher
from train_helpers import read_log as run_log


def make_run(tmp_path, name="r", metrics=True, log=True, samples=True, root="/data/facades", student=None):
    teacher = tmp_path / "teacher.safetensors"
    if not teacher.exists():
        save_generator(create_generator("resnet_9blocks", ngf=8), teacher)
    cfg = load_config(None, ["task=paired", "data.mode=aligned", f"data.root={root}", "data.crop_size=32",
                             "data.load_size=36", f"teacher.checkpoint={teacher}", "optim.steps=20", "loss.srp=50"])
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    save_generator(student or create_generator("resnet_9blocks", ngf=4), run / "student.safetensors")
    if log:
        with open(run / "log.jsonl", "w") as f:
            for s in range(0, 20, 2):
                record = {"step": s, "epoch": 0, "lr": 2e-4, "time": s,
                          "loss/kd": 1 / (1 + s), "loss/srp": 0.1 - s / 1000}
                f.write(json.dumps(record) + "\n")
            f.write('{"step": 20, "loss/kd": 0.0')  # a line cut by a crash
    if samples:
        Image.fromarray((np.random.default_rng(0).random((32, 128, 3)) * 255).astype("uint8")).save(run / "samples.png")
    if metrics:
        d = {"n_images": 2, "direction": "AtoB", "size": 32, "reference": {"name": "test B halves", "count": 2},
             "student": {"fid": 123.456, "kid": 0.0123, "kid_subset_size": 2, "psnr": 20.5, "ssim": 0.61},
             "teacher": {"fid": 98.7, "kid": 0.01, "psnr": 22.0, "ssim": 0.7},
             "fidelity": {"fid": 12.3, "kid": 0.002, "psnr": 30.1, "l1": 0.05, "st_lpips": 0.1}}
        metrics_json = {"format": 1, "task": "paired", "primary": "AtoB", "directions": {"AtoB": d}}
        (run / "metrics.json").write_text(json.dumps(metrics_json))
    return run


def test_report_with_everything(tmp_path):
    run = make_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.html"
    text = path.read_text()
    assert "123.46" in text and "98.70" in text and "30.10" in text  # student, teacher, fidelity
    assert text.count("data:image/png;base64,") == 2  # samples and loss curves, inlined
    assert "src=\"http" not in text and "<script" not in text  # self-contained
    assert "srp: 50.0" in text  # the resolved config
    assert not list(run.glob(".*.tmp"))


def test_report_of_an_incomplete_run_says_not_measured(tmp_path):
    run = make_run(tmp_path, metrics=False, log=False, samples=False)
    text = write_report(run).read_text()
    assert "not measured" in text and "no samples.png" in text and "no losses logged" in text


def test_report_without_eval_shows_the_loops_validation(tmp_path):
    """A distill run's report, written before any srpkd eval, shows the loop's held-out PSNR/L1 to the teacher."""
    run = make_run(tmp_path, metrics=False)
    with open(run / "log.jsonl", "a") as f:
        f.write("\n" + json.dumps({"step": 10, "val/l1_to_teacher": 0.5, "val/psnr_to_teacher": 11.0}))
        f.write("\n" + json.dumps({"step": 20, "val/l1_to_teacher": 0.2216, "val/psnr_to_teacher": 17.31}) + "\n")
    text = write_report(run).read_text()
    assert "17.31" in text and "0.2216" in text and "11.00" not in text  # the last validation, not an earlier one
    assert "held-out validation at step 20" in text
    assert "not measured" in text  # FID, KID and ST-LPIPS still need srpkd eval


def test_report_of_a_bare_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    text = write_report(tmp_path / "empty").read_text()
    assert "no config.yaml" in text and "not measured" in text


def test_log_reader_and_curves():
    assert loss_curves_png([]) is None
    png = loss_curves_png([{"step": i, "loss/a": 1.0 / (i + 1)} for i in range(5)])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_log_skips_bad_lines(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"step": 1}\nnot json\n[1]\n{"step": 2}\n')
    assert [r["step"] for r in read_log(p)] == [1, 2]
    assert read_log(tmp_path / "missing.jsonl") == []


def test_comparison_has_one_column_per_run(tmp_path):
    a, b = make_run(tmp_path, "baseline"), make_run(tmp_path, "srp", metrics=False)
    out = write_comparison([a, b], tmp_path / "cmp.html")
    text = out.read_text()
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", text).group(1)
    assert "baseline" in header and "srp" in header
    assert "123.46" in text and "not measured" in text


def test_comparison_shows_each_runs_relation_maps_and_distance(tmp_path, aligned_dir):
    """A student that is the teacher has the teacher's relation rows (0.000); a random one does not."""
    a = make_run(tmp_path, "random", root=aligned_dir)
    b = make_run(tmp_path, "teacher_copy", root=aligned_dir, student=load_generator(tmp_path / "teacher.safetensors"))
    text = write_comparison([a, b], tmp_path / "cmp.html").read_text()
    row = re.search(r"Relation rows to the teacher.*?</tr>", text, re.S).group(0)
    cells = re.findall(r"<td>([0-9.]+) <span class=note>at encoder</span></td>", row)
    assert len(cells) == 2 and float(cells[0]) > 0.01 and cells[1] == "0.000", row
    assert text.count('alt="relation maps of ') == 2


def test_cli_report(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="Chromium not installed")
def test_report_renders_in_headless_chromium(tmp_path):
    run = make_run(tmp_path)
    path = write_report(run)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium(), *flags, "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=60).stdout
    assert "<table" in dom and "123.46" in dom and dom.count("<img") == 2
    shot = tmp_path / "shot.png"
    subprocess.run([chromium(), *flags, "--window-size=1000,1400", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=60)
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (1400, 1000) and img.std() > 10  # something was drawn, not a blank page


def test_report_of_a_tiny_distill_run_shows_only_measured_rows(tmp_path, capsys):
    """srpkd distill ends by measuring what the report shows: latency of teacher and student (eager and ONNX
    Runtime, with the thread count), ST-LPIPS to the teacher beside a copy of the input, labelled samples."""
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    assert main(["distill", "--teacher", str(teacher), "--size", "32", "--steps", "2", "--batch-size", "2",
                 "--name", "r", "--out-dir", str(tmp_path), "--set", "data.max_images=4", *TINY,
                 "--set", "profile_runtimes=[eager,onnx]"]) == 0
    printed = capsys.readouterr().out
    assert "ST-LPIPS to the teacher" in printed and "latency of the student (cpu, 1 thread, batch 1, 32 px)" in printed
    run = tmp_path / "r"
    for name in ("profile.json", "profile_teacher.json"):
        profile = json.loads((run / name).read_text())
        assert profile["threads"] == 1 and profile["size"] == 32
        assert all(profile["runtimes"][r]["ok"] for r in ("eager", "onnx")), profile["runtimes"]
    last = run_log(run)[-1]
    assert last["test/st_lpips_to_teacher"] > 0 and last["test/copy_st_lpips_to_teacher"] > 0  # main: val + test
    text = (run / "report.html").read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", text)
    assert rows and not [r for r in rows if "not measured" in r]
    table = [re.findall(r"<td>(.*?)</td>", r) for r in rows if r.startswith("<td>")]
    cells = {re.sub(r" <span.*", "", label): values for label, *values in table}
    assert [c.endswith(" ms") for c in cells["Latency, PyTorch eager (median)"]] == [True, True]
    assert [c.endswith(" ms") for c in cells["Latency, ONNX Runtime (median)"]] == [True, True]
    assert len(cells["ST-LPIPS student vs teacher"]) == 2  # the student and a copy of the input
    assert "FID (vs real)" not in cells and "PSNR to ground truth (dB)" not in cells  # teacher_only: no real images
    assert "Not measured: FID student vs teacher, KID student vs teacher" in text
    assert "input | teacher | student:" in text and "target" not in text.split("<h2>Samples</h2>")[1].split("</h2>")[0]
    samples = Image.open(run / "samples.png")
    assert samples.width == 3 * 128 and samples.height > 2 * 128  # 32 px crops shown 4x, under a header


def test_sample_grid_is_enlarged_and_labelled():
    assert sample_columns(True, False) == ["input", "teacher", "student"]
    assert sample_columns(False, True) == ["input", "student", "target"]
    grid = torch.full((3, 16, 32), 0.5)  # two 16 px columns
    img = np.asarray(labelled_grid(grid, ["input", "student"]))
    assert img.shape[1] == 256 and img.shape[0] > 128  # each column 128 px, a header above
    header = img[: img.shape[0] - 128]
    assert header.min() < 100 and (header == 255).mean() > 0.5  # dark text on white
    assert (img[-128:] == 128).all()  # the images themselves, enlarged by nearest neighbour


def test_a_run_without_val_split_measures_st_lpips_in_its_last_validation(tmp_path):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    assert main(["distill", "--teacher", str(teacher), "--size", "32", "--steps", "2", "--batch-size", "2",
                 "--name", "r", "--out-dir", str(tmp_path), "--set", "data.max_images=4", *TINY,
                 "--set", "data.val_split=null", "--set", "profile_runtimes=[]"]) == 0
    run = tmp_path / "r"
    last = run_log(run)[-1]
    assert last["val/st_lpips_to_teacher"] > 0 and last["val/copy_st_lpips_to_teacher"] > 0
    assert not (run / "profile.json").exists()  # profile_runtimes [] measures no latency
    text = (run / "report.html").read_text()
    assert re.search(r"ST-LPIPS student vs teacher.*?</td><td>[0-9.]+</td><td>[0-9.]+</td>", text)


@pytest.mark.parametrize("value, message", [("[gpu]", "unknown runtime(s) gpu"), ("eager", "must be a list")])
def test_bad_profile_runtimes_are_one_line_before_training(tmp_path, capsys, value, message):
    assert main(["distill", "--set", f"profile_runtimes={value}", "--out-dir", str(tmp_path), "--name", "r",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("srpkd: error:") and err.count("\n") == 0 and message in err
    assert not (tmp_path / "r").exists()
