"""``srpkd data``: the standard pix2pix / CycleGAN datasets (download, list) and A|B pairs from two folders."""
from __future__ import annotations

import sys

from tqdm import tqdm

from ..data.catalog import ARCHIVES, DEFAULT_HOST, HOST_ENV, REFUSED, short_names
from ..data.combine import plan, refuse_existing, write_pairs
from ..data.install import install
from ..errors import SrpkdError


def register(sub) -> None:
    p = sub.add_parser("data", help="download the standard pix2pix/CycleGAN datasets; build A|B pairs",
                       description="Datasets in the layouts srpkd reads.")
    commands = p.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=type(p))

    d = commands.add_parser(
        "download", help="download a standard dataset into a new folder",
        description=(
            "Download a pix2pix dataset (facades, maps, edges2shoes, edges2handbags, night2day) or a CycleGAN one "
            "(horse2zebra, apple2orange, summer2winter_yosemite, monet2photo, ...) from the host the original "
            f"projects use ({DEFAULT_HOST}; --host or ${HOST_ENV} for a mirror) into the new folder DIR, in the "
            "layout srpkd reads (pix2pix: DIR/train, val, test with A|B pairs; CycleGAN: DIR/trainA, trainB, "
            "testA, testB). The transfer resumes where it stopped (run the same command again); sizes and, for "
            "the CycleGAN archives, SHA-256 sums are checked; archives with links or paths leaving DIR are refused."
        ),
    )
    d.add_argument("name", help="dataset name, e.g. facades or horse2zebra (pix2pix/NAME or cyclegan/NAME when "
                                "both projects have one; 'srpkd data list' shows them)")
    d.add_argument("dir", help="the dataset folder to create (new or empty)")
    d.add_argument("--host", help=f"download host (default: ${HOST_ENV}, else {DEFAULT_HOST})")
    d.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive beside DIR")
    d.add_argument("--retries", type=int, default=3, help="resume a broken transfer this many times (default 3)")
    d.add_argument("--no-verify", action="store_true",
                   help="accept an archive whose size or SHA-256 differs from the recorded one (a re-packed mirror)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=run_download)

    listing = commands.add_parser("list", help="the datasets srpkd data download knows")
    listing.set_defaults(func=run_list)

    c = commands.add_parser(
        "combine", help="pix2pix A|B pairs from two folders of corresponding images",
        description=(
            "Pair A/X.* with B/X.* (same file stem) into OUT/<split>/X.jpg|png, A left, B right. Sub-folders of A "
            "(train/, val/, test/) present in B become splits; a flat A becomes OUT/<--split>. Both images must be "
            "squares of one size unless --size resizes them."
        ),
    )
    c.add_argument("a", help="folder of A images (or of split folders of them)")
    c.add_argument("b", help="folder of B images, with the same stems (and split folders)")
    c.add_argument("out", help="output dataset folder")
    c.add_argument("--size", type=int, help="resize both halves to SIZE x SIZE (bicubic)")
    c.add_argument("--split", default="train", help="the split a flat A becomes (default train)")
    c.add_argument("--overwrite", action="store_true", help="replace existing pairs")
    c.set_defaults(func=run_combine)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_download(args) -> int:
    if args.retries < 0:
        raise SrpkdError(f"--retries must be 0 or more, got {args.retries}")
    done = install(args.name, args.dir, host=args.host, keep_archive=args.keep_archive, verify=not args.no_verify,
                   retries=args.retries, progress=not args.quiet)
    splits = ", ".join(f"{name} {n}" for name, n in done.counts.items())
    what = "pix2pix A|B pairs" if done.layout == "aligned" else "CycleGAN domains"
    print(f"{done.archive.name}: {what} in {done.root} ({splits} images)")
    print(f"use: srpkd distill --mode {done.layout} --data {done.root} ...")
    return 0


def run_list(args) -> int:
    shorts = {key: stem for stem, key in short_names().items()}
    for key, archive in sorted(ARCHIVES.items()):
        size = f"{archive.size / 2**20:.0f} MiB, SHA-256 known" if archive.size else "size and checksum unknown"
        alias = f" (or {shorts[key]})" if key in shorts else ""
        print(f"{key}{alias}: {archive.layout}, {size}")
    for name, why in REFUSED.items():
        print(f"{name}: not downloadable: {why.split(':')[0]}")
    return 0


def run_combine(args) -> int:
    if args.size is not None and args.size < 1:
        raise SrpkdError(f"--size must be positive, got {args.size}")
    splits = plan(args.a, args.b, args.out, args.split)
    if not args.overwrite:
        refuse_existing(splits)
    total = sum(len(s.pairs) for s in splits)
    with tqdm(total=total, unit="pair", desc="combine", file=sys.stderr, disable=None) as bar:
        write_pairs(splits, args.size, lambda: bar.update(1))
    for s in splits:
        skipped = f" ({s.unmatched} images without a counterpart skipped)" if s.unmatched else ""
        print(f"{s.name}: {len(s.pairs)} pairs{skipped}")
    print(f"wrote {total} A|B pairs into {args.out}; use: srpkd distill --mode aligned --data {args.out} ...")
    return 0
