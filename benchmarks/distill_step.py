"""Images per second of one training step: scratch student vs distillation (with and without teacher cache).

    python benchmarks/distill_step.py [--json] [--size 128] [--batch 4] [--steps N] [--rounds R]
                                      [--device cpu|cuda] [--threads N] [--variants a,b,...] [--quick]

The step timed is the training loop's own :meth:`srpkd.train.loop.Trainer.train_step`
(plus the learning-rate update the loop does before it), on trainers built from the
``main`` preset exactly as ``srpkd distill`` / ``srpkd train`` build them, on a few
fixed batches drawn from the trainer's own dataset. Data loading, logging and
checkpoints are outside the timed region (``data_ms_per_batch`` reports the data cost
of a batch separately). Variants (student: ResNet-9 ngf 16, PatchGAN ndf 32 as in
``main``; teacher: the real vintagify ResNet-9 ngf 64):

- ``scratch``                 the student alone, no teacher: task ``paired`` (pix2pix:
                              GAN + 100 x L1 to the target), same discriminator;
- ``distill``                 ``teacher_only`` with output KD (10) + relation loss (8000),
                              the teacher run on every step (``cache_teacher: false``);
- ``distill_cached``          the same with the teacher's outputs and encoder features
                              cached before training (the ``main`` preset);
- ``distill_cached_cl``       + ``channels_last: true``;
- ``distill_cached_compile``  + ``compile: true`` (torch.compile of G and D);
- ``distill_cl``              ``distill`` + ``channels_last`` (the teacher runs channels-last too).

Timing: every variant is warmed up, then the variants are run in turns
(a, b, c, a, b, c, ...) for ``--rounds`` rounds of ``--steps`` steps, so a change in
the machine's load hits all of them alike; the median step time is reported, with
``ratio_to_scratch`` = (time per image) / (scratch time per image). The process CPU
time per step is reported too (``cpu_ms_per_step``, ``cpu_ratio_to_scratch``): on a
shared machine with more runnable threads than cores the wall time mostly measures
the other processes, and with ``--threads 1`` the CPU time is the better measure of
the work a step does. On CUDA each step is synchronised and the default is 256 px
with bf16 autocast (``amp: bf16``).

Relation-loss share: ``distill_cached`` with ``loss.srp`` 0 and 8000, at each size
of ``--srp-sizes`` (default 128 and 256), also interleaved; ``srp_overhead`` =
t(srp > 0) / t(srp = 0) - 1.

Output: one JSON object per variant (``--json``) or a table, then the machine
(threads, torch version, load average before and after, CPU name).
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
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from srpkd import SrpkdError
from srpkd.config import load_config
from srpkd.data.builtin import BuiltinPhotos
from srpkd.devices import device_name, resolve_device
from srpkd.train.data import collate, epoch_batches
from srpkd.train.loop import Trainer

VARIANTS = {
    "scratch": dict(distill=False),
    "distill": dict(distill=True, cache=False),
    "distill_cached": dict(distill=True, cache=True),
    "distill_cached_cl": dict(distill=True, cache=True, channels_last=True),
    "distill_cached_compile": dict(distill=True, cache=True, compile=True),
    "distill_cl": dict(distill=True, cache=False, channels_last=True),
}
DEFAULT_VARIANTS = "scratch,distill,distill_cached,distill_cached_cl,distill_cached_compile"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_aligned_folder(root: Path, size: int, n: int) -> None:
    """pix2pix pairs A|B (``size`` x ``size`` each) cut from the built-in photos, for the scratch baseline."""
    for split, ds in (("train", BuiltinPhotos("train", crop_size=size, length=n, flip=False, fixed=True)),
                      ("test", BuiltinPhotos("test", crop_size=size, length=2))):
        (root / split).mkdir(parents=True)
        for i in range(len(ds)):
            a = ds[i]["A"]
            b = a.flip(-1)  # any target: the step's cost does not depend on the pixels
            ab = ((torch.cat([a, b], -1).clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(ab).save(root / split / f"{i:03d}.png")


class Case:
    """One trainer built from the ``main`` preset, and a few fixed batches to step on."""

    def __init__(self, name: str, args, tmp: Path, srp: float | None = None, size: int | None = None) -> None:
        spec = VARIANTS[name]
        self.name, self.size = name, size or args.size
        self.batch = args.batch
        n_items = args.batch * args.n_batches
        sets = [
            f"data.crop_size={self.size}", f"optim.batch_size={args.batch}", "optim.steps=100000",
            f"data.max_images={n_items}", "eval_images=1", f"device={args.device}", "log_every=0",
            f"amp={args.amp}", f"channels_last={str(spec.get('channels_last', False)).lower()}",
            f"compile={str(spec.get('compile', False)).lower()}",
            "student.derive=none",  # the step's cost, not the one-off fit of the main preset's derived start
        ]
        if args.threads:
            sets.append(f"threads={args.threads}")
        if spec["distill"]:
            sets.append(f"cache_teacher={str(spec['cache']).lower()}")
            if srp is not None:
                sets.append(f"loss.srp={srp}")
        else:
            root = tmp / f"aligned{self.size}"
            if not root.exists():
                write_aligned_folder(root, self.size, n_items)
            sets += ["task=paired", "data.mode=aligned", f"data.root={root}", "data.preprocess=none", "data.flip=false"]
        cfg = load_config("main", sets)
        if not spec["distill"]:
            cfg.teacher.checkpoint = None  # as `srpkd train` does
        self.cfg = cfg
        self.srp = cfg.loss.srp if spec["distill"] else None
        self.trainer = Trainer(cfg, distill=spec["distill"], run_dir=tmp / f"run-{name}-{self.size}-{srp}", quiet=True)
        self.device = self.trainer.device
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            self.cache_line = self.trainer.prepare_cache()
        self.cache_s = time.perf_counter() - t0 if spec.get("cache") else None
        # fixed batches from the trainer's own dataset (the loop's order of epoch 0); data cost measured here
        keys = epoch_batches(len(self.trainer.data), args.batch, cfg.seed, 0, 0, 1)[: args.n_batches]
        t0 = time.perf_counter()
        self.batches = [collate([self.trainer.data[k] for k in ks]) for ks in keys]
        self.data_ms = 1e3 * (time.perf_counter() - t0) / len(keys)
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.step = 0
        self.warmup_s = None

    def run_steps(self, n: int, record: bool = True) -> None:
        tr = self.trainer
        opts = [o for o in (tr.optG, tr.optD) if o is not None]
        for _ in range(n):
            batch = self.batches[self.step % len(self.batches)]
            sync(self.device)
            t0, c0 = time.perf_counter(), time.process_time()
            tr.sched.apply(opts, self.step)
            tr.train_step(batch, self.step)
            sync(self.device)
            t1, c1 = time.perf_counter(), time.process_time()
            self.step += 1
            if record:
                self.times.append(t1 - t0)
                self.cpu.append(c1 - c0)

    def warm(self, n: int) -> None:
        t0 = time.perf_counter()
        self.run_steps(n, record=False)
        self.warmup_s = time.perf_counter() - t0

    def result(self) -> dict:
        med = statistics.median(self.times)
        return {
            "variant": self.name,
            "size": self.size,
            "batch": self.batch,
            "srp_weight": self.srp,
            "images_per_s": round(self.batch / med, 3),
            "ms_per_image": round(1e3 * med / self.batch, 2),
            "ms_per_step": round(1e3 * med, 1),
            "ms_per_step_min": round(1e3 * min(self.times), 1),
            "cpu_ms_per_step": round(1e3 * statistics.median(self.cpu), 1),
            "timed_steps": len(self.times),
            "warmup_s": round(self.warmup_s, 2) if self.warmup_s is not None else None,
            "cache_fill_s": round(self.cache_s, 2) if self.cache_s is not None else None,
            "data_ms_per_batch": round(self.data_ms, 1),
            "channels_last": self.cfg.channels_last,
            "compile": self.cfg.compile,
            "amp": self.cfg.amp,
        }


def machine(device: torch.device, load_before: tuple[float, ...]) -> dict:
    info = {
        "machine": True,
        "device": str(device),
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    return info


def print_table(rows: list[dict], share: list[dict], info: dict) -> None:
    print(f"{'variant':<24}{'px':>5}{'img/s':>9}{'ms/img':>9}{'ratio':>8}{'cpu ms/step':>13}{'cache s':>9}")
    for r in rows:
        cache = f"{r['cache_fill_s']:.1f}" if r["cache_fill_s"] is not None else "-"
        ratio = f"{r['ratio_to_scratch']:.2f}x" if r.get("ratio_to_scratch") is not None else "-"
        print(f"{r['variant']:<24}{r['size']:>5}{r['images_per_s']:>9.2f}{r['ms_per_image']:>9.1f}{ratio:>8}"
              f"{r['cpu_ms_per_step']:>13.0f}{cache:>9}")
    for s in share:
        print(f"relation loss at {s['size']} px: step {s['ms_per_step_srp0']:.0f} ms (srp 0) -> "
              f"{s['ms_per_step_srp']:.0f} ms (srp {s['srp_weight']:g}): +{100 * s['srp_overhead']:.1f}%")
    print(f"\n{info['device']} ({info['device_name']}), {info['threads']} threads, torch {info['torch']}, "
          f"load average {info['load_avg_before']} -> {info['load_avg_after']}, {info['date']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--size", type=int, default=None, help="crop size in px (default 128 on CPU, 256 on CUDA)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds of interleaved variants")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first (compile: at least 3)")
    p.add_argument("--n-batches", type=int, default=2, help="fixed batches cycled through (and items in the cache)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--amp", default=None, choices=["none", "bf16"], help="default: none on CPU, bf16 on CUDA")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--srp-sizes", default="128,256", help="sizes of the relation-loss share (empty: skip)")
    p.add_argument("--srp-weight", type=float, default=8000.0)
    p.add_argument("--quick", action="store_true", help="smoke test: 32 px, batch 2, 1 round of 1 step, no compile")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except SrpkdError as e:
        print(f"distill_step.py: error: {e}", file=sys.stderr)
        return 2
    if args.size is None:
        args.size = 256 if args.device == "cuda" else 128
    if args.amp is None:
        args.amp = "bf16" if args.device == "cuda" else "none"
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    srp_sizes = [int(s) for s in args.srp_sizes.split(",") if s.strip()]
    if args.quick:
        args.size, args.batch, args.steps, args.rounds, args.warmup, args.n_batches = 32, 2, 1, 1, 0, 1
        variants = [v for v in variants if not VARIANTS.get(v, {}).get("compile")]
        srp_sizes = [32] if srp_sizes else []
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("srpkd").setLevel(logging.ERROR)
    load_before = os.getloadavg()

    rows: list[dict] = []
    share: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="srpkd-bench-") as tmp:
        tmp = Path(tmp)
        cases = []
        for v in variants:
            try:
                cases.append(Case(v, args, tmp))
            except Exception as e:  # noqa: BLE001 - a variant that cannot run here is reported, not fatal
                rows.append({"variant": v, "size": args.size, "batch": args.batch, "error": f"{type(e).__name__}: {e}"})
        ok = []
        for c in cases:
            progress(f"warm-up {c.name}")
            try:
                c.warm(args.warmup if not c.cfg.compile else max(args.warmup, 3))
                ok.append(c)
            except Exception as e:  # noqa: BLE001 - e.g. torch.compile without a working compiler
                first_line = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                rows.append({"variant": c.name, "size": c.size, "batch": c.batch,
                             "error": f"{type(e).__name__}: {first_line}"})
        for i in range(args.rounds):
            progress(f"round {i + 1}/{args.rounds} of {', '.join(c.name for c in ok)}")
            for c in ok:
                c.run_steps(args.steps)
        rows = [c.result() for c in ok] + rows
        del cases, ok
        base = next((r for r in rows if r["variant"] == "scratch" and "error" not in r), None)
        for r in rows:
            if "error" not in r:
                r["ratio_to_scratch"] = round(r["ms_per_image"] / base["ms_per_image"], 3) if base else None
                r["cpu_ratio_to_scratch"] = round(r["cpu_ms_per_step"] / base["cpu_ms_per_step"], 3) if base else None

        for size in srp_sizes:
            progress(f"relation-loss share at {size} px")
            pair = [Case("distill_cached", args, tmp, srp=0.0, size=size),
                    Case("distill_cached", args, tmp, srp=args.srp_weight, size=size)]
            for c in pair:
                c.warm(args.warmup)
            for _ in range(args.rounds):
                for c in pair:
                    c.run_steps(args.steps)
            r0, r1 = pair[0].result(), pair[1].result()
            share.append({
                "variant": "srp_share", "size": size, "batch": args.batch, "srp_weight": args.srp_weight,
                "ms_per_step_srp0": r0["ms_per_step"], "ms_per_step_srp": r1["ms_per_step"],
                "cpu_ms_per_step_srp0": r0["cpu_ms_per_step"], "cpu_ms_per_step_srp": r1["cpu_ms_per_step"],
                "srp_overhead": round(r1["ms_per_step"] / r0["ms_per_step"] - 1, 4),
                "srp_overhead_cpu": round(r1["cpu_ms_per_step"] / r0["cpu_ms_per_step"] - 1, 4),
                "timed_steps": r1["timed_steps"],
            })
            del pair

    info = machine(device, load_before)
    if args.json:
        for r in rows + share + [info]:
            print(json.dumps(r), flush=True)
    else:
        print_table([r for r in rows if "error" not in r], share, info)
        for r in rows:
            if "error" in r:
                print(f"{r['variant']}: failed: {r['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
