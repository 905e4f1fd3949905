"""Where a run reports, on rank 0: ``log.jsonl``, TensorBoard and the progress bar.

``log.jsonl`` holds one JSON record per logged step (``step``, ``epoch``,
``lr``, ``time``, ``loss/<name>`` averaged since the last record,
``sec_per_step``) and one per validation (``step``, ``epoch``, ``time``,
``val/<name>``). On other ranks a :class:`RunLog` does nothing.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import run_folder
from ..files import atomic_path, read_lines
from ..errors import SrpkdError

log = logging.getLogger("srpkd.train")

BAR_LOSSES = ("kd", "srp", "G_gan", "G_l1", "cycle_A", "D_fake")  # shown next to the progress bar


class RunLog:
    def __init__(self, run_dir: Path, active: bool) -> None:
        self.run_dir = Path(run_dir)
        self.active = active
        self.file = self.tb = self.bar = None
        self.sums: dict[str, float] = {}
        self.count = 0
        self.t_last = time.time()

    def open_tensorboard(self) -> None:
        if not self.active:
            return
        try:
            # imported here: tensorboard is slow to import and may be missing or broken; the run works without it
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / run_folder.TENSORBOARD))
        except Exception as e:  # noqa: BLE001
            log.warning(f"tensorboard disabled: {e}")

    def open(self, total: int, initial: int, quiet: bool) -> None:
        """Start appending to log.jsonl and, unless ``quiet``, show a progress bar."""
        if not self.active:
            return
        self.file = open(self.run_dir / run_folder.LOG, "a")
        if not quiet:
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=None)
        self.t_last = time.time()

    def set_total(self, total: int) -> None:
        """A re-planned number of steps (time budget)."""
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def add(self, losses: dict[str, float]) -> None:
        """One step's losses (averaged into the next record)."""
        if not self.active:
            return
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)

    def write_losses(self, step: int, epoch: int, lr: float, elapsed: float) -> None:
        mean = {k: v / self.count for k, v in self.sums.items()}
        rec = {"step": step, "epoch": epoch, "lr": lr, "time": round(elapsed, 3)}
        rec.update({f"loss/{k}": v for k, v in mean.items()})
        rec["sec_per_step"] = (time.time() - self.t_last) / self.count
        self._write(rec)
        if self.tb is not None:
            for k, v in rec.items():
                if k.startswith("loss/") or k in ("lr", "sec_per_step"):
                    self.tb.add_scalar(k, v, step)
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in mean.items() if k in BAR_LOSSES}, refresh=False)
        self.sums, self.count, self.t_last = {}, 0, time.time()

    def write_validation(self, step: int, epoch: int, elapsed: float, metrics: dict[str, float]) -> None:
        self._write({"step": step, "epoch": epoch, "time": round(elapsed, 3), **metrics})
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)

    def add_image(self, name: str, image: torch.Tensor, step: int) -> None:
        if self.tb is not None:
            self.tb.add_image(name, image, step)

    def _write(self, rec: dict) -> None:
        """Append one record; on a write error (a full disk) cut the file back to whole records and stop."""
        pos = self.file.tell()
        try:
            self.file.write(json.dumps(rec) + "\n")
            self.file.flush()
        except OSError as e:
            path = self.run_dir / run_folder.LOG
            try:
                self.file.close()
                with open(path, "r+b") as f:
                    f.truncate(pos)
            except OSError:
                pass
            self.file = None
            raise SrpkdError(f"cannot write {path}: {e.strerror or e}") from None

    def close(self) -> None:
        for thing in (self.bar, self.file, self.tb):
            if thing is not None:
                thing.close()
        self.file = self.tb = self.bar = None


def make_run_dir(run_dir: Path) -> None:
    try:
        (Path(run_dir) / run_folder.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SrpkdError(f"cannot create the run folder {run_dir}: {e.strerror or e}") from None


def truncate_log(path: Path, step: int) -> None:
    """On resume: drop log lines past the checkpoint's step (they will be logged again)."""
    if not path.is_file():
        return
    keep = []
    skipped = 0
    for line in read_lines(path):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("step", 0), (int, float)):
                raise ValueError("not a record")
        except ValueError:
            skipped += 1
            continue
        if rec.get("step", 0) <= step:
            keep.append(line)
    if skipped:
        log.warning(f"srpkd: {path}: dropped {skipped} damaged line(s) (not UTF-8 JSON records)")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))

