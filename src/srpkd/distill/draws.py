"""The teacher's outputs for K augmented draws of every training item, on disk, filled on first use.

With random crops and flips the teacher sees a new image on every step, so the
fixed cache of :mod:`.teacher` cannot serve it. ``cache_draws: K`` limits the
augmentation to K draws per item instead: epoch ``e`` draws item ``i`` as draw
``e % K`` (:class:`srpkd.train.data.SeededDataset`), so the first K epochs are
exactly the uncached run's, and from epoch K on every (draw, item) has been
seen before. The teacher's output, its tapped features and (for the factorized
relation loss) its relation row norms of slot ``draw * N + item`` are written
here the first time the slot is met and read back on every later visit.

* Storage: one memory-mapped file per tensor in ``RUN/teacher_cache/<direction>.rank<r>/``,
  images and features as float16 (half the bytes of float32; the rounding is
  below 1e-3 of a unit-scale feature, see BENCHMARKS.md section 2), row norms as
  float64, recomputed from the rounded features so the relation loss sees one
  consistent teacher. The files are allocated in full when the cache is
  created, so a disk too small for them fails there, with one line, and not
  later inside a memory map (where a full disk is a SIGBUS).
* Every step reads the teacher's view from the cache, also on the step that
  filled it: a slot gives the same numbers whenever it was filled.
* Resume: which slots the steps before a checkpoint filled follows from the
  data order alone, so nothing about the cache is stored in the checkpoint. The
  files are synced to disk before every checkpoint; a resumed run reopens them
  and marks those slots filled (:meth:`DrawCache.mark_filled`), the rest are
  computed again when met, in the same batches as before. A finished run
  deletes the files (:meth:`DrawCache.remove`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import SrpkdError

META = "meta.json"


class DrawCache:
    """Slots ``0 .. n_slots - 1`` of named tensors, created on the first :meth:`put` (when the shapes are known)."""

    def __init__(self, folder: Path, n_slots: int) -> None:
        self.folder = Path(folder)
        self.n_slots = int(n_slots)
        self.filled = torch.zeros(self.n_slots, dtype=torch.bool)
        self.arrays: dict[str, np.memmap] = {}

    @property
    def ready(self) -> bool:
        return bool(self.arrays)

    @property
    def bytes_per_slot(self) -> int:
        return sum(a[0].nbytes for a in self.arrays.values())

    @staticmethod
    def _dtype(name: str) -> np.dtype:
        return np.dtype(np.float64 if name.startswith("sq_norms.") else np.float16)

    def _file_size(self, name: str, shape) -> int:
        """Bytes of the file holding tensor ``name`` of per-slot ``shape`` for every slot."""
        return self.n_slots * math.prod(shape) * self._dtype(name).itemsize

    def _meta(self, shapes: dict[str, tuple[int, ...]]) -> dict:
        return {"n_slots": self.n_slots, "tensors": {k: [self._dtype(k).name, list(s)] for k, s in shapes.items()}}

    def create(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """New, fully allocated files for tensors of ``shapes`` (per slot); refuses a disk too small for them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.bin"):
            old.unlink()
        need = sum(self._file_size(k, s) for k, s in shapes.items())
        try:
            for k, s in shapes.items():
                path = self.folder / f"{k}.bin"
                with open(path, "wb") as f:
                    os.posix_fallocate(f.fileno(), 0, self._file_size(k, s))
                self.arrays[k] = np.memmap(path, dtype=self._dtype(k), mode="r+", shape=(self.n_slots, *s))
            (self.folder / META).write_text(json.dumps(self._meta(shapes)))
        except OSError as e:
            self.arrays = {}
            for path in self.folder.glob("*.bin"):
                path.unlink()
            raise SrpkdError(f"cannot create the teacher cache in {self.folder} ({need / 2**30:.2f} GiB for "
                             f"{self.n_slots} draws x items): {e.strerror or e}; lower cache_draws or set it to 0")
        self.filled.zero_()

    def reopen(self) -> bool:
        """Open the files a stopped run left (for resume); False, and nothing opened, when they do not match."""
        try:
            meta = json.loads((self.folder / META).read_text())
            if meta.get("n_slots") != self.n_slots:
                return False
            arrays = {}
            for k, (dtype, shape) in meta["tensors"].items():
                path = self.folder / f"{k}.bin"
                if dtype != self._dtype(k).name or path.stat().st_size != self._file_size(k, shape):
                    return False
                arrays[k] = np.memmap(path, dtype=self._dtype(k), mode="r+", shape=(self.n_slots, *shape))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self.arrays = arrays
        return True

    def mark_filled(self, slots: torch.Tensor) -> None:
        self.filled[slots] = True

    def missing(self, slots: torch.Tensor) -> torch.Tensor:
        """Which of ``slots`` (a long tensor) are not filled yet, as a bool mask."""
        return ~self.filled[slots] if self.ready else torch.ones(len(slots), dtype=torch.bool)

    def put(self, slots: torch.Tensor, tensors: dict[str, torch.Tensor]) -> None:
        """Store one row of every tensor per slot (creating the files on the first call)."""
        if not self.ready:
            self.create({k: tuple(v.shape[1:]) for k, v in tensors.items()})
        idx = slots.numpy()
        for k, v in tensors.items():
            self.arrays[k][idx] = v.detach().cpu().numpy().astype(self._dtype(k))
        self.filled[slots] = True

    def get(self, slots: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """The stored rows of ``slots``: images and features as float32, row norms as float64."""
        idx = slots.numpy()
        out = {}
        for k, a in self.arrays.items():
            t = torch.from_numpy(np.ascontiguousarray(a[idx]))
            out[k] = (t if t.dtype == torch.float64 else t.float()).to(device)
        return out

    def remove(self) -> None:
        """Close and delete the files (the folder too, when nothing else is in it)."""
        self.arrays = {}
        self.filled.zero_()
        for path in [*self.folder.glob("*.bin"), self.folder / META]:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()
            self.folder.parent.rmdir()  # teacher_cache/, once the last direction's folder is gone

    def flush(self) -> None:
        for a in self.arrays.values():
            a.flush()
