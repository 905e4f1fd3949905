"""Smoke tests of the benchmark scripts: they run with tiny settings and print the documented JSON keys.

No timing is asserted (the machines these run on are shared and noisy).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from srpkd.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, timeout: int = 400) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--json", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_distill_step_quick():
    rows = run_script("distill_step.py", "--quick", "--threads", "1",
                      "--variants", "scratch,distill,distill_cached,distill_cached_cl")
    by = {r["variant"]: r for r in rows if "variant" in r}
    assert set(by) == {"scratch", "distill", "distill_cached", "distill_cached_cl", "srp_share"}
    for name in ("scratch", "distill", "distill_cached", "distill_cached_cl"):
        r = by[name]
        assert "error" not in r, r
        for key in ("images_per_s", "ms_per_image", "ratio_to_scratch", "ms_per_step", "cpu_ms_per_step",
                    "data_ms_per_batch", "size", "batch", "timed_steps"):
            assert key in r, (name, key)
        assert r["images_per_s"] > 0 and r["ms_per_image"] > 0 and r["size"] == 32 and r["batch"] == 2
    assert by["scratch"]["ratio_to_scratch"] == 1.0
    assert by["distill_cached"]["cache_fill_s"] is not None and by["distill"]["cache_fill_s"] is None
    assert by["distill_cached_cl"]["channels_last"] is True
    share = by["srp_share"]
    for key in ("ms_per_step_srp0", "ms_per_step_srp", "srp_overhead", "size"):
        assert key in share
    info = next(r for r in rows if r.get("machine"))
    for key in ("threads", "torch", "load_avg_before", "load_avg_after", "cpu_count", "date"):
        assert key in info
    assert info["threads"] == 1


def test_distill_step_rejects_unknown_variant():
    script = ROOT / "benchmarks" / "distill_step.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--variants", "nope"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "unknown variant" in proc.stderr


def test_inference_quick_eager():
    rows = run_script("inference.py", "--quick", "--threads", "1", "--runtime", "eager")
    by = {r["model"]: r for r in rows if "model" in r}
    assert set(by) == {"teacher", "student16", "mobile16"}
    for r in by.values():
        assert "error" not in r, r
        for key in ("median_ms", "min_ms", "macs", "params", "runtime", "threads", "command"):
            assert key in r
        assert r["command"].startswith("srpkd profile ")
    for name in ("student16", "mobile16"):
        for key in ("mac_reduction", "speedup", "efficiency"):
            assert key in by[name]
    assert by["student16"]["mac_reduction"] == pytest.approx(15.0, rel=0.05)
    info = next(r for r in rows if r.get("machine"))
    assert info["threads"] == 1 and "load_avg_before" in info


@pytest.mark.slow
def test_inference_quick_onnx():
    pytest.importorskip("onnxruntime")
    rows = run_script("inference.py", "--quick", "--threads", "1", "--runtime", "onnx", "--models", "teacher,mobile16")
    by = {r["model"]: r for r in rows if "model" in r}
    assert "error" not in by["mobile16"], by["mobile16"]
    assert by["mobile16"]["runtime"] == "onnx" and "efficiency" in by["mobile16"]


def test_time_to_quality_quick_is_resumable(tmp_path):
    """Two recipes, one seed, a few seconds each: the table, the curves and the per-run records; a second
    invocation skips the finished runs."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "time_to_quality.py"), "--quick", "--seeds", "0", "--time", "4",
           "--threads", "1", "--out", str(tmp_path), "--recipes", "default", "old"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tdir = tmp_path / "main"
    results = json.loads((tdir / "results.json").read_text())
    runs = {r["recipe"]: r for r in results["runs"]}
    assert set(runs) == {"default", "old"}
    for r in runs.values():
        assert r["steps"] > 0 and r["curve"] and all(len(p) == 2 for p in r["curve"])
        assert r["images"] == 4 and r["psnr"] > 0 and r["copy_psnr"] > 0 and 0 <= r["stlpips"] < 1
    assert runs["default"]["copy_psnr"] == runs["old"]["copy_psnr"]  # the same held-out crops and teacher
    assert "| default | preset, 1 thread | 1 |" in (tdir / "results.md").read_text()  # not the 2 of most runs
    assert (tdir / "curves.png").stat().st_size > 1000
    old = json.loads((tdir / "default_preset_seed0" / "ttq.json").read_text())
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "srpkd distill" not in proc.stdout + proc.stderr  # nothing re-run
    assert json.loads((tdir / "default_preset_seed0" / "ttq.json").read_text()) == old
    # --keep: a finished run is copied to the kept folder; a fresh --out restores it instead of running it
    keep = tmp_path / "kept"
    proc = subprocess.run(cmd + ["--keep", str(keep)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and json.loads((keep / "default_preset_seed0.json").read_text()) == old
    fresh = cmd[:cmd.index("--out")] + ["--out", str(tmp_path / "fresh")] + cmd[cmd.index("--out") + 2:]
    proc = subprocess.run(fresh + ["--keep", str(keep)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "srpkd distill" not in proc.stdout + proc.stderr
    assert "restored " in proc.stdout + proc.stderr
    assert json.loads((tmp_path / "fresh" / "main" / "results.json").read_text())["runs"] == results["runs"]


def test_time_to_quality_recipes_and_students_are_valid_settings_of_the_main_preset():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        # local: benchmarks/ is not a package; the script is importable only while it is on sys.path
        import time_to_quality as ttq
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    for name, recipe in {**ttq.RECIPES, **ttq.STUDENTS}.items():
        cfg = load_config("main", [f"{k}={json.dumps(v)}" for k, v in recipe.items()])
        for key, value in recipe.items():
            section, field = key.split(".") if "." in key else (None, key)
            assert getattr(getattr(cfg, section) if section else cfg, field) == value, (name, key)


def test_pairs_runs_each_candidate_beside_its_own_base_run(tmp_path):
    env = dict(os.environ, KEEP=str(tmp_path / "kept"), OUT=str(tmp_path / "out"), LOGS=str(tmp_path / "logs"),
               TTQ_ARGS="--quick --time 4", PYTHON=sys.executable)
    cmd = ["bash", str(ROOT / "benchmarks" / "pairs.sh"), "default", "old", "no_gan"]
    # "default" was a candidate of an earlier pair: its record has the name a base's run writes, and must stay
    (tmp_path / "kept").mkdir()
    earlier = tmp_path / "kept" / "default_preset_seed0.json"
    earlier.write_text('{"recipe": "default", "psnr": 1.0}')
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT, env=env)
    assert proc.returncode == 0 and "failed" not in proc.stdout, proc.stdout + proc.stderr
    kept = sorted(p.name for p in (tmp_path / "kept").iterdir())
    assert kept == ["default_preset_seed0.json", "default_preset_seed0_vs_no_gan.json",
                    "default_preset_seed0_vs_old.json", "no_gan_preset_seed0.json", "old_preset_seed0.json"]
    assert earlier.read_text() == '{"recipe": "default", "psnr": 1.0}'
    first = json.loads((tmp_path / "kept" / "default_preset_seed0_vs_old.json").read_text())
    assert first["recipe"] == "default" and first["threads"] == 1 and first["steps"] > 0
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0 and proc.stdout.count("skip default against") == 2, proc.stdout
    # the report beside the records: one row per candidate, its difference to its own pair's base
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["base"], r["candidate"], r["seeds"]) for r in rows] == [("default", "no_gan", [0]),
                                                                       ("default", "old", [0])]
    old = json.loads((tmp_path / "kept" / "old_preset_seed0.json").read_text())
    assert rows[1]["psnr"]["difference"] == [old["psnr"] - first["psnr"]]
    assert "| old | default | 0 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "curves.png").stat().st_size > 0  # the pairs' curves, one panel per candidate


def test_pairs_report_judges_a_candidate_by_its_differences_to_its_own_base(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        # local: benchmarks/ is not a package; the script is importable only while it is on sys.path
        import pairs_report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    # the candidate's two seeds are each 0.3 dB above their own pair's base, though the bases differ by 1 dB
    # (a slower hour): against the other seed's base it would look worse
    def record(name: str, psnr: float, stlpips: float) -> None:
        curve = [[1.0, psnr - 2], [8.5, psnr]]
        (tmp_path / f"{name}.json").write_text(json.dumps({"psnr": psnr, "stlpips": stlpips, "steps": 1000,
                                                           "copy_psnr": 21.7, "curve": curve}))

    for seed, base_psnr in ((0, 25.0), (1, 24.0)):
        record(f"perc_preset_seed{seed}_vs_cand", base_psnr, 0.09)
        record(f"cand_preset_seed{seed}", base_psnr + 0.3, 0.10)
    (tmp_path / "perc_preset_seed0_vs_unpaired.json").write_text("{}")  # its candidate's record is missing
    rows = pairs_report.summary(pairs_report.pairs(tmp_path))
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1]
    assert rows[0]["psnr"]["difference"] == pytest.approx([0.3, 0.3]) and rows[0]["psnr"]["verdict"] == "better"
    assert rows[0]["stlpips"]["verdict"] == "worse"  # higher ST-LPIPS is worse
    assert pairs_report.verdict([0.2, -0.1, 0.3], +1) == "tie"  # signs differ
    assert pairs_report.verdict([0.1, 0.5, 0.05], +1) == "tie"  # one sign, but the mean is within the spread
    assert pairs_report.verdict([-0.2, -0.3], -1) == "better"
    assert pairs_report.verdict([0.4], +1) == "1 seed"
    pairs_report.plot(pairs_report.pairs(tmp_path), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_step_speedup_quick_against_the_baseline_commit():
    """Workers on this checkout and on the commit before the speed-ups, interleaved; ratios to the baseline."""
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", "1e9c55c^{commit}"], capture_output=True).returncode:
        pytest.skip("the baseline commit is not in this clone (shallow)")
    rows = run_script("step_speedup.py", "--quick", "--variants", "base_random,new_draws,base_cached,new_cached")
    by = {r["variant"]: r for r in rows if "variant" in r}
    assert set(by) == {"base_random", "new_draws", "base_cached", "new_cached"}
    assert by["new_draws"]["reference"] == "base_random" and by["new_cached"]["reference"] == "base_cached"
    assert by["base_random"]["speedup_cpu"] == 1.0 and by["new_draws"]["fill_ms_per_step"] > 0
    for r in by.values():
        assert r["ms_per_step"] > 0 and r["timed_steps"] == 1
    num = next(r["numerics"] for r in rows if "numerics" in r)
    assert num["bf16_teacher_psnr_db"] > 40 and num["fp16_image_max_abs"] < 1e-3


def test_step_speedup_names_a_missing_baseline():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_speedup.py"), "--quick",
                           "--baseline", "0123456789abcdef"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("step_speedup.py: error: cannot export commit")


def converged_lane_runs(lane: str) -> set[tuple[str, str, str, str]]:
    """(script, student, seed, variant) of every run one lane of benchmarks/converged.sh starts, listed by a
    dry run: with PYTHON=echo each command is printed instead of run."""
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "converged.sh"), lane], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=dict(os.environ, PYTHON="echo"))
    assert proc.returncode == 0, proc.stderr
    runs = set()
    for line in proc.stdout.splitlines():
        if not line.startswith("benchmarks/"):
            continue
        words = line.split()
        opts, key = {}, None
        for word in words[1:]:
            if word.startswith("--"):
                key = word[2:]
                opts[key] = []
            elif key:
                opts[key].append(word)
        for student in opts["students"]:
            for seed in opts["seeds"]:
                for variant in opts.get("variants", opts.get("recipes")):
                    runs.add((words[0], student, seed, variant))
    return runs


def test_converged_lanes_share_no_run_and_cover_section_6():
    # two lanes that both started one run would write one run folder from two processes
    lane1, lane2 = converged_lane_runs("1"), converged_lane_runs("2")
    assert lane1 and lane2 and not lane1 & lane2, sorted(lane1 & lane2)
    variants = ["kd", "kd_srp", "feat", "feat_srp", "at", "sp", "scratch"]
    section6 = {("benchmarks/reproduce.py", student, seed, variant)
                for student in ("r16", "m16", "r32") for seed in "012" for variant in variants}
    assert {run for run in lane1 | lane2 if run[0] == "benchmarks/reproduce.py"} == section6
