"""``srpkd info``: parameters and MACs of an architecture or a checkpoint."""
from __future__ import annotations

import json

from ..checkpoint import load_generator
from ..data.images import check_pixels
from ..errors import SrpkdError
from ..models import count_macs, count_params, create_generator, list_models
from ..models.sizes import check_min_size


def register(sub) -> None:
    p = sub.add_parser("info", help="parameters and MACs of an architecture or a checkpoint")
    p.add_argument("checkpoint", nargs="?", help="a srpkd .safetensors checkpoint or run folder")
    p.add_argument("--arch", help="architecture name (see --list)")
    p.add_argument("--ngf", type=int, default=64, help="generator width (with --arch)")
    p.add_argument("--norm", default="instance", help="instance, instance_affine, batch or none (with --arch)")
    p.add_argument("--size", type=int, default=256, help="input height and width for the MAC count")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--list", action="store_true", help="list the registered architectures")
    p.set_defaults(func=run)


def describe(model, size: int) -> dict:
    if size <= 0 or size % model.size_multiple:
        raise SrpkdError(f"--size must be a positive multiple of {model.size_multiple} for {model.arch}, got {size}")
    check_pixels(size, size)
    check_min_size(model, size, size)
    return {
        "arch": model.arch,
        "kwargs": model.arch_kwargs,
        "params": count_params(model),
        "macs": count_macs(model, size),
        "size": size,
        "taps": model.tap_names,
    }


def run(args) -> int:
    if args.list:
        print("generators:     " + ", ".join(list_models("generator")))
        print("discriminators: " + ", ".join(list_models("discriminator")))
        return 0
    if args.checkpoint and args.arch:
        raise SrpkdError("give either a checkpoint or --arch, not both")
    if args.checkpoint:
        model = load_generator(args.checkpoint)
    elif args.arch:
        model = create_generator(args.arch, ngf=args.ngf, norm=args.norm)
    else:
        raise SrpkdError("give a checkpoint or --arch NAME (srpkd info --list shows the names)")
    info = describe(model, args.size)
    if args.json:
        print(json.dumps(info))
    else:
        print(f"arch    {info['arch']}  {info['kwargs']}")
        print(f"params  {info['params'] / 1e6:.2f} M ({info['params']:,})")
        print(f"MACs    {info['macs'] / 1e9:.2f} G at {args.size}x{args.size}")
        print(f"taps    {', '.join(info['taps'])}")
    return 0
