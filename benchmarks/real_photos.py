"""The real-photo data of the real-teacher benchmarks (time_to_quality.py, reproduce.py --recipe main).

The teacher is the pretrained vintagify generator; its inputs are photos from ``../shared/data``
(``SRPKD_SHARED_DATA`` overrides the folder), each a centre square resized to the run's size, so that
the preprocessing is deterministic and the teacher cache applies.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image

from srpkd.data.images import list_images

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRPKD_SHARED_DATA", ROOT.parent / "shared" / "data"))
TRAIN_PHOTOS = 192  # training photos per source unless a benchmark says otherwise
NEEDS = ("facades_unpaired", "edges2shoes_subset", "kodak")


def prepare_real_teacher_data(out: Path, size: int, per_source: int = TRAIN_PHOTOS) -> Path:
    """A CycleGAN-layout folder of real photos, each a centre square resized to ``size`` px (PNG).

    trainA: the first ``per_source`` of facades_unpaired/trainA and the photo halves of the first
    ``per_source`` edges2shoes_subset/train pairs (the teacher cache of 4 feature taps keeps ~8 MiB
    a photo in memory at 128 px);
    valA (chooses the best checkpoint): the first 20 of facades_unpaired/testA and of
    edges2shoes_subset/val; testA (the figures): the rest of those and the 24 Kodak photos.
    The B folders link to the A ones (teacher_only reads only A; the layout needs B).

    Safe for processes that share ``out`` (benchmarks/converged.sh starts two at once): each builds
    the folder under a name of its own and renames it into place; the first rename wins, the others
    discard theirs.
    """
    final = out / (f"data_{size}" if per_source == TRAIN_PHOTOS else f"data_{size}_n{per_source}")
    if (final / ".done").is_file():
        return final
    for need in NEEDS:
        if not (SHARED / need).is_dir():
            raise SystemExit(f"real-teacher photos: {SHARED / need} not found (set SRPKD_SHARED_DATA)")
    root = out / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(root, ignore_errors=True)

    def add(split: str, photos: list[Path], prefix: str, halves: bool = False) -> None:
        d = root / f"{split}A"
        d.mkdir(parents=True, exist_ok=True)
        for p in photos:
            img = Image.open(p).convert("RGB")
            if halves:  # edges2shoes pairs: the photo is the left half
                img = img.crop((0, 0, img.width // 2, img.height))
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            img.save(d / f"{prefix}_{p.stem}.png")

    facades_test = list_images(SHARED / "facades_unpaired" / "testA")
    shoes_test = list_images(SHARED / "edges2shoes_subset" / "val")
    facades_train = list_images(SHARED / "facades_unpaired" / "trainA")
    shoes_train = list_images(SHARED / "edges2shoes_subset" / "train")
    if min(len(facades_train), len(shoes_train)) < per_source:
        raise SystemExit(f"real-teacher photos: {per_source} training photos of each source asked for, but only "
                         f"{len(facades_train)} facades and {len(shoes_train)} shoe training photos in {SHARED}")
    add("train", facades_train[:per_source], "facades")
    add("train", shoes_train[:per_source], "shoes", halves=True)
    add("val", facades_test[:20], "facades")
    add("val", shoes_test[:20], "shoes", halves=True)
    add("test", facades_test[20:], "facades")
    add("test", shoes_test[20:106], "shoes", halves=True)
    add("test", list_images(SHARED / "kodak"), "kodak")
    for split in ("train", "val", "test"):
        (root / f"{split}B").symlink_to(f"{split}A")
    (root / ".done").write_text("ok\n")
    if final.exists() and not (final / ".done").is_file():
        shutil.rmtree(final, ignore_errors=True)  # left half-written by a process stopped before this rename
    try:
        root.rename(final)
    except OSError:  # another process renamed its complete copy first
        shutil.rmtree(root, ignore_errors=True)
        if not (final / ".done").is_file():
            raise
    return final


def data_overrides(root: Path, size: int) -> dict:
    """``--set`` overrides that train on ``root`` (made by :func:`prepare_real_teacher_data`) as it is."""
    # the photos are already size x size: a deterministic preprocess, so the teacher cache is used
    return {"data.mode": "unaligned", "data.root": str(root), "data.preprocess": "none", "data.crop_size": size,
            "data.flip": False, "data.max_images": None, "data.serial": True, "data.val_split": "val",
            "data.test_split": "test", "eval_images": 200}
