"""Time and memory of semantic_relation_loss, dense (HW x HW matrices) vs factorized.

    python benchmarks/relation_loss.py [--json] [--threads N] [--device cpu|cuda]

Each case is batch 1, teacher features (1, 256, H, W) after a ReLU and
detached (as in training), student features (1, 64, H, W) that require grad,
H = W = sqrt(HW). Measured for each method:

- time: forward + backward, median of ``--repeats`` runs after one warm-up
  (on CUDA with a synchronize before reading the clock), plus the mean
  process CPU time per run (``*_cpu_ms``, all threads) and the 1-minute load
  average at the start of the case, because on a shared machine the wall time
  depends on what else runs (with more runnable threads than cores, OpenMP's
  default spin-waiting makes every small op slow: try OMP_WAIT_POLICY=PASSIVE);
- peak memory: the most bytes the torch allocator held during one forward +
  backward beyond what was held before it (inputs excluded, the gradient
  included). On CPU it is the running total of the allocation and free events
  that ``torch.profiler`` records with ``profile_memory=True``, in time order;
  on CUDA it is ``torch.cuda.max_memory_allocated`` after a reset. Buffers a
  BLAS library allocates on its own are not seen by either;
- max_rel_err: the larger of |L_f - L_d| / |L_d| and
  max|dL_f/dF_s - dL_d/dF_s| / max|dL_d/dF_s|, from one more run of each
  method on float64 copies of the inputs (both methods compute in float64;
  with the float32 inputs of the timed runs the results are rounded to
  float32, and that error is reported as max_rel_err_fp32).

The dense method is skipped when its estimated peak, 6 float64 (HW)^2
matrices (the measured ratio at HW 4096), exceeds ``--dense-budget-gib``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from srpkd import SrpkdError
from srpkd.devices import resolve_device
from srpkd.losses import semantic_relation_loss

DENSE_MATRICES = 6  # float64 HW x HW buffers alive at the dense method's peak


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(ft: torch.Tensor, fs: torch.Tensor, method: str) -> torch.Tensor:
    fs.grad = None
    loss = semantic_relation_loss(ft, fs, method)
    loss.backward()
    return loss.detach()


def peak_bytes(fn, device: torch.device) -> int:
    """Peak bytes allocated by torch during ``fn()`` beyond those held before it."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()  # negative for a free
        peak = max(peak, held)
    return peak


def measure(ft, fs, method: str, repeats: int, device: torch.device) -> dict:
    step(ft, fs, method)  # warm-up
    times = []
    cpu0 = time.process_time()
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        loss = step(ft, fs, method)
        sync(device)
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / repeats
    grad, fs.grad = fs.grad.clone(), None
    peak = peak_bytes(lambda: step(ft, fs, method), device)
    return {"ms": 1e3 * statistics.median(times), "cpu_ms": 1e3 * cpu, "peak_mb": peak / 2**20,
            "loss": loss, "grad": grad}


def run_case(hw: int, c_t: int, c_s: int, args, device: torch.device) -> dict:
    side = math.isqrt(hw)
    assert side * side == hw, f"HW {hw} is not a square"
    gen = torch.Generator().manual_seed(hw)
    ft = torch.randn(1, c_t, side, side, generator=gen).relu().to(device)
    fs = torch.randn(1, c_s, side, side, generator=gen).to(device).requires_grad_()
    row = {"hw": hw, "c_t": c_t, "c_s": c_s, "device": str(device), "threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
           "load_avg_1min": round(os.getloadavg()[0], 2)}
    fact = measure(ft, fs, "factorized", args.repeats, device)
    dense_gib = DENSE_MATRICES * hw**2 * 8 / 2**30
    if dense_gib > args.dense_budget_gib:
        dense = None
        row["dense_note"] = f"skipped: needs {dense_gib:.1f} GiB (budget {args.dense_budget_gib:g} GiB)"
    else:
        dense = measure(ft, fs, "dense", args.dense_repeats, device)
    row.update(
        dense_ms=round(dense["ms"], 2) if dense else None,
        factorized_ms=round(fact["ms"], 2),
        dense_peak_mb=round(dense["peak_mb"], 2) if dense else None,
        factorized_peak_mb=round(fact["peak_mb"], 2),
        dense_cpu_ms=round(dense["cpu_ms"], 2) if dense else None,
        factorized_cpu_ms=round(fact["cpu_ms"], 2),
    )
    if dense:
        row["max_rel_err"] = rel_err(*(float64_run(ft, fs, m) for m in ("factorized", "dense")))
        row["max_rel_err_fp32"] = rel_err((fact["loss"], fact["grad"]), (dense["loss"], dense["grad"]))
    else:
        row["max_rel_err"] = row["max_rel_err_fp32"] = None
    return row


def float64_run(ft: torch.Tensor, fs: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    fs = fs.detach().double().requires_grad_()
    loss = step(ft.double(), fs, method)
    return loss, fs.grad


def rel_err(fact: tuple[torch.Tensor, torch.Tensor], dense: tuple[torch.Tensor, torch.Tensor]) -> float:
    """max(|L_f - L_d| / |L_d|, max|g_f - g_d| / max|g_d|)."""
    value = ((fact[0] - dense[0]).abs() / dense[0].abs()).item()
    grad = ((fact[1] - dense[1]).abs().max() / dense[1].abs().max()).item()
    return float(f"{max(value, grad):.3g}")


def print_table(rows: list[dict]) -> None:
    head = ["HW", "C_t/C_s", "dense ms", "fact ms", "speed-up", "dense MiB", "fact MiB", "mem ratio", "max rel err",
            "fact CPU ms", "load"]
    print(" | ".join(head))
    print(" | ".join("-" * len(h) for h in head))
    for r in rows:
        d = r["dense_ms"] is not None
        cells = [
            str(r["hw"]),
            f"{r['c_t']}/{r['c_s']}",
            f"{r['dense_ms']:.1f}" if d else r["dense_note"],
            f"{r['factorized_ms']:.1f}",
            f"{r['dense_ms'] / r['factorized_ms']:.0f}x" if d else "-",
            f"{r['dense_peak_mb']:.1f}" if d else "-",
            f"{r['factorized_peak_mb']:.2f}",
            f"1/{r['dense_peak_mb'] / r['factorized_peak_mb']:.0f}" if d else "-",
            f"{r['max_rel_err']:.1e}" if d else "-",
            f"{r['factorized_cpu_ms']:.1f}",
            f"{r['load_avg_1min']:.1f}",
        ]
        print(" | ".join(cells))
    r = rows[0]
    print(
        f"\ndevice {r['device']}, {r['threads']} threads, OMP_WAIT_POLICY {r['omp_wait_policy']}, "
        f"torch {torch.__version__}; batch 1, teacher detached; load = 1-minute load average"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--hw", type=int, nargs="+", default=[1024, 4096, 16384, 65536], help="pixel counts (squares)")
    p.add_argument("--c-t", type=int, default=256)
    p.add_argument("--c-s", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the factorized method")
    p.add_argument("--dense-repeats", type=int, default=3, help="timed runs of the dense method")
    p.add_argument("--dense-budget-gib", type=float, default=8.0, help="skip dense above this estimated peak")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except SrpkdError as e:
        print(f"relation_loss.py: error: {e}", file=sys.stderr)
        return 2
    rows = []
    for hw in args.hw:
        row = run_case(hw, args.c_t, args.c_s, args, device)
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
