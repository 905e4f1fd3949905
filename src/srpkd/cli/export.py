"""``srpkd export``: a generator checkpoint to ONNX or TorchScript, checked against PyTorch."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..checkpoint import load_generator
from ..errors import SrpkdError
from ..export import FORMATS, export_model
from ..export.onnx import DEFAULT_OPSET
from .options import finite_float


def parse_size(text: str) -> tuple[int, int]:
    """``256`` -> (256, 256); ``256x512`` -> (256, 512) as height x width."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected S or HxW, got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a generator to ONNX or TorchScript (checked against PyTorch before it is written)",
        description="Export a generator checkpoint. The export is reloaded in its runtime and compared with "
        "PyTorch on random inputs before anything is written; if it differs by more than --atol, no file is written.",
    )
    p.add_argument("checkpoint", help="a srpkd generator .safetensors file or run folder")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default: onnx")
    p.add_argument("-o", "--output", help="output file (default: the checkpoint's name with .onnx / .torchscript)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 18 or newer (default: 18)")
    shapes = p.add_mutually_exclusive_group()
    shapes.add_argument(
        "--dynamic", dest="dynamic", action="store_true", default=True, help="free batch, height and width (default)"
    )
    shapes.add_argument(
        "--static", dest="dynamic", action="store_false", help="ONNX only: fixed input of 1 x 3 x --size"
    )
    p.add_argument(
        "--size", type=parse_size, default=(256, 256), metavar="S|HxW",
        help="traced and checked input size; the only size with --static (default: 256)",
    )
    p.add_argument("--atol", type=finite_float, default=1e-4,
                   help="largest allowed abs difference to PyTorch (default: 1e-4)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def default_output(checkpoint: str, fmt: str):
    path = Path(checkpoint)
    return path / f"generator{FORMATS[fmt]}" if path.is_dir() else path.with_suffix(FORMATS[fmt])


def run(args) -> int:
    if args.format == "torchscript" and not args.dynamic:
        raise SrpkdError("--static applies to ONNX only (a TorchScript trace takes any size)")
    if args.format == "torchscript" and args.opset is not None:
        raise SrpkdError("--opset applies to ONNX only")
    if args.atol <= 0:
        raise SrpkdError(f"--atol must be positive, got {args.atol:g}")
    output = args.output or default_output(args.checkpoint, args.format)
    model = load_generator(args.checkpoint)
    options = dict(size=args.size, atol=args.atol, overwrite=args.overwrite)
    if args.format == "onnx":
        options.update(dynamic=args.dynamic, opset=args.opset or DEFAULT_OPSET)
    report = export_model(model, output, args.format, **options)
    print(report.summary())
    return 0
