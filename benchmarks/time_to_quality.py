"""Time to quality: how close to its teacher a student gets per minute of CPU training, per recipe.

    python benchmarks/time_to_quality.py [TASK] [--recipes default old ...] [--seeds 0 1 2]
        [--time SECONDS] [--students r16 ...] [--threads N] [--out runs/ttq] [--quick]

TASK:

* ``main`` (default): the main job (``srpkd distill`` with the ``main`` preset: the vintagify
  teacher on the built-in photos, 128 px). Held out: the built-in test photos (coffee, chelsea,
  zidane); the best checkpoint is chosen on the val photos.
* ``real_teacher``: the same teacher on 128 px squares of real photos from ``../shared/data``:
  train on 192 facades_unpaired/trainA photos and 192 photo halves of edges2shoes_subset/train
  (``--train-photos N``: N of each, at most 400); held out: facades_unpaired/testA, the photo halves
  of edges2shoes_subset/val and the 24 Kodak photos.
  Students (``--students``): r16 / r32 (the paper's ResNet-9 ngf 16 / 32), m16 (mobile ngf 16),
  s16 (this project's skip_resnet_9blocks ngf 16).

Each (recipe, student, seed) is one real ``srpkd distill`` run in a subprocess with the recipe's
``--set`` overrides and ``--time``; with ``eval_test=true`` the loop measures PSNR to the teacher on
the held-out photos at every validation, which gives the curve against wall time (the run's own
clock, teacher cache included). ``--no-test-curve`` leaves that out (run folders ``*_valcurve_*``):
the run is then exactly a user's ``--time`` run, and the curve is on the val split. At the end the
student's ST-LPIPS to the teacher (and the copy's) is measured on the same held-out crops.
Resumable: a finished run (``ttq.json`` in its folder) is skipped; a stopped one starts again.
``--report-only`` tabulates the finished runs of the given
recipes and seeds without starting any.

Results: ``OUT/TASK/results.json``, ``results.md`` (final figures, mean +- sample std over seeds,
copy-the-input baseline beside them) and ``curves.png`` (PSNR to the teacher against minutes, one
line per run, the copy baseline drawn in).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import kept as kept_runs  # noqa: E402
from real_photos import TRAIN_PHOTOS, data_overrides, prepare_real_teacher_data  # noqa: E402

from srpkd.assets import resolve_teacher  # noqa: E402
from srpkd.checkpoint import load_generator  # noqa: E402
from srpkd.config import load_config  # noqa: E402
from srpkd.devices import cpu_name  # noqa: E402
from srpkd.metrics.image import psnr  # noqa: E402
from srpkd.metrics.perceptual import perceptual_distance  # noqa: E402
from srpkd.train.data import SeededDataset, eval_batch, run_dataset  # noqa: E402


# Recipes, as --set overrides of the task's preset, on top of PINNED: every recipe runs with perceptual KD off, the
# GAN term on (from half-way) and a random start unless it sets them, so that the recipes measured before the
# preset changed them stay what they were, whatever the preset's own setting. "default" is the preset with PINNED.
# The main preset today is perc_no_gan_derive (since 2026-12-04; perc_no_gan earlier that day, perc from 2026-12-02).
PINNED = {"loss.perc": 0.0, "loss.gan": 1.0, "student.derive": "none"}
RECIPES: dict[str, dict] = {
    "default": {},
    # the main preset before issue 13: plain ResNet, GAN recipe optimiser, linear decay, no feature KD
    "old": {"student.arch": "resnet_9blocks", "optim.lr": 2e-4, "optim.beta1": 0.5, "optim.schedule": "linear",
            "optim.warmup": 0.0, "loss.feat": 0.0, "loss.gan_start": 0.0},
    "no_feat": {"loss.feat": 0.0},  # output KD + relation loss (+ GAN) only
    "no_gan": {"loss.gan": 0.0},  # KD terms only, no discriminator at all
    "perc": {"loss.perc": 1.0},  # with perceptual KD (ST-LPIPS to the teacher on a 64 px square)
    # ... and colour KD (L1 between 8 px block means, issue 13's colour-pinning candidate)
    "perc_colour": {"loss.perc": 1.0, "loss.colour": 10.0},
    # ... and progressive resolution (64 px squares for the first 30% of the steps, issue 13's candidate)
    "perc_prog": {"loss.perc": 1.0, "optim.progressive_crop": 64, "optim.progressive_until": 0.3},
    # ... and the student derived from the teacher (kept channels, least-squares refit, issue 13's candidate)
    "perc_derive": {"loss.perc": 1.0, "student.derive": "ls"},
    # ... and the GAN term from the first step (issue 13's KD-only warm-up, taken away)
    "perc_gan_all": {"loss.perc": 1.0, "loss.gan_start": 0.0},
    # ... and a constant learning rate without warm-up (issue 13's warm-up and cosine decay, taken away)
    "perc_const_lr": {"loss.perc": 1.0, "optim.schedule": "linear", "optim.decay_fraction": 0.0, "optim.warmup": 0.0},
    # the preset with one of its own parts taken away, to pair against it (bash benchmarks/pairs.sh perc perc_off ...):
    "perc_off": {"loss.perc": 0.0},  # without perceptual KD (the preset's numerics: the same as "fast" today)
    "perc_no_feat": {"loss.perc": 1.0, "loss.feat": 0.0},  # without feature KD at the four taps
    "perc_plain": {"loss.perc": 1.0, "student.arch": "resnet_9blocks"},  # the paper's ResNet-9 ngf 16, no input skip
    "perc_no_gan": {"loss.perc": 1.0, "loss.gan": 0.0},  # without the discriminator (the preset's 2026-12-04 step)
    # ... and the student derived from the teacher: the main preset since 2026-12-04, chosen on a slow CPU where
    # a pair's runs get ~420-470 steps and the derived start's lead of the first minutes is not caught up
    "perc_no_gan_derive": {"loss.perc": 1.0, "loss.gan": 0.0, "student.derive": "ls"},
    "no_srp": {"loss.srp": 0.0},  # without the paper's relation term
    "plain_resnet": {"student.arch": "resnet_9blocks"},  # the paper's student, same recipe
    # issue 14's numeric shortcuts (bf16 autocast where the CPU has bf16 instructions, float32 relation loss):
    # the main preset's own since issue 14, named so that results say which numerics a run used
    "fast": {"amp": "auto", "loss.srp_precision": "float32"},
    "exact": {"amp": "none", "loss.srp_precision": "float64"},  # the numerics before issue 14
}
STUDENTS = {
    "r16": {"student.arch": "resnet_9blocks", "student.ngf": 16},
    "r32": {"student.arch": "resnet_9blocks", "student.ngf": 32},
    "m16": {"student.arch": "mobile_resnet_9blocks", "student.ngf": 16},
    "s16": {"student.arch": "skip_resnet_9blocks", "student.ngf": 16},
}


def log(msg: str) -> None:
    print(f"[ttq {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def task_overrides(task: str, out: Path, size: int, per_source: int = TRAIN_PHOTOS) -> dict:
    if task == "main":
        return {}
    return data_overrides(prepare_real_teacher_data(out, size, per_source), size)


def run_one(run_dir: Path, overrides: dict, seconds: float, threads: int, test_curve: bool = True) -> None:
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v) if v is not None else 'null'}")]
    cmd = [sys.executable, "-m", "srpkd", "distill", "--name", run_dir.name, "--out-dir", str(run_dir.parent),
           "--time", f"{seconds:g}s", "--quiet", "--set", f"eval_test={str(test_curve).lower()}",
           "--set", f"threads={threads}", *sets]
    shutil.rmtree(run_dir, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log(" ".join(cmd[2:]))
    subprocess.run(cmd, check=True, env=env)


@torch.no_grad()
def final_figures(run_dir: Path) -> dict:
    """PSNR and ST-LPIPS to the teacher of the student and of a copy of the input, on the held-out crops."""
    cfg = load_config(run_dir / "config.yaml")
    ds = SeededDataset(run_dataset(cfg, cfg.data.test_split, train=False), cfg.seed)
    batch = eval_batch(ds, cfg.eval_images, 4, cfg.student.arch)
    x = batch["A"]
    student = load_generator(run_dir / "student.safetensors").eval()
    teacher = resolve_teacher(cfg.teacher.checkpoint).eval()
    t = torch.cat([teacher(x[i:i + 8]) for i in range(0, len(x), 8)])
    s = torch.cat([student(x[i:i + 8]) for i in range(0, len(x), 8)])
    return {"images": len(x), "psnr": psnr(s, t), "copy_psnr": psnr(x, t),
            "stlpips": perceptual_distance(s, t), "copy_stlpips": perceptual_distance(x, t)}


def curve(run_dir: Path, split: str = "test") -> list[tuple[float, float]]:
    """(minutes, PSNR to the teacher on ``split``) at every validation."""
    recs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [(r["time"] / 60, r[f"{split}/psnr_to_teacher"]) for r in recs if f"{split}/psnr_to_teacher" in r]


def summarise(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def write_results(tdir: Path, rows: list[dict], meta: dict) -> None:
    (tdir / "results.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        photos = r.get("train_photos") or 2 * TRAIN_PHOTOS  # runs from before --train-photos used the default
        default = meta["task"] == "main" or photos == 2 * TRAIN_PHOTOS
        student = r["student"] if default else f"{r['student']} ({photos} photos)"
        if r.get("curve_split") == "val":
            student += ", no test curve"
        if r.get("threads", 2) != 2:  # runs from before the record said their threads used 2
            student += f", {r['threads']} thread"
        groups.setdefault((r["recipe"], student), []).append(r)
    lines = [f"# Time to quality: {meta['task']}, {meta['time_s']:g} s per run", "",
             f"Machine: {meta['machine']} (the runs' CPUs: "
             f"{', '.join(sorted({r.get('cpu', 'not recorded') for r in rows})) or 'none'}); "
             "2 threads per run unless the student column says otherwise; "
             f"{meta['command']}", "",
             "| recipe | student | seeds | PSNR to teacher (dB) | copy of input (dB) | ST-LPIPS to teacher "
             "| copy ST-LPIPS | steps |",
             "|---|---|---|---|---|---|---|---|"]
    for (recipe, student), rs in groups.items():
        lines.append(f"| {recipe} | {student} | {len(rs)} | {summarise([r['psnr'] for r in rs])} | "
                     f"{rs[0]['copy_psnr']:.3f} | {summarise([r['stlpips'] for r in rs])} | "
                     f"{rs[0]['copy_stlpips']:.4f} | {summarise([r['steps'] for r in rs], 0)} |")
    (tdir / "results.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((recipe, student), rs) in enumerate(groups.items()):
        for j, r in enumerate(rs):
            xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
            val = r.get("curve_split") == "val"  # a run without the test curve: its curve is on the val photos
            ax.plot(xs, ys, color=colors[i % len(colors)], alpha=0.8, marker=".", ls=":" if val else "-",
                    label=(f"{recipe} {student}" + (" (curve on the val photos)" if val else "")) if j == 0 else None)
            if val:
                ax.plot([xs[-1]], [r["psnr"]], color=colors[i % len(colors)], marker="*", ms=10, ls="none",
                        label=f"{recipe} {student}: final, test photos" if j == 0 else None)
    if rows:
        ax.axhline(rows[0]["copy_psnr"], color="k", ls="--", label="copy of the input (test photos)")
    ax.set_xlabel("wall minutes (teacher cache included)")
    ax.set_ylabel("PSNR to the teacher on held-out photos (dB)")
    ax.set_title(f"time to quality: {meta['task']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(tdir / "curves.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", nargs="?", default="main", choices=["main", "real_teacher"])
    ap.add_argument("--recipes", nargs="+", default=["default"], choices=list(RECIPES))
    ap.add_argument("--students", nargs="+", default=None, choices=list(STUDENTS),
                    help="real_teacher: students (default r16 r32 m16); main: the preset's student")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--time", type=float, default=None, help="seconds of run time (default: main 510, real 1800)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--train-photos", type=int, nargs="+", default=[TRAIN_PHOTOS],
                    help="real_teacher: training photos from each source (facades, shoes); at most 400")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/ttq"))
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny student, a few seconds per run")
    ap.add_argument("--report-only", action="store_true", help="tabulate the finished runs only; start none")
    ap.add_argument("--no-test-curve", action="store_true",
                    help="do not measure the test split at every validation (it costs real_teacher runs ~15%% of "
                         "their steps): the run is then exactly a user's --time run; the curve is on the val split "
                         "and the final figures on the test split as always")
    ap.add_argument("--keep", type=Path,
                    help="a folder (committed, e.g. benchmarks/results/time_to_quality/real_teacher/runs) that holds a "
                         "copy of each finished run's ttq.json as RUN.json: a run is copied there when it finishes, "
                         "and a run found there counts as finished in a new --out (a fresh checkout)")
    args = ap.parse_args(argv)
    seconds = args.time or (510.0 if args.task == "main" else 1800.0)
    students = args.students or (["r16", "r32", "m16"] if args.task == "real_teacher" else ["preset"])
    tdir = args.out / args.task
    tdir.mkdir(parents=True, exist_ok=True)
    rows = []
    curves = [False, True] if args.report_only else [args.no_test_curve]  # a report shows runs of both kinds
    for per_source, recipe, student, seed, no_test_curve in itertools.product(
            args.train_photos if args.task == "real_teacher" else [None], args.recipes, students, args.seeds, curves):
        train_photos = 2 * per_source if per_source else None
        tag = f"_n{per_source}" if per_source not in (None, TRAIN_PHOTOS) else ""
        tag += "_valcurve" if no_test_curve else ""
        run_dir = tdir / f"{recipe}_{student}{tag}_seed{seed}"
        done = run_dir / "ttq.json"
        kept = args.keep / f"{run_dir.name}.json" if args.keep else None
        if kept_runs.restore(kept, done):
            log(f"restored {done} from {kept}")
        if args.report_only and not done.is_file():
            continue
        if not done.is_file():
            base = task_overrides(args.task, tdir, args.size, per_source or TRAIN_PHOTOS)
            if args.quick:
                base.update({"student.ngf": 4, "data.max_images": 8, "eval_images": 4, "eval_every": 5,
                             "discriminator.ndf": 8, "data.crop_size": 32, "loss.feat_taps": ["encoder"]})
            over = {**base, **PINNED, **STUDENTS.get(student, {}), **RECIPES[recipe], "seed": seed}
            run_one(run_dir, over, seconds, args.threads, test_curve=not no_test_curve)
            records = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
            rec = {"recipe": recipe, "student": student, "seed": seed, "train_photos": train_photos,
                   "threads": args.threads, "cpu": cpu_name(), **final_figures(run_dir),
                   "steps": max(r["step"] for r in records)}
            rec["curve_split"] = "val" if no_test_curve else "test"
            rec["curve"] = curve(run_dir, rec["curve_split"])
            done.write_text(json.dumps(rec) + "\n")
        kept_runs.keep(done, kept)
        rec = json.loads(done.read_text())
        log(f"{recipe} {student} seed {seed}: PSNR {rec['psnr']:.2f} dB (copy {rec['copy_psnr']:.2f}), "
            f"ST-LPIPS {rec['stlpips']:.4f} (copy {rec['copy_stlpips']:.4f}), {rec['steps']} steps")
        rows.append(rec)
    meta = {"task": args.task, "time_s": seconds, "threads": args.threads, "size": args.size,
            "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.platform()}, torch {torch.__version__}",
            "command": "python benchmarks/time_to_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_results(tdir, rows, meta)
    log(f"results: {tdir / 'results.md'}, {tdir / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
