"""Argument types shared by the sub-commands: numbers that make sense, refused by argparse in one line."""
from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    """A float that is not NaN or infinite (``--atol nan`` would make every comparison pass or fail)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value
