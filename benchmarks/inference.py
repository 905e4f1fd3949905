"""Inference latency of the teacher and the students, eager PyTorch and ONNX Runtime, beside their MAC ratio.

    python benchmarks/inference.py [--json] [--size 256] [--threads 2] [--runs 10] [--rounds 3]
                                   [--runtime eager,onnx] [--device cpu|cuda] [--quick]

The same measurement as ``srpkd profile`` (the same functions: the checked export
``srpkd export`` ships, srpkd's one ONNX Runtime session builder with ``--threads``
intra-op threads, batch 1, one constant input, warm-up first), for

- ``teacher``: the real vintagify teacher (ResNet-9, ngf 64, instance norm with affine);
- ``student16``: ResNet-9, ngf 16 (pair 2 of docs/method.md, section 1.1);
- ``mobile16``: the depthwise-separable ResNet-9, ngf 16;

but with the models timed in turns (teacher, student, mobile, teacher, ...) for
``--rounds`` rounds of ``--runs`` runs, so a change in the machine's load hits all
of them alike (one ``srpkd profile`` per model would compare runs minutes apart).
Weights do not change the latency, so the students keep their initial weights.
``--ort-spin off`` turns ONNX Runtime's intra-op spin-waiting off (``srpkd profile``
leaves it on): on a shared machine with more runnable threads than cores, spinning
threads steal the cores, and the small student, with its many short kernels,
loses most (measured in BENCHMARKS.md).

For each student and runtime: ``mac_reduction`` = teacher MACs / student MACs,
``speedup`` = teacher median / student median in the same runtime, and
``efficiency`` = speedup / mac_reduction (the target is >= 0.8 for ONNX Runtime).
The equivalent ``srpkd profile`` command is printed with each row.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch

from srpkd import SrpkdError
from srpkd.assets import resolve_teacher
from srpkd.devices import device_name, resolve_device
from srpkd.export.onnx import build_onnx
from srpkd.metrics.latency import runtime_versions
from srpkd.models import count_macs, count_params, create_generator
from srpkd.runtime import onnx_session

MODELS = {
    "teacher": ("builtin:vintagify", None),
    "student16": ("resnet_9blocks", 16),
    "mobile16": ("mobile_resnet_9blocks", 16),
}


def build(name: str) -> torch.nn.Module:
    arch, ngf = MODELS[name]
    if arch.startswith("builtin:"):
        return resolve_teacher(arch)
    torch.manual_seed(0)
    return create_generator(arch, ngf=ngf)


def profile_command(name: str, args) -> str:
    arch, ngf = MODELS[name]
    what = "--arch resnet_9blocks --ngf 64" if arch.startswith("builtin:") else f"--arch {arch} --ngf {ngf}"
    return (f"srpkd profile {what} --size {args.size} --threads {args.threads} --runtime {args.runtime} "
            f"--device {args.device} --json")


class Runner:
    """One model in one runtime: a callable to time, built as ``srpkd profile`` builds it."""

    def __init__(self, name: str, model: torch.nn.Module, runtime: str, args, device: torch.device):
        self.name, self.runtime = name, runtime
        self.times: list[float] = []
        self.error = None
        self.info: dict = {}
        x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
        try:
            if runtime == "eager":
                self.model = model.eval().to(device)

                def fn():
                    with torch.inference_mode():
                        self.model(x)

                self.fn = fn
            elif runtime == "onnx":
                t0 = time.perf_counter()
                # exported from a CPU copy, as srpkd profile does: the check compares with PyTorch on the CPU
                data, _, _ = build_onnx(copy.deepcopy(model).eval().cpu(), (args.size, args.size))
                self.info["export_s"] = round(time.perf_counter() - t0, 2)
                session = onnx_session(data, threads=args.threads, device=device, spin=args.ort_spin)
                self.info["providers"] = session.get_providers()
                feed = {session.get_inputs()[0].name: x.cpu().numpy()}
                self.fn = lambda: session.run(None, feed)
            else:
                raise ValueError(f"unknown runtime {runtime!r}")
        except Exception as e:  # noqa: BLE001 - reported, like srpkd profile does
            self.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        self.sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def run(self, n: int, record: bool = True) -> None:
        if self.error:
            return
        for _ in range(n):
            self.sync()
            t0 = time.perf_counter()
            self.fn()
            self.sync()
            if record:
                self.times.append(1e3 * (time.perf_counter() - t0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2, help="PyTorch and ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--runtime", default="eager,onnx", help="comma-separated: eager, onnx")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=5, help="timed runs per model per round")
    p.add_argument("--rounds", type=int, default=4, help="rounds of interleaved models")
    p.add_argument("--ort-spin", default="on", choices=["on", "off"],
                   help="ONNX Runtime intra-op spin-waiting (srpkd profile: on). 'off' helps on a machine with "
                        "more runnable threads than cores")
    p.add_argument("--quick", action="store_true", help="smoke test: 64 px, 1 round of 1 run")
    args = p.parse_args(argv)
    args.ort_spin = args.ort_spin == "on"
    if args.quick:
        args.size, args.warmup, args.runs, args.rounds = 64, 0, 1, 1
    try:
        device = resolve_device(args.device)
    except SrpkdError as e:
        print(f"inference.py: error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    runtimes = [r.strip() for r in args.runtime.split(",") if r.strip()]
    models = {n: build(n) for n in names}
    stats = {n: {"params": count_params(m), "macs": count_macs(m, args.size)} for n, m in models.items()}
    runners = [Runner(n, models[n], r, args, device) for r in runtimes for n in names]
    for r in runners:
        r.run(args.warmup, record=False)
    for _ in range(args.rounds):
        for r in runners:
            r.run(args.runs)
    rows = []
    for r in runners:
        row = {"model": r.name, "runtime": r.runtime, "arch": getattr(models[r.name], "arch", "?"),
               "ngf": getattr(models[r.name], "arch_kwargs", {}).get("ngf"), "size": args.size,
               "threads": args.threads, **stats[r.name], "command": profile_command(r.name, args), **r.info}
        if r.error:
            row["error"] = r.error
        else:
            row.update(median_ms=round(statistics.median(r.times), 2), min_ms=round(min(r.times), 2),
                       runs=len(r.times))
        rows.append(row)
    for row in rows:
        t = next((x for x in rows if x["model"] == "teacher" and x["runtime"] == row["runtime"]), None)
        if t is not None and row["model"] != "teacher" and "median_ms" in row and "median_ms" in t:
            row["mac_reduction"] = round(t["macs"] / row["macs"], 2)
            row["speedup"] = round(t["median_ms"] / row["median_ms"], 2)
            row["speedup_min"] = round(t["min_ms"] / row["min_ms"], 2)
            row["efficiency"] = round(row["speedup"] / row["mac_reduction"], 3)
    info = {"machine": True, "device": str(device), "device_name": device_name(device), "cpu_count": os.cpu_count(),
            "threads": args.threads, "versions": runtime_versions(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "ort_spin": args.ort_spin}
    if args.json:
        for row in rows + [info]:
            print(json.dumps(row), flush=True)
        return 0
    print(f"{'model':<11}{'runtime':<8}{'GMACs':>8}{'median ms':>11}{'MAC red.':>10}{'speed-up':>10}{'eff.':>7}")
    for row in rows:
        if "error" in row:
            print(f"{row['model']:<11}{row['runtime']:<8}  failed: {row['error']}")
            continue
        red = f"{row['mac_reduction']:.1f}x" if "mac_reduction" in row else "-"
        sp = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
        eff = f"{row['efficiency']:.2f}" if "efficiency" in row else "-"
        print(f"{row['model']:<11}{row['runtime']:<8}{row['macs'] / 1e9:>8.2f}{row['median_ms']:>11.1f}"
              f"{red:>10}{sp:>10}{eff:>7}")
    print(f"\n{info['device']} ({info['device_name']}), {args.threads} threads, {args.size} px, batch 1; "
          f"torch {info['versions']['torch']}, onnxruntime {info['versions'].get('onnxruntime')}; "
          f"load average {info['load_avg_before']} -> {info['load_avg_after']}, {info['date']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
