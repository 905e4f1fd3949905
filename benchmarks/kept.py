"""Benchmark runs that outlive their output folder (``--keep`` of reproduce.py and time_to_quality.py).

A new checkout has an empty ``runs/``: each finished run's record (reproduce.py: ``metrics.json``;
time_to_quality.py: ``ttq.json``) is copied into a committed folder as soon as the run is scored, and a
record found there counts the run as finished in a new output folder. Copies are atomic
(:func:`srpkd.files.atomic_path`), so a stopped process never leaves a torn record behind.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from srpkd.files import atomic_path


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def restore(kept: Path | None, record: Path) -> bool:
    """Copy the kept record of a run into its output folder when the run has none there; True when it did."""
    if kept is None or not kept.is_file() or record.is_file():
        return False
    _copy(kept, record)
    return True


def keep(record: Path, kept: Path | None) -> None:
    """Copy a finished run's record into the kept folder, never over an existing copy."""
    if kept is not None and not kept.is_file():
        _copy(record, kept)
