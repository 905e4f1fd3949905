"""``srpkd translate``: run a generator over an image or a folder of images.

Sizes. By default (``--keep-size``) every image keeps its size: sizes the
network cannot take are padded by reflection to the next multiple of its size
multiple and cropped back. ``--size S`` first resizes every image to S x S
(bicubic, as pix2pix does at test time, ignoring the aspect ratio) and writes
S x S outputs (``--size HxW``: H x W).

Files. A folder is searched recursively; outputs keep the relative path and
the file name. JPEG inputs give JPEG outputs, everything else PNG, unless
``--ext`` says otherwise. Existing outputs are refused up front unless
``--overwrite`` (replace them) or ``--skip-existing`` (keep them and translate
the rest: how an interrupted folder is continued; every output is written
atomically, so one that exists is whole, and the temporary files of a killed
run are removed first). Outputs never leave the output folder (a symlinked
sub-folder pointing elsewhere is refused). An unreadable image is reported on
stderr, skipped, and makes the command fail at the end ("N of M images
failed"); the others are still written. An output that cannot be written (a
full disk) stops the command at once, with what was written kept. Images of
equal (padded) size are batched together.

Mode. Generators run in eval mode unless ``--train-mode``, which runs them as
pytorch-CycleGAN-and-pix2pix's test.py does without ``--eval`` (BatchNorm by
each image's own statistics, dropout on; :mod:`srpkd.models.modes`).
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..data.images import check_pixels, list_images, load_image, save_image, shown_size
from ..devices import resolve_device
from ..errors import SrpkdError
from ..files import remove_stale_temps
from ..inference import load_runner, padded_size, run_batch
from .export import parse_size

OUTPUT_SUFFIXES = {"png": ".png", "jpg": ".jpg"}


def register(sub) -> None:
    p = sub.add_parser(
        "translate",
        help="translate an image or a folder of images with a generator",
        description="Translate images with a srpkd checkpoint, run folder, or exported .onnx / .torchscript file.",
    )
    p.add_argument("model", help="srpkd .safetensors checkpoint, run folder, .onnx or .torchscript file")
    p.add_argument("input", help="an image, or a folder of images (searched recursively)")
    p.add_argument("output", help="output image (for an input image) or folder")
    p.add_argument("--batch", type=int, default=1, help="images per network call (default: 1)")
    sizes = p.add_mutually_exclusive_group()
    sizes.add_argument(
        "--size",
        type=parse_size,
        metavar="S|HxW",
        help="resize every image to S x S (or H x W); outputs have that size",
    )
    sizes.add_argument(
        "--keep-size", dest="size", action="store_const", const=None, help="keep each image's size (default)"
    )
    p.add_argument(
        "--runtime", choices=["torch", "onnx"], help="default: onnx for .onnx files, torch for everything else"
    )
    p.add_argument(
        "--ext", choices=sorted(OUTPUT_SUFFIXES), help="output format (default: jpg for JPEG inputs, else png)"
    )
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing output files")
    existing.add_argument("--skip-existing", action="store_true",
                          help="keep existing output files and translate only the missing ones "
                               "(continues an interrupted run)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch / ONNX Runtime (default: theirs)")
    p.add_argument("--device", help="PyTorch device for checkpoints and TorchScript, e.g. cuda (default: cpu)")
    add_train_mode_arguments(p)
    p.set_defaults(func=run)


def add_train_mode_arguments(p) -> None:
    """--train-mode and --seed, shared by translate and eval (docs/metrics.md, "Train-mode evaluation")."""
    p.add_argument(
        "--train-mode", action="store_true",
        help="run the generator as pytorch-CycleGAN-and-pix2pix's test.py does without --eval: BatchNorm uses "
             "each image's own statistics, dropout stays on (to reproduce results made that way)",
    )
    p.add_argument("--seed", type=int, default=0, help="with --train-mode: the seed of the dropout masks (default 0)")


def output_name(src: Path, ext: str | None) -> str:
    if ext:
        return src.stem + OUTPUT_SUFFIXES[ext]
    return src.name if src.suffix.lower() in (".jpg", ".jpeg", ".png") else src.stem + ".png"


def plan(input_path: Path, output_path: Path, ext: str | None) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; clear errors for everything that can be known before any work."""
    if input_path.is_dir():
        if output_path.is_file():
            raise SrpkdError(f"{output_path} is a file; the output of a folder must be a folder")
        # an output folder inside the input folder must not feed earlier outputs back in
        out = output_path.resolve()
        sources = [s for s in list_images(input_path, recursive=True) if not s.resolve().is_relative_to(out)]
        if not sources:
            raise SrpkdError(f"no images in {input_path} outside the output folder {output_path}")
        jobs = [(s, output_path / s.relative_to(input_path).parent / output_name(s, ext)) for s in sources]
    elif input_path.is_file():
        if output_path.is_dir():
            dst = output_path / output_name(input_path, ext)
        else:
            dst = output_path.with_suffix(OUTPUT_SUFFIXES[ext]) if ext else output_path
            if dst.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                raise SrpkdError(f"cannot tell the output format of {dst}: name it .png or .jpg")
        jobs = [(input_path, dst)]
    else:
        raise SrpkdError(f"input not found: {input_path}")
    if input_path.is_dir():
        out = output_path.resolve()
        for src, dst in jobs:
            if not dst.resolve().is_relative_to(out):  # a symlinked folder (or file) inside the output folder
                raise SrpkdError(f"{dst} leads outside the output folder {output_path} (to {dst.resolve()}); "
                                 "refusing to write there")
    seen: dict[Path, Path] = {}
    for src, dst in jobs:
        if dst in seen:
            raise SrpkdError(f"{seen[dst]} and {src} would both be written to {dst}; choose one with --ext or rename")
        seen[dst] = src
        if dst.resolve() == src.resolve():
            raise SrpkdError(f"the output {dst} is the input itself; choose another output")
    return jobs


def refuse_existing(jobs: list[tuple[Path, Path]]) -> None:
    existing = [dst for _, dst in jobs if dst.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise SrpkdError(f"{existing[0]} exists{more}; use --overwrite to replace")


def group_by_size(jobs, size: tuple[int, int] | None, multiple: int,
                  minimum: int = 1) -> dict[tuple[int, int], list[tuple[Path, Path]]]:
    """Jobs keyed by the padded size the network will see, from image headers only (no decoding)."""
    groups: dict[tuple[int, int], list[tuple[Path, Path]]] = defaultdict(list)
    for src, dst in jobs:
        if size is not None:
            hw = size
        else:
            try:
                with Image.open(src) as img:
                    hw = shown_size(img)[::-1]
            except Exception:  # the full read later names the problem
                hw = (0, 0)
        groups[padded_size(*hw, multiple, minimum)].append((src, dst))
    return groups


class WriteFailed(SrpkdError):
    """An output could not be written: the output location's problem, not the image's; the command stops."""


def translate_batch(runner, batch: list[tuple[Path, Path]], size: tuple[int, int] | None, done, fail) -> None:
    """Read, translate and write one batch; ``fail(message)`` for each image that cannot be read,
    :class:`WriteFailed` for an output that cannot be written."""
    loaded = []
    for src, dst in batch:
        try:
            img = load_image(src)
        except SrpkdError as e:
            fail(str(e))
            continue
        loaded.append((img.resize(size[::-1], Image.BICUBIC) if size else img, dst))
    # Headers can disagree with the decoded image; keep every network call to one size anyway.
    by_size: dict[tuple[int, int], list[tuple]] = defaultdict(list)
    for img, dst in loaded:
        by_size[padded_size(img.height, img.width, runner.size_multiple, runner.min_size)].append((img, dst))
    for items in by_size.values():
        for out, (_, dst) in zip(run_batch(runner, [img for img, _ in items]), items):
            try:
                save_image(out, dst)
            except SrpkdError as e:
                raise WriteFailed(str(e)) from None
            done()


def run(args) -> int:
    if args.batch < 1:
        raise SrpkdError(f"--batch must be at least 1, got {args.batch}")
    if args.size is not None:
        check_pixels(*args.size)
    if args.threads is not None and args.threads < 1:
        raise SrpkdError(f"--threads must be at least 1, got {args.threads}")
    device = resolve_device(args.device) if args.device else None
    jobs = plan(Path(args.input), Path(args.output), args.ext)
    kept = 0
    if args.skip_existing:
        for folder in {dst.parent for _, dst in jobs}:
            remove_stale_temps(folder)  # what a killed run left mid-write
        todo = [(src, dst) for src, dst in jobs if not dst.exists()]
        kept, jobs = len(jobs) - len(todo), todo
        if not jobs:
            print(f"all {kept} outputs exist in {args.output}; nothing to translate")
            return 0
    elif not args.overwrite:
        refuse_existing(jobs)

    if args.threads:
        torch.set_num_threads(args.threads)
    runner = load_runner(args.model, args.runtime, args.threads, device, mode="train" if args.train_mode else "eval",
                         seed=args.seed)
    fixed = runner.fixed_shape
    if fixed is not None and args.size != tuple(fixed[2:]):
        raise SrpkdError(
            f"{args.model} takes only {fixed[2]}x{fixed[3]} inputs (exported with --static): "
            f"use --size {fixed[2]}x{fixed[3]} or export with dynamic shapes"
        )

    failures: list[str] = []
    start = time.perf_counter()
    written = 0

    def wrote() -> None:
        nonlocal written
        written += 1
        progress.update(1)

    bar = dict(unit="img", desc="translate", file=sys.stderr, dynamic_ncols=True, disable=None)  # None: TTY only
    with tqdm(total=len(jobs), **bar) as progress:

        def fail(message: str) -> None:
            failures.append(message)
            progress.write(f"srpkd: skipped: {message}", file=sys.stderr)
            progress.update(1)

        try:
            for members in group_by_size(jobs, args.size, runner.size_multiple, runner.min_size).values():
                for i in range(0, len(members), args.batch):
                    translate_batch(runner, members[i : i + args.batch], args.size, wrote, fail)
        except WriteFailed as e:
            raise SrpkdError(f"{e}; stopped after writing {written} of {len(jobs)} images "
                             f"(continue with --skip-existing)") from None
    elapsed = time.perf_counter() - start
    done = len(jobs) - len(failures)
    kept_note = f" ({kept} existing outputs kept)" if kept else ""
    print(f"translated {done} of {len(jobs)} images into {args.output} with {runner.describe()} in {elapsed:.1f} s"
          f"{kept_note}")
    if failures:
        raise SrpkdError(f"{len(failures)} of {len(jobs)} images failed")
    return 0
