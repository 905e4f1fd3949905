"""``srpkd data download``: a standard dataset, downloaded, checked, extracted and laid out as srpkd reads it.

For ``DIR`` (the dataset folder to create):

1. the archive is downloaded to ``.DIR.ARCHIVE.part`` beside ``DIR``
   (:func:`srpkd.data.download.fetch`: resumable, size- and checksum-checked),
   then renamed to ``.DIR.ARCHIVE``;
2. it is extracted (:func:`srpkd.data.archives.extract`: no links, no path
   leaving the folder) into a hidden staging folder beside ``DIR``;
3. the staging folder must hold the expected layout, directly or in its one
   top-level folder (the archives hold ``NAME/``): pix2pix ``train/`` (A|B
   pairs; ``val/``, ``test/``) or CycleGAN ``trainA/``, ``trainB/`` (``testA/``,
   ``testB/``); that folder is renamed to ``DIR``, so ``DIR`` appears whole or
   not at all;
4. the archive is deleted unless ``keep_archive`` (and always when step 2
   or 3 fails, so that a second try downloads it afresh).

Running the same command again after an interruption resumes the download,
or reuses the finished archive.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import SrpkdError
from .archives import DiskFull, extract
from .catalog import Archive, find
from .download import fetch
from .images import is_image_file

LAYOUTS = {  # layout: (the folders that mark it, the folders listed when present)
    "aligned": (("train",), ("train", "val", "test")),
    "unaligned": (("trainA", "trainB"), ("trainA", "trainB", "testA", "testB", "valA", "valB")),
}
IGNORED = ("__MACOSX",)  # folders some zip tools add beside the content


@dataclass
class Installed:
    archive: Archive
    root: Path
    layout: str
    counts: dict[str, int]  # images per split folder


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def find_layout(folder: Path) -> tuple[str, dict[str, int]] | None:
    """(layout, images per split) of a dataset folder, or None when it holds neither layout."""
    for layout, (marks, splits) in LAYOUTS.items():
        if all((folder / m).is_dir() for m in marks):
            counts = {s: count_images(folder / s) for s in splits if (folder / s).is_dir()}
            if all(counts[m] for m in marks):
                return layout, counts
    return None


def dataset_root(staging: Path) -> Path:
    """The extracted dataset: the staging folder itself, or its only top-level folder."""
    if find_layout(staging):
        return staging
    entries = [p for p in staging.iterdir() if p.name not in IGNORED and not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return staging


def _check_target(root: Path) -> None:
    if root.is_file():
        raise SrpkdError(f"{root} is a file; give the folder the dataset should be created in")
    if root.is_dir() and any(root.iterdir()):
        raise SrpkdError(f"{root} is not empty; give a new or empty folder for the dataset")


def install(name: str, root: str | os.PathLike, *, host: str | None = None, keep_archive: bool = False,
            verify: bool = True, retries: int = 3, progress: bool = True) -> Installed:
    """Download, check and extract dataset ``name`` into the new folder ``root`` (see the module docstring)."""
    archive = find(name)
    root = Path(root)
    _check_target(root)
    parent = root.parent if str(root.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SrpkdError(f"cannot create {parent}: {e.strerror or e}") from None
    download = parent / f".{root.name}.{archive.filename}"
    if not download.is_file():
        fetch(archive.url(host), download, size=archive.size if verify else None,
              sha256=archive.sha256 if verify else None, retries=retries, progress=progress, label=archive.name)
    staging = parent / f".{root.name}.extract-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            extract(download, staging)
            found = dataset_root(staging)
            layout = find_layout(found)
            if layout is None or layout[0] != archive.layout:
                marks = ", ".join(f"{m}/" for m in LAYOUTS[archive.layout][0])
                raise SrpkdError(f"{download} does not hold the {archive.layout} layout srpkd reads ({marks} "
                                 f"with images)")
        except DiskFull as e:  # the archive is sound: a rerun with more room extracts it without a download
            raise SrpkdError(f"{e}; the download {download} was kept: free some space and run the same "
                             "command again") from None
        except SrpkdError as e:  # a rerun must download it afresh, not meet the same archive again
            download.unlink(missing_ok=True)
            raise SrpkdError(f"{e}; the archive was deleted") from None
        if root.is_dir():
            root.rmdir()  # empty (checked above)
        os.replace(found, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        download.unlink(missing_ok=True)
    return Installed(archive, root, *layout)
