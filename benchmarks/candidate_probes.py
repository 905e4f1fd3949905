"""Two probes behind issue 13's candidates that the time-to-quality runs do not show (BENCHMARKS.md section 7).

    python benchmarks/candidate_probes.py step   [--threads 1] [--rounds 3] [--steps 10]
    python benchmarks/candidate_probes.py derive [--threads 1] [--images 32]

* ``step``: the main preset's training step (KD phase, cached teacher, batch 4, 128 px crops) on the whole
  crop and on progressive resolution's 64 px square (``optim.progressive_crop``), timed in turns (whole,
  square, whole, ...) so that the machine's load hits both alike; the median ms per step of each and their
  ratio. Progressive resolution pays only as far as this ratio is below 1.
* ``derive``: ``student.derive ls`` before any training step: the PSNR to the teacher on the main job's
  48 held-out crops of the skip student and of the plain ResNet-9 ngf 16 derived from the vintagify teacher
  on ``--images`` training crops, beside the copy of the input and the random start.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from srpkd.assets import resolve_teacher  # noqa: E402
from srpkd.config import load_config  # noqa: E402
from srpkd.distill import derive_student  # noqa: E402
from srpkd.metrics.image import psnr  # noqa: E402
from srpkd.models import create_generator, init_weights  # noqa: E402
from srpkd.train.data import SeededDataset, eval_batch, iterate, run_dataset  # noqa: E402
from srpkd.train.loop import Trainer  # noqa: E402


def probe_step(rounds: int, steps: int, threads: int) -> None:
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for crop in (0, 64):
            cfg = load_config("main", ["data.max_images=32", f"optim.progressive_crop={crop}", "optim.time=0",
                                       "optim.progressive_until=1.0", f"name=c{crop}", f"threads={threads}"])
            tr = Trainer(cfg, distill=True, run_dir=Path(tmp) / f"c{crop}", quiet=True)
            tr.prepare_cache()
            tr.task.train_crop, tr.task.gan_on = crop, False
            trainers[crop] = (tr, iterate(tr.data, cfg.optim.batch_size, cfg.seed, 0, 0, 1))
        times: dict[int, list[float]] = {crop: [] for crop in trainers}
        for r in range(rounds + 1):  # round 0 warms up
            for crop, (tr, it) in trainers.items():
                t0 = time.perf_counter()
                for i in range(steps):
                    tr.train_step(next(it)[1], r * steps + i)
                if r:
                    times[crop].append((time.perf_counter() - t0) / steps * 1000)
    whole, square = (statistics.median(times[c]) for c in (0, 64))
    print(f"128 px crop: {whole:.0f} ms/step; 64 px square: {square:.0f} ms/step; ratio {square / whole:.2f} "
          f"({rounds} rounds of {steps} steps, {torch.get_num_threads()} thread(s))")


@torch.no_grad()
def probe_derive(images: int) -> None:
    cfg = load_config("main")
    train = SeededDataset(run_dataset(cfg, cfg.data.train_split, train=True), cfg.seed)
    fit = torch.stack([train[(0, int(i))]["A"] for i in torch.linspace(0, len(train) - 1, images).round()])
    test = eval_batch(SeededDataset(run_dataset(cfg, cfg.data.test_split, train=False), cfg.seed), 48, 4, "x")["A"]
    teacher = resolve_teacher(cfg.teacher.checkpoint).eval()
    target = teacher(test)
    print(f"copy of the input: {float(psnr(test, target)):.2f} dB on {len(test)} held-out crops")
    for arch in ("skip_resnet_9blocks", "resnet_9blocks"):
        torch.manual_seed(0)
        student = init_weights(create_generator(arch, ngf=16, norm=cfg.student.norm)).eval()
        before = float(psnr(student(test), target))
        t0 = time.time()
        derive_student(teacher, student, fit)
        after = float(psnr(student.eval()(test), target))
        print(f"{arch} ngf 16: random start {before:.2f} dB, derived {after:.2f} dB ({time.time() - t0:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=["step", "derive"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--images", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe == "step":
        probe_step(args.rounds, args.steps, args.threads)
    else:
        probe_derive(args.images)


if __name__ == "__main__":
    main()
