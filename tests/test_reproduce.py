"""Smoke test of benchmarks/reproduce.py: a --quick budget runs end to end and writes the results table.

The quick budget is 2 steps at 32 px on 8 training / 4 held-out images: it checks the plumbing
(data preparation, teacher cache on disk, srpkd distill/train, srpkd eval, reports, the table,
resume by skipping finished runs), not any number. Skips when ../shared/data is absent.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from srpkd.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"


def _load():
    if str(ROOT / "benchmarks") not in sys.path:  # the scripts import their shared module (real_photos) by name
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("srpkd_bench_reproduce", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


reproduce = _load()
needs_data = pytest.mark.skipif(
    not (reproduce.SHARED / "facades_unpaired").is_dir() or not (reproduce.SHARED / "edges2shoes_subset").is_dir(),
    reason=f"shared data not found under {reproduce.SHARED}",
)


def test_summary_and_ties():
    s = reproduce.summarise([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["n"] == 3
    assert reproduce.summarise([None])["mean"] is None
    # every variant's overrides give a valid config, and only the variant's terms are on
    for name in reproduce.VARIANTS:
        o = {**reproduce.variant_overrides(name), "optim.steps": 1}
        cfg = load_config("default", [f"{k}={json.dumps(v)}" for k, v in o.items()])
        on = {t for t in ("kd", "srp", "feat", "sp", "at") if getattr(cfg.loss, t) > 0}
        assert on == {t for t in reproduce.VARIANTS[name] if t != "srp_both"}


def test_main_recipe_variants():
    # --recipe main: each variant is the main preset with only its terms on, at the preset's weights and taps;
    # the GAN term joins half-way, except for scratch, which has nothing else to learn from
    for name in reproduce.BASE_VARIANTS:
        o = {**reproduce.variant_overrides(name, "main"), "optim.steps": 10, "optim.time": 0.0}
        cfg = load_config("main", [f"{k}={json.dumps(v)}" for k, v in o.items()])
        on = {t for t in ("kd", "srp", "feat", "sp", "at") if getattr(cfg.loss, t) > 0}
        assert on == set(reproduce.VARIANTS[name])
        assert {t: getattr(cfg.loss, t) for t in on} == {t: reproduce.MAIN_WEIGHTS[t] for t in on}
        assert cfg.loss.gan == 1.0 and cfg.loss.gan_start == (0.0 if name == "scratch" else 0.5)
        assert cfg.optim.lr == 1e-3 and cfg.optim.beta1 == 0.9 and cfg.optim.schedule == "cosine"
    preset = load_config("main")
    feat_srp = load_config("main", [f"{k}={json.dumps(v)}" for k, v in reproduce.variant_overrides("feat_srp",
                                                                                                   "main").items()])
    # the shipped recipe is the feat_srp variant, apart from perceptual KD, which the paper's comparison leaves out,
    # and the GAN term, which it keeps (from half-way) and the main job has dropped
    assert feat_srp.loss == dataclasses.replace(preset.loss, perc=0.0, gan=1.0)
    with pytest.raises(SystemExit, match="real_teacher"):
        reproduce.main(["paired", "--recipe", "main"])


@needs_data
def test_calibrate_measures_every_term(tmp_path, capsys):
    argv = ["real_teacher", "--recipe", "main", "--calibrate", "--students", "r16", "--size", "32", "--batch", "2",
            "--train-images", "8", "--out", str(tmp_path)]
    assert reproduce.main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["grad_norm_unit_weight"]) == {"kd", "srp", "feat", "sp", "at"}
    for t, g in r["grad_norm_unit_weight"].items():
        assert 0 < g < 1e3, (t, g)
        # the matched weight makes the weighted term's gradient norm equal to output KD's at weight 10
        assert r["matched_weight"][t] * g == pytest.approx(10 * r["grad_norm_unit_weight"]["kd"])
    assert r["matched_weight"]["kd"] == pytest.approx(10.0)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@needs_data
def test_quick_main_recipe_end_to_end(tmp_path, capsys):
    out, keep = tmp_path / "bench", tmp_path / "kept"
    argv = ["real_teacher", "--recipe", "main", "--quick", "--seeds", "0", "--variants", "kd", "feat_srp",
            "--threads", "1", "--out", str(out), "--keep", str(keep)]
    assert reproduce.main(argv) == 0
    tdir = out / "real_teacher"
    res = json.loads((tdir / "results.json").read_text())
    assert res["meta"]["recipe"] == "main" and res["meta"]["weights"] == reproduce.MAIN_WEIGHTS
    assert [r["variant"] for r in res["rows"]] == ["kd", "feat_srp"]
    run = Path(res["rows"][1]["runs"][0])
    cfg = (run / "config.yaml").read_text()
    assert "beta1: 0.9" in cfg and "val_split: val" in cfg and "- up2" in cfg
    m = json.loads((run / "metrics.json").read_text())
    assert m["directions"][m["primary"]]["fidelity"]["psnr"] > 0
    assert json.loads((tdir / "budget.json").read_text())["recipe"] == "main"
    assert "main preset's recipe" in (tdir / "results.md").read_text()
    # --report-only tabulates the finished runs and starts none: seed 1 and the at variant are left out
    capsys.readouterr()
    assert reproduce.main(argv[:4] + ["--seeds", "0", "1", "--variants", "kd", "at", "feat_srp", "--threads", "1",
                                       "--out", str(out), "--report-only"]) == 0
    assert "srpkd distill" not in capsys.readouterr().out
    again = json.loads((tdir / "results.json").read_text())
    assert [(r["variant"], len(r["runs"])) for r in again["rows"]] == [("kd", 1), ("feat_srp", 1)]
    assert not (tdir / "photos" / "r16" / "at").exists()
    # the same folder refuses the other recipe instead of mixing the two
    with pytest.raises(SystemExit, match="another budget"):
        reproduce.main([a for a in argv if a not in ("--recipe", "main")])

    # --keep: each run's metrics.json was copied there when it was scored; a fresh --out (a new checkout,
    # runs/ empty) restores them, starts no run and gives the same table
    assert json.loads((keep / "photos" / "r16" / "feat_srp" / "seed0.json").read_text()) == m
    assert sorted(p.relative_to(keep).as_posix() for p in keep.rglob("*.json")) == [
        "photos/r16/feat_srp/seed0.json", "photos/r16/kd/seed0.json"]
    capsys.readouterr()
    assert reproduce.main(argv[:-4] + ["--out", str(tmp_path / "fresh"), "--keep", str(keep)]) == 0
    log = capsys.readouterr().out
    assert log.count("restored ") == 2 and log.count("skip ") == 2 and "srpkd distill" not in log
    fresh = json.loads((tmp_path / "fresh" / "real_teacher" / "results.json").read_text())
    assert [r["metrics"] for r in fresh["rows"]] == [r["metrics"] for r in res["rows"]]
    assert not list((tmp_path / "fresh" / "real_teacher").glob("report_*.html"))  # no student to show


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~3 min on 2 idle cores; much more on a shared machine
@needs_data
def test_quick_real_teacher_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["real_teacher", "--quick", "--seeds", "0", "1", "--variants", "kd", "kd_srp", "--out", str(out)]
    assert reproduce.main(argv) == 0
    tdir = out / "real_teacher"
    res = json.loads((tdir / "results.json").read_text())
    assert [r["variant"] for r in res["rows"]] == ["kd", "kd_srp"]
    for r in res["rows"]:
        fid = r["metrics"]["fidelity.fid"]
        assert fid["n"] == 2 and fid["mean"] > 0 and fid["std"] >= 0
        for run in r["runs"]:
            assert (Path(run) / "metrics.json").is_file() and (Path(run) / "student.safetensors").is_file()
    assert res["rows"][1]["vs_kd"]["fidelity.fid"]["verdict"] in ("tie", "better", "worse")
    md = (tdir / "results.md").read_text()
    assert "| kd_srp | 2 |" in md and "±" in md
    assert (tdir / "report_photos_r16_seed0.html").is_file()
    # one teacher pass per set of taps (kd reads only the output, kd_srp the encoder features too), not per run
    assert len(list((tdir / "teacher_cache").glob("*.pt"))) == 2

    # resumable: a second invocation skips every finished run and gives the same table
    before = {r["variant"]: r["metrics"] for r in res["rows"]}
    capsys.readouterr()
    assert reproduce.main(argv) == 0
    log = capsys.readouterr().out
    assert log.count("skip ") == 4 and "srpkd distill" not in log
    again = json.loads((tdir / "results.json").read_text())
    assert {r["variant"]: r["metrics"] for r in again["rows"]} == before
    assert res["meta"]["skipped_runs"] == 0 and again["meta"]["skipped_runs"] == 4
    assert "skipped 4 runs finished earlier" in (tdir / "results.md").read_text()

    # another budget in the same folder is refused, not mixed
    with pytest.raises(SystemExit, match="another budget"):
        reproduce.main(argv + ["--set", "loss.srp=1"])


@pytest.mark.parametrize("ngf", [64, 32])
def test_teacher_width_reaches_the_teacher_run(tmp_path, monkeypatch, ngf):
    # --teacher-ngf sets the trained ResNet teacher's width and nothing else; unpaired teachers come as a pair
    seen = {}
    monkeypatch.setattr(reproduce, "train_run", lambda cmd, run_dir, o, t: seen.update(cmd=cmd, o=o) or 0.0)
    monkeypatch.setattr(reproduce, "eval_run", lambda run_dir, n: 0.0)
    args = reproduce.argparse.Namespace(steps=3, teacher_steps=7, teacher_ngf=ngf, size=64, batch=4, ndf=32,
                                        train_images=None, test_images=None, threads=1)
    t = reproduce.teacher_for(args, "unpaired", tmp_path, {"data.root": "x"}, "resnet")
    assert seen["cmd"] == "train" and seen["o"]["student.ngf"] == ngf and seen["o"]["optim.steps"] == 7
    assert seen["o"]["student.arch"] == "resnet_9blocks" and seen["o"]["loss.kd"] == 0.0
    assert t["teacher.checkpoint"].endswith("teacher_resnet/student.safetensors")
    assert t["teacher.checkpoint_B"].endswith("teacher_resnet/student_B.safetensors")
