"""``srpkd data combine A B OUT``: pix2pix A|B pairs from two folders of corresponding images.

Images correspond by file stem (``A/train/12.jpg`` with ``B/train/12.png``).
When A has sub-folders holding images (``train/``, ``val/``, ``test/``, ...),
each one present in B too becomes ``OUT/<split>/``; a flat A is one split,
``OUT/<split>/`` (default ``train``). Each output is A beside B, A on the
left, as :class:`srpkd.data.datasets.AlignedDataset` reads it: both halves
must be squares of one size, or ``size`` resizes both to ``size`` x ``size``
(bicubic). An output keeps A's format (JPEG for JPEG, else PNG). Stems of A
without a B image (and of B without an A image) are counted and skipped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import SrpkdError
from .images import is_image_file, list_images, load_image, save_image


@dataclass
class Split:
    name: str
    pairs: list[tuple[Path, Path, Path]] = field(default_factory=list)  # (A, B, output)
    unmatched: int = 0


def _images(folder: Path) -> dict[str, Path]:
    files = list_images(folder, recursive=False)
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise SrpkdError(f"{by_stem[f.stem]} and {f} have one stem; pairs are matched by stem: rename one")
        by_stem[f.stem] = f
    return by_stem


def _split_folders(a: Path) -> list[str]:
    return sorted(d.name for d in a.iterdir() if d.is_dir() and any(is_image_file(p) for p in d.iterdir()))


def plan(a: str | os.PathLike, b: str | os.PathLike, out: str | os.PathLike, split: str = "train") -> list[Split]:
    """The pairs to write, per split; clear errors for what can be known before reading any pixel."""
    a, b, out = Path(a), Path(b), Path(out)
    for folder in (a, b):
        if not folder.is_dir():
            raise SrpkdError(f"folder not found: {folder}")
    names = _split_folders(a)
    splits = [(n, a / n, b / n, out / n) for n in names if (b / n).is_dir()] if names else [(split, a, b, out / split)]
    if not splits:
        raise SrpkdError(f"{b} has none of {a}'s split folders ({', '.join(names)})")
    result = []
    for name, fa, fb, fo in splits:
        ia, ib = _images(fa), _images(fb)
        common = sorted(set(ia) & set(ib))
        s = Split(name, unmatched=len(set(ia) ^ set(ib)))
        for stem in common:
            suffix = ".jpg" if ia[stem].suffix.lower() in (".jpg", ".jpeg") else ".png"
            s.pairs.append((ia[stem], ib[stem], fo / f"{stem}{suffix}"))
        result.append(s)
    if not any(s.pairs for s in result):
        raise SrpkdError(f"no file stem of {a} has an image in {b}: nothing to pair")
    return result


def pair_image(path_a: Path, path_b: Path, size: int | None) -> Image.Image:
    """A beside B (A left), both square of one size, or resized to ``size`` x ``size``."""
    img_a, img_b = load_image(path_a), load_image(path_b)
    if size:
        img_a, img_b = (img.resize((size, size), Image.BICUBIC) for img in (img_a, img_b))
    elif img_a.size != img_b.size or img_a.width != img_a.height:
        raise SrpkdError(f"{path_a} is {img_a.width}x{img_a.height} and {path_b} is {img_b.width}x{img_b.height}; "
                         f"pairs need two squares of one size: use --size S to resize both to S x S")
    pair = Image.new("RGB", (2 * img_a.width, img_a.height))
    pair.paste(img_a, (0, 0))
    pair.paste(img_b, (img_a.width, 0))
    return pair


def refuse_existing(splits: list[Split]) -> None:
    existing = [o for s in splits for _, _, o in s.pairs if o.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise SrpkdError(f"{existing[0]} exists{more}; use --overwrite to replace")


def write_pairs(splits: list[Split], size: int | None, done=lambda: None) -> None:
    for s in splits:
        for a, b, out in s.pairs:
            save_image(pair_image(a, b, size), out)
            done()
