"""Latency profiling of a generator at batch 1: PyTorch eager, torch.compile, ONNX Runtime.

Each runtime is warmed up, then timed over ``runs`` forward passes of one
constant random input; the median and 90th percentile are reported in
milliseconds (on CUDA every pass is synchronised, and the peak memory of the
timed passes is reported). A runtime that cannot run here (no compiler for
torch.compile, an export failure, a missing provider) is reported as failed
with its reason; it never stops the others.

ONNX Runtime times the model ``srpkd export`` ships: the same exporter
(:func:`srpkd.export.onnx.build_onnx`: dynamic axes, opset 18, checked
against PyTorch to 1e-4 before it is used) and the same session builder
(:func:`srpkd.runtime.onnx_session`). If that export fails, the runtime is
reported as failed; there is no other exporter to fall back on.
"""
from __future__ import annotations

import copy
import platform
import statistics
import time
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from ..data.images import check_pixels
from ..devices import device_name, resolve_device
from ..errors import SrpkdError, first_line
from ..export.onnx import DEFAULT_OPSET, build_onnx
from ..models import count_macs, count_params
from ..models.sizes import check_min_size
from ..runtime import onnx_session

RUNTIMES = ("eager", "compile", "onnx")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(times_ms: list[float]) -> dict:
    return {
        "median_ms": statistics.median(times_ms),
        "p90_ms": percentile(times_ms, 90),
        "mean_ms": statistics.fmean(times_ms),
        "min_ms": min(times_ms),
        "runs": len(times_ms),
    }


def time_callable(
    fn: Callable[[], object], warmup: int, runs: int, sync: Callable[[], None] | None = None
) -> list[float]:
    """Call ``fn`` ``warmup`` times, then time ``runs`` calls; milliseconds per call."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _reason(e: BaseException) -> str:
    """One line: an SrpkdError's own message, anything else prefixed with its type."""
    if isinstance(e, SrpkdError):
        return first_line(e)[:300]
    text = str(e).strip()
    return f"{type(e).__name__}: {first_line(e)[:300]}" if text else type(e).__name__


def profile_runtime(
    model: nn.Module, runtime: str, size: int, device: torch.device, threads: int, warmup: int, runs: int
) -> dict:
    """Latency of one runtime; ``{"ok": False, "error": ...}`` when it cannot run."""
    if runtime not in RUNTIMES:
        raise SrpkdError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else None
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    out: dict = {"ok": False}
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        if runtime == "eager":
            with torch.inference_mode():
                times = time_callable(lambda: model(x), warmup, runs, sync)
        elif runtime == "compile":
            compiled = torch.compile(model)
            t0 = time.perf_counter()
            with torch.inference_mode():
                compiled(x)
                if sync:
                    sync()
                out["compile_s"] = time.perf_counter() - t0
                times = time_callable(lambda: compiled(x), warmup, runs, sync)
        else:  # onnx
            t0 = time.perf_counter()
            data, diff, _ = build_onnx(_on_cpu(model), (size, size))
            out["export_s"] = time.perf_counter() - t0
            out["export"] = {"opset": DEFAULT_OPSET, "dynamic": True, "max_abs_diff": diff}
            session = onnx_session(data, threads=threads, device=device)
            name = session.get_inputs()[0].name
            if cuda:  # bind the input on the GPU so the timing excludes host copies, like eager
                binding = session.io_binding()
                xc = x.contiguous()
                binding.bind_input(name, "cuda", device.index or 0, _np_dtype(xc), tuple(xc.shape), xc.data_ptr())
                binding.bind_output(session.get_outputs()[0].name, "cuda")
                times = time_callable(lambda: session.run_with_iobinding(binding), warmup, runs, sync)
            else:
                feed = {name: x.cpu().numpy()}
                times = time_callable(lambda: session.run(None, feed), warmup, runs)
            out["providers"] = session.get_providers()
            out["version"] = ort.__version__
    except Exception as e:  # noqa: BLE001 - a runtime failing (its export included) is a result, not a crash
        out["error"] = _reason(e)
        return out
    out.update(ok=True, **summarize(times))
    if cuda:
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _on_cpu(model: nn.Module) -> nn.Module:
    """``model`` itself on the CPU, else a CPU copy: the export's parity check runs ONNX Runtime on the
    CPU against PyTorch, which must not be a GPU's (TF32 convolutions differ by more than 1e-4)."""
    if all(p.device.type == "cpu" for p in model.parameters()):
        return model
    return copy.deepcopy(model).cpu()


def _np_dtype(t: torch.Tensor):
    return {torch.float32: np.float32, torch.float16: np.float16}[t.dtype]


def profile_model(
    model: nn.Module,
    *,
    size: int = 256,
    runtimes: tuple[str, ...] | list[str] = ("eager",),
    device: str | torch.device = "cpu",
    threads: int = 0,
    warmup: int = 5,
    runs: int = 20,
    source: str | None = None,
) -> dict:
    """Parameters, MACs and per-runtime latency of a generator at batch 1."""
    device = resolve_device(device)
    multiple = getattr(model, "size_multiple", 4)
    if size <= 0 or size % multiple:
        raise SrpkdError(f"--size must be a positive multiple of {multiple}, got {size}")
    check_pixels(size, size)
    check_min_size(model, size, size)
    if warmup < 0 or runs < 1:
        raise SrpkdError("--warmup must be >= 0 and --runs >= 1")
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise SrpkdError(f"unknown runtime(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}")
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = model.eval()
        info = {
            "format": 1,
            "source": source,
            "arch": getattr(model, "arch", type(model).__name__),
            "kwargs": getattr(model, "arch_kwargs", {}),
            "params": count_params(model),
            "macs": count_macs(model, size),
            "size": size,
            "batch": 1,
            "device": str(device),
            "device_name": device_name(device),
            "threads": torch.get_num_threads() if device.type == "cpu" else threads or None,
            "warmup": warmup,
            "runs": runs,
            "versions": runtime_versions(),
            "runtimes": {},
        }
        model = model.to(device)
        for runtime in runtimes:
            info["runtimes"][runtime] = profile_runtime(
                model, runtime, size, device, threads or torch.get_num_threads(), warmup, runs
            )
        return info
    finally:
        torch.set_num_threads(previous_threads)


RUNTIME_NAMES = {"eager": "PyTorch eager", "compile": "torch.compile", "onnx": "ONNX Runtime"}


def median_ms(profile: dict | None) -> dict[str, float]:
    """Runtime -> median latency in ms of a :func:`profile_model` record (runtimes that ran; {} for none)."""
    runtimes = profile.get("runtimes") if isinstance(profile, dict) else None
    if not isinstance(runtimes, dict):
        return {}
    return {name: float(r["median_ms"]) for name, r in runtimes.items()
            if isinstance(r, dict) and r.get("ok") and isinstance(r.get("median_ms"), (int, float))}


def where(profile: dict) -> str:
    """Where a profile ran, e.g. ``cpu, 2 threads, batch 1, 128 px``."""
    threads = profile.get("threads")
    parts = [str(profile.get("device", "?"))] + ([f"{threads} thread{'s' * (threads != 1)}"] if threads else [])
    return ", ".join(parts + [f"batch {profile.get('batch', 1)}", f"{profile.get('size', '?')} px"])


def runtime_versions() -> dict:
    """Versions of Python, PyTorch, ONNX Runtime (and CUDA) that a latency depends on."""
    v = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__}
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda
    return v
