"""``srpkd import``: convert a pytorch-CycleGAN-and-pix2pix (or vintagify) generator to a srpkd checkpoint."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..assets import PACKAGES, vintagify_teacher_path
from ..checkpoint import save_generator
from ..errors import SrpkdError
from ..files import refuse_to_replace
from ..models import count_params
from ..models.convert import import_generator
from .options import finite_float


def register(sub) -> None:
    p = sub.add_parser(
        "import",
        help="convert a foreign generator .pth into a srpkd checkpoint",
        description="Convert a generator state_dict saved by pytorch-CycleGAN-and-pix2pix (ResnetGenerator, "
        "UnetGenerator) or the vintagify teacher into a srpkd .safetensors checkpoint. The architecture, "
        "width and norm are read from the tensors unless given. The file is read with "
        "torch.load(weights_only=True): a pickle that holds code is refused, never run.",
    )
    p.add_argument("src", help="foreign weights (.pth), or builtin:vintagify for the installed vintagify teacher")
    p.add_argument("dst", help="output srpkd checkpoint (.safetensors)")
    p.add_argument("--arch", help="srpkd architecture (default: inferred, e.g. resnet_9blocks, unet_256)")
    p.add_argument("--ngf", type=int, help="generator width (default: inferred)")
    p.add_argument("--norm", choices=["instance", "instance_affine", "batch", "none"], help="norm (default: inferred)")
    p.add_argument("--dropout", type=finite_float,
                   help="dropout of the rebuilt generator (U-Net dropout is not in the file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.ngf is not None and args.ngf <= 0:
        raise SrpkdError(f"--ngf must be positive, got {args.ngf}")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise SrpkdError(f"--dropout must be in [0, 1), got {args.dropout}")
    dst = Path(args.dst)
    if dst.suffix != ".safetensors":
        raise SrpkdError(f"the output must end in .safetensors, got {dst}")
    refuse_to_replace(dst, args.overwrite)
    if args.src == "builtin:vintagify":
        src = vintagify_teacher_path()
        origin = f"vintagify=={PACKAGES['vintagify'][1]}:{src.name}"
    elif args.src.startswith("builtin:"):
        raise SrpkdError(f"unknown builtin generator {args.src!r}; available: builtin:vintagify")
    else:
        src = Path(args.src)
        origin = str(src.resolve())
    model = import_generator(src, args.arch, ngf=args.ngf, norm=args.norm, dropout=args.dropout)
    sha256 = hashlib.sha256(src.read_bytes()).hexdigest()
    save_generator(model, dst, imported_from=origin, imported_sha256=sha256)
    print(f"{src} -> {dst}: {model.arch} {model.arch_kwargs}, {count_params(model):,} parameters")
    return 0
