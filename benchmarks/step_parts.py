"""The parts of a distillation step that issue 14's second round changed, timed in isolation.

    python benchmarks/step_parts.py [--json]

1 thread, median of 15 calls after 3 warm-ups, forward + backward, batch 4:

* ``feat_kd``: feature KD of the main job's four taps (student skip_resnet ngf 16 against the
  ResNet-9 ngf 64 teacher: 64 -> 256 channels at 32 px twice, 32 -> 128 at 64 px, 16 -> 64 at
  128 px), the direct form (bf16 1x1 adapter, float32 MSE) against ``feature_kd_loss_factorized``;
* ``reflection_pad``: a 4 x 64 x 32 x 32 pad of 1, torch's ``F.pad(mode="reflect")`` against
  ``models.base.ReflectionPad2d`` while autograd records, in float32 and bf16;
* ``threads``: the ``main`` preset's cached training step (GAN on) at 1 and at 2 threads,
  alternating in one process; and the same for the ResNet-9 ngf 32 student.

The step-level ratios against the step before issue 14 are ``benchmarks/step_speedup.py``'s.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from srpkd.config import load_config  # noqa: E402
from srpkd.losses import FeatureAdapter, feature_kd_loss, feature_kd_loss_factorized  # noqa: E402
from srpkd.models.base import ReflectionPad2d  # noqa: E402
from srpkd.train.data import iterate  # noqa: E402
from srpkd.train.loop import Trainer  # noqa: E402

# tap: (student channels, teacher channels, px)
MAIN_TAPS = {"encoder": (64, 256, 32), "body": (64, 256, 32), "up1": (32, 128, 64), "up2": (16, 64, 128)}


def median_ms(fn, calls: int = 15, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def feat_kd() -> dict:
    out = {}
    for tap, (c_s, c_t, px) in MAIN_TAPS.items():
        s = torch.randn(4, c_s, px, px).bfloat16().requires_grad_()  # the student's features under autocast
        t = torch.randn(4, c_t, px, px)
        adapter = FeatureAdapter(c_s, c_t)

        def direct():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                adapted = adapter(s)
            feature_kd_loss(adapted, t).backward()

        def factorized():
            feature_kd_loss_factorized(s, t, adapter.weight, adapter.bias).backward()

        out[f"{tap} {c_s}->{c_t}@{px}"] = {"direct_ms": median_ms(direct), "factorized_ms": median_ms(factorized)}
    out["total"] = {k: round(sum(v[k] for v in out.values()), 2) for k in ("direct_ms", "factorized_ms")}
    return out


def reflection_pad() -> dict:
    out = {}
    fast = ReflectionPad2d(1)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(4, 64, 32, 32).to(dtype).requires_grad_()
        g = torch.randn(4, 64, 34, 34).to(dtype)
        out[str(dtype).removeprefix("torch.")] = {
            "torch_ms": median_ms(lambda: F.pad(x, (1, 1, 1, 1), mode="reflect").backward(g)),
            "slices_ms": median_ms(lambda: fast(x).backward(g)),
        }
    return out


def threads(sets: list[str], rounds: int = 6, steps: int = 3) -> dict:
    logging.getLogger("srpkd").setLevel(logging.ERROR)
    cfg = load_config("main", sets + ["threads=2"])
    tr = Trainer(cfg, distill=True, run_dir=Path(tempfile.mkdtemp(prefix="srpkd-parts-")) / "run", quiet=True)
    with contextlib.redirect_stderr(io.StringIO()):
        tr.prepare_cache()
    tr.task.gan_on = True
    it = iterate(tr.data, cfg.optim.batch_size, cfg.seed, 0, 0, 1)
    times: dict[int, list[float]] = {1: [], 2: []}
    step = 0
    for r in range(rounds):
        for n in (1, 2):
            torch.set_num_threads(n)
            for _ in range(steps):
                batch = next(it)[1]
                t0 = time.perf_counter()
                tr.train_step(batch, step)
                if r:  # the first round warms up
                    times[n].append(time.perf_counter() - t0)
                step += 1
    return {f"{n}_thread_ms": round(statistics.median(v) * 1000, 1) for n, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = {"feat_kd": feat_kd(), "reflection_pad": reflection_pad(),
           "threads_main": threads([]),
           "threads_resnet_ngf32": threads(["student.arch=resnet_9blocks", "student.ngf=32"]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_avg_after": os.getloadavg(),
           "torch": torch.__version__}
    print(json.dumps(res, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
