"""``srpkd relmap``: the teacher's and the student's semantic relation rows for query pixels of an image."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from .. import run_folder
from ..assets import resolve_teacher
from ..checkpoint import load_generator
from ..config import load_config
from ..data.images import load_image, to_tensor
from ..errors import SrpkdError
from ..relmap import check_pixels, default_pixels, fit_size, parse_pixel, relation_maps, render, write_png


def register(sub) -> None:
    p = sub.add_parser(
        "relmap",
        help="relation maps: the teacher's and the student's relation rows for query pixels of an image (PNG)",
        description=(
            "For each query pixel of IMAGE, draw the row of the semantic relation matrix (how much every pixel's "
            "features resemble the query pixel's) of the teacher and of the student side by side, with the "
            "pixel's term of the relation loss. RUN is a run folder (its config names the teacher, the tap and "
            "the size) or a srpkd generator checkpoint (then give --teacher)."
        ),
    )
    p.add_argument("run", help="run folder, or srpkd .safetensors student checkpoint")
    p.add_argument("image", help="the image (any size: it is scaled to --size, aspect ratio kept)")
    p.add_argument("--pixels", nargs="+", type=parse_pixel, metavar="X,Y",
                   help="query pixels in IMAGE's coordinates (default: the centre and two off-centre points)")
    p.add_argument("--tap", help="feature tap (default: the run's first loss.srp_taps, else encoder)")
    p.add_argument("--teacher", help="teacher checkpoint, run folder or builtin:vintagify (default: the run's)")
    p.add_argument("--size", type=int, help="longer side the image is scaled to (default: the run's crop size, 256)")
    p.add_argument("-o", "--out", required=True, help="output PNG")
    p.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise SrpkdError(f"{out}: a relation map is a PNG file; name it .png")
    if args.size is not None and args.size < 1:
        raise SrpkdError(f"--size must be positive, got {args.size}")
    target = Path(args.run)
    if not target.exists():
        raise SrpkdError(f"not found: {target}")
    cfg = load_config(target / run_folder.CONFIG) if (target / run_folder.CONFIG).is_file() else None
    teacher_spec = args.teacher or (cfg.teacher.checkpoint if cfg else None)
    if not teacher_spec:
        raise SrpkdError(f"{target} names no teacher: give --teacher CKPT (or builtin:vintagify)")
    picture = load_image(args.image)
    pixels = args.pixels or default_pixels(*picture.size)
    check_pixels(pixels, *picture.size, args.image)
    student, teacher = load_generator(target), resolve_teacher(teacher_spec)
    tap = args.tap or (cfg.loss.srp_taps[0] if cfg and cfg.loss.srp_taps else "encoder")
    size = args.size or (cfg.data.crop_size if cfg else 256)
    multiple = max(getattr(m, "size_multiple", 1) for m in (student, teacher))
    w, h = fit_size(*picture.size, size, multiple)
    scaled = [(x * w // picture.width, y * h // picture.height) for x, y in pixels]
    maps = relation_maps(teacher, student, to_tensor(picture.resize((w, h), Image.BICUBIC)), scaled, tap,
                         labels=[f"({x}, {y})" for x, y in pixels])
    title = (f"{Path(args.image).name} at {w}x{h}: relation rows at tap '{tap}', "
             f"teacher {teacher_spec} vs student {target}")
    write_png(render(maps, title), out)
    for (x, y), d in zip(pixels, maps.distances.tolist()):
        print(f"pixel {x},{y}: ||R_t - R_s||^2 = {d:.4f}")
    print(f"wrote {out}")
    return 0
