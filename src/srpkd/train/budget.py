"""A training budget in wall time (``optim.time``; ``srpkd distill --time 10m``).

The learning-rate schedule (warm-up, decay) and the KD-only warm-up are laid
over a number of steps. With a time budget that number is planned from the
measured cost of a step. The loop asks for a plan every ``REPLAN_EVERY`` (10)
steps: the first request only marks a reference point (the steps before it
warm up allocators and caches and are not timed), and from the second on (step
20 of a new run) the steps still to go are the time left divided by the mean
time per step since that reference, evaluations and checkpoints included,
since they spend the same budget. Until then the run follows its first plan
(``optim.steps``, or a resumed run's saved plan). The time counts from the
start of the run, so the teacher cache is part of it, and on resume continues
from the time the checkpoint recorded. The final evaluation and saves come
after it (seconds).
"""
from __future__ import annotations

import math
import re

from ..errors import SrpkdError

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"`` -> seconds (positive and finite)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|m|min|h)?\s*", str(text))
    if not m:
        raise SrpkdError(f"bad duration {text!r}: use seconds or a number with s, m or h (e.g. 90s, 10m, 1.5h)")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or ""]
    if not (math.isfinite(seconds) and seconds > 0):
        raise SrpkdError(f"bad duration {text!r}: it must be positive")
    return seconds


class TimeBudget:
    """Plans the total number of steps so that training ends when ``seconds`` of run time are spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        # (step, elapsed) of the first plan of this process: the steps before it (allocation, warm caches,
        # a resumed run's earlier process) are not timed
        self._ref: tuple[int, float] | None = None

    def plan(self, step: int, elapsed: float, total: int) -> int:
        """The planned total after ``step`` steps at ``elapsed`` seconds (``total``: the current plan)."""
        if elapsed >= self.seconds:
            return step
        if self._ref is None:
            self._ref = (step, elapsed)
        ref_step, ref_elapsed = self._ref
        if step <= ref_step or elapsed <= ref_elapsed:
            return max(total, step + 1)
        per_step = (elapsed - ref_elapsed) / (step - ref_step)
        return step + max(1, int((self.seconds - elapsed) / per_step))
