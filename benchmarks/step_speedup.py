"""Today's distillation step against the step of an earlier commit, interleaved in one run.

    python benchmarks/step_speedup.py [--baseline REV] [--threads 1] [--rounds 5] [--steps 2]
                                      [--draws 4] [--json] [--quick]

Each variant is a worker process that builds a trainer from the ``main`` preset
(128 px, batch 4, skip_resnet_9blocks ngf 16 student, PatchGAN ndf 32, the
vintagify teacher, output KD + feature KD at 4 taps + relation loss, GAN on)
with the srpkd source of either this checkout or ``--baseline`` (default: the
commit before the speed-ups, exported with ``git archive``), then waits. The
parent sends every worker in turn "run N steps" for ``--rounds`` rounds, so a
change in the machine's load hits all variants alike, and reports the median
wall and CPU time per step and the ratio to the baseline of the same data.
Every step draws a fresh batch from the trainer's own data order (not timed)
and runs the loop's learning-rate update and ``Trainer.train_step`` (timed).

Variants (``base``: the baseline commit; ``new``: this checkout):

- ``base_random`` / ``new_random[_fast]``: random crops and flips, the teacher
  run every step; ``_fast``: bf16 autocast for teacher, student and
  discriminator, the relation loss in float32 and the feature KD without
  its adapted maps (``amp=bf16 loss.srp_precision=float32
  loss.feat_method=factorized``), the others in float32 / float64 with the
  direct feature KD as before (every ``new`` variant has the reflection pad
  from slices, whose values are the same bit for bit);
- ``new_draws[_fast]``: the same data with ``cache_draws`` K: timed after the
  first K epochs, when every (draw, item) is cached; the steps of the first K
  epochs (teacher run and stored) are reported as ``fill_ms_per_step``;
- ``base_cached`` / ``new_cached[_fast]``: the ``main`` preset's fixed crops with
  the teacher cache filled before training.

Then, in this process, the numeric cost of bf16 and of the draw cache's float16
storage: PSNR and max |difference| of the teacher's bf16 images to its fp32
images on the 48 held-out crops of the main job, and of float16-rounded features.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BASELINE = "1e9c55c"  # main before issue 14's speed-ups
RANDOM = ["data.fixed_crops=false", "data.flip=true"]
# the numeric shortcuts: bf16 autocast, float32 relation loss, feature KD without the adapted maps
FAST = ["amp=bf16", "loss.srp_precision=float32", "loss.feat_method=factorized"]
EXACT = ["amp=none", "loss.srp_precision=float64", "loss.feat_method=direct"]  # the reference numerics
# this checkout's variants keep the baseline main preset's discriminator and random start (since 2026-12-04 the
# preset has no discriminator and derives its student from the teacher)
AS_BASELINE = ["loss.gan=1", "student.derive=none"]
VARIANTS = {  # name: (source, settings)
    "base_random": ("base", RANDOM + ["cache_teacher=false"]),
    "new_random": ("new", RANDOM + ["cache_teacher=false"] + EXACT),
    "new_random_fast": ("new", RANDOM + ["cache_teacher=false"] + FAST),
    "new_draws": ("new", RANDOM + ["cache_draws={draws}"] + EXACT),
    "new_draws_fast": ("new", RANDOM + ["cache_draws={draws}"] + FAST),
    "base_cached": ("base", []),
    "new_cached": ("new", EXACT),
    "new_cached_fast": ("new", FAST),
}
RATIO_TO = {"random": "base_random", "draws": "base_random", "cached": "base_cached"}


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- worker (either source tree)


def worker(spec: dict) -> None:
    """Build one trainer, run the untimed warm-up, then answer "N" with the times of N steps."""
    from srpkd.config import load_config  # the worker's source tree is on PYTHONPATH; the parent imports no srpkd
    from srpkd.train.data import iterate
    from srpkd.train.loop import Trainer

    logging.getLogger("srpkd").setLevel(logging.ERROR)
    cfg = load_config("main", spec["sets"])
    tmp = Path(tempfile.mkdtemp(prefix="srpkd-speedup-"))
    tr = Trainer(cfg, distill=True, run_dir=tmp / "run", quiet=True)
    with contextlib.redirect_stderr(io.StringIO()):
        tr.prepare_cache()
    tr.task.gan_on = True
    opts = list(tr.task.optimizers.values())
    it = iterate(tr.data, cfg.optim.batch_size, cfg.seed, 0, 0, 1)
    step = 0

    def run(n: int) -> tuple[list[float], list[float]]:
        nonlocal step
        wall, cpu = [], []
        for _ in range(n):
            batch = next(it)[1]
            t0, c0 = time.perf_counter(), time.process_time()
            tr.sched.apply(opts, step)
            tr.train_step(batch, step)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            step += 1
        return wall, cpu

    fill, _ = run(spec["warm"])
    print(json.dumps({"ready": True, "fill": fill}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        wall, cpu = run(int(line))
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


# ----------------------------------------------------------------------------- parent


def export_source(rev: str, out: Path) -> Path:
    """``src/`` of commit ``rev`` in ``out`` (git archive: no worktree is registered)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(out, filter="data")
    return out / "src"


class Worker:
    def __init__(self, name: str, src: Path, sets: list[str], warm: int) -> None:
        self.name, self.times, self.cpu = name, [], []
        path = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)  # this tree first
        env = dict(os.environ, PYTHONPATH=path, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps({"sets": sets, "warm": warm})],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.fill: list[float] | None = None

    def wait_ready(self) -> None:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} failed to start (see its error above)")
        self.fill = json.loads(line)["fill"]

    def run(self, n: int) -> None:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        got = json.loads(self.proc.stdout.readline())
        self.times += got["wall"]
        self.cpu += got["cpu"]

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def numerics(threads: int, crops: int = 48) -> dict:
    """bf16 teacher vs fp32, and float16 storage of its features, on the main job's held-out crops (the first
    ``crops`` of 48: --quick takes 1, since a CPU without bf16 instructions emulates bf16: 34 s for one crop and
    137 s for eight on an AVX2 EPYC, 2 threads)."""
    from srpkd.assets import resolve_teacher  # only the parent's own checkout is measured here
    from srpkd.data.builtin import BuiltinPhotos
    from srpkd.metrics.image import psnr

    torch.set_num_threads(threads)
    t = resolve_teacher("builtin:vintagify").eval()
    x = torch.stack([BuiltinPhotos("test", crop_size=128, length=48)[i]["A"] for i in range(crops)])
    taps = ["encoder", "body", "up1", "up2"]
    with torch.inference_mode():
        out32, f32 = zip(*[t(x[i:i + 8], taps=taps) for i in range(0, crops, 8)])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out16, f16 = zip(*[t(x[i:i + 8], taps=taps) for i in range(0, crops, 8)])
    o32, o16 = torch.cat(out32), torch.cat(out16).float()
    res = {"crops": crops, "bf16_teacher_psnr_db": round(float(psnr(o16, o32)), 2),
           "bf16_teacher_max_abs": round(float((o16 - o32).abs().max()), 4),
           "copy_psnr_db": round(float(psnr(x, o32)), 2)}
    for k in taps:
        a = torch.cat([f[k] for f in f32])
        b16 = torch.cat([f[k] for f in f16]).float()
        scale = float(a.abs().max())
        res[f"bf16_{k}_max_rel"] = round(float((b16 - a).abs().max()) / scale, 5)
        res[f"fp16_{k}_max_rel"] = round(float((a.half().float() - a).abs().max()) / scale, 6)
    res["fp16_image_max_abs"] = round(float((o32.half().float() - o32).abs().max()), 6)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--baseline", default=BASELINE, help=f"commit whose step is the reference (default {BASELINE})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    p.add_argument("--draws", type=int, default=4, help="cache_draws K of the draws variants")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke test: 32 px, 1 round of 1 step, 2 draws")
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.quick:
        args.size, args.rounds, args.steps, args.draws = 32, 1, 1, 2
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    n_items, batch = 8, 4  # 2 batches per epoch
    common = [f"threads={args.threads}", f"data.crop_size={args.size}", f"optim.batch_size={batch}",
              f"data.max_images={n_items}", "eval_images=1", "log_every=0", "optim.time=0", "optim.steps=100000",
              "time_limit=0"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="srpkd-speedup-") as tmp:
        try:
            srcs = {"new": REPO / "src", "base": export_source(args.baseline, Path(tmp))}
        except (subprocess.CalledProcessError, OSError) as e:
            err = getattr(e, "stderr", b"") or b""
            print(f"step_speedup.py: error: cannot export commit {args.baseline} with git archive "
                  f"({err.decode(errors='replace').strip() or e}); a shallow clone lacks it", file=sys.stderr)
            return 2
        workers = []
        for name in names:
            source, sets = VARIANTS[name]
            sets = [s.format(draws=args.draws) for s in sets] + (AS_BASELINE if source == "new" else [])
            warm = args.draws * (n_items // batch) if "draws" in name else 2
            progress(f"starting {name} ({source}: {' '.join(sets) or 'main preset'}; {warm} untimed steps)")
            w = Worker(name, srcs[source], common + sets, warm)
            w.wait_ready()  # one at a time: a worker's warm-up is not slowed down by another's
            workers.append(w)
        for r in range(args.rounds):
            progress(f"round {r + 1}/{args.rounds}")
            for w in workers:
                w.run(args.steps)
        for w in workers:
            w.close()
    rows = []
    for w in workers:
        rows.append({"variant": w.name, "ms_per_step": round(1e3 * statistics.median(w.times), 1),
                     "cpu_ms_per_step": round(1e3 * statistics.median(w.cpu), 1), "timed_steps": len(w.times),
                     "fill_ms_per_step": round(1e3 * statistics.mean(w.fill), 1) if "draws" in w.name else None})
    by = {r["variant"]: r for r in rows}
    for r in rows:
        kind = r["variant"].split("_")[1]
        ref = by.get(RATIO_TO[kind])
        r["speedup_wall"] = round(ref["ms_per_step"] / r["ms_per_step"], 2) if ref else None
        r["speedup_cpu"] = round(ref["cpu_ms_per_step"] / r["cpu_ms_per_step"], 2) if ref else None
        r["reference"] = RATIO_TO[kind]
    progress("numerics of bf16 and float16 storage")
    num = numerics(args.threads, 1 if args.quick else 48)
    info = {"baseline": args.baseline, "threads": args.threads, "size": args.size, "batch": batch,
            "draws": args.draws, "rounds": args.rounds, "steps": args.steps, "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    if args.json:
        for r in rows:
            print(json.dumps(r))
        print(json.dumps({"numerics": num}))
        print(json.dumps({"machine": info}))
        return 0
    print(f"{'variant':<18}{'ms/step':>9}{'cpu ms':>9}{'vs':>13}{'x wall':>8}{'x cpu':>7}{'fill ms':>9}")
    for r in rows:
        fill = f"{r['fill_ms_per_step']:.0f}" if r["fill_ms_per_step"] is not None else "-"
        print(f"{r['variant']:<18}{r['ms_per_step']:>9.0f}{r['cpu_ms_per_step']:>9.0f}{r['reference']:>13}"
              f"{r['speedup_wall'] or 0:>8.2f}{r['speedup_cpu'] or 0:>7.2f}{fill:>9}")
    print("numerics:", json.dumps(num))
    print("machine:", json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
