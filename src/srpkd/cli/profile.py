"""``srpkd profile``: parameters, MACs and batch-1 latency per runtime."""
from __future__ import annotations

import json

from ..checkpoint import load_generator
from ..errors import SrpkdError
from ..files import refuse_to_replace, write_json
from ..metrics.latency import profile_model
from ..models import create_generator


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="parameters, MACs and latency (eager, torch.compile, ONNX Runtime) of a generator",
        description="Latency at batch 1: warm-up runs, then the median and 90th percentile of timed runs per runtime.",
    )
    p.add_argument("checkpoint", nargs="?", help="a srpkd .safetensors generator or run folder")
    p.add_argument("--arch", help="architecture name instead of a checkpoint (random weights)")
    p.add_argument("--ngf", type=int, default=64, help="generator width (with --arch)")
    p.add_argument("--norm", default="instance", help="normalisation (with --arch)")
    p.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    p.add_argument("--runtime", default="eager,onnx", help="comma-separated: eager, compile, onnx (default eager,onnx)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch and ONNX Runtime (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--runs", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("-o", "--out", help="also write the JSON result to this file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.checkpoint and args.arch:
        raise SrpkdError("give either a checkpoint or --arch, not both")
    if args.threads < 0:
        raise SrpkdError("--threads must be >= 0")
    if args.out:
        refuse_to_replace(args.out, args.overwrite)
    if args.checkpoint:
        model, source = load_generator(args.checkpoint), str(args.checkpoint)
    elif args.arch:
        model = create_generator(args.arch, ngf=args.ngf, norm=args.norm)
        source = f"--arch {args.arch} --ngf {args.ngf}"
    else:
        raise SrpkdError("give a checkpoint or --arch NAME (srpkd info --list shows the names)")
    runtimes = [r.strip() for r in args.runtime.split(",") if r.strip()]
    result = profile_model(model, size=args.size, runtimes=runtimes, device=args.device, threads=args.threads,
                           warmup=args.warmup, runs=args.runs, source=source)
    if args.out:
        write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0


def format_table(r: dict) -> str:
    v = r["versions"]
    lines = [
        f"{r['source']}: {r['arch']} {r['kwargs']}",
        f"params {r['params'] / 1e6:.2f} M   MACs {r['macs'] / 1e9:.2f} G at {r['size']}x{r['size']}, batch 1",
        f"device {r['device']} ({r['device_name']}), threads {r['threads']}; "
        f"torch {v['torch']}, onnxruntime {v.get('onnxruntime')}; {r['warmup']} warm-up + {r['runs']} timed runs",
        f"  {'runtime':<9}{'median ms':>11}{'p90 ms':>10}{'min ms':>10}",
    ]
    for name, t in r["runtimes"].items():
        if t.get("ok"):
            extra = f"   peak {t['peak_memory_mb']:.0f} MiB" if "peak_memory_mb" in t else ""
            if "export" in t:
                extra += f"   (the srpkd export, matches PyTorch to {t['export']['max_abs_diff']:.0e})"
            lines.append(f"  {name:<9}{t['median_ms']:>11.2f}{t['p90_ms']:>10.2f}{t['min_ms']:>10.2f}{extra}")
        else:
            lines.append(f"  {name:<9}  failed: {t['error']}")
    return "\n".join(lines)
