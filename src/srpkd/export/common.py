"""What both exporters share: size checks, the parity check against PyTorch, the atomic write and its report."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch.nn as nn

from ..data.images import check_pixels
from ..errors import SrpkdError
from ..files import atomic_path
from ..models.sizes import check_min_size
from ..runtime import Runner, max_abs_diff


@dataclass
class ExportReport:
    path: Path
    format: str
    bytes: int
    max_abs_diff: float  # the worst difference to PyTorch over checked_shapes
    checked_shapes: list[tuple[int, ...]]
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.checked_shapes)
        extra = ""
        if self.format == "onnx":
            shape = "dynamic batch/height/width" if self.details["dynamic"] else "fixed shape"
            extra = f" opset {self.details['opset']}, {shape},"
        runtime = "ONNX Runtime" if self.format == "onnx" else "the reloaded TorchScript module"
        return (
            f"wrote {self.path} ({self.format},{extra} {self.bytes / 1e6:.1f} MB); "
            f"{runtime} matches PyTorch to {self.max_abs_diff:.1e} on {shapes}"
        )


def in_channels(model: nn.Module) -> int:
    return int(getattr(model, "arch_kwargs", {}).get("in_channels", 3))


def check_sizes(model: nn.Module, sizes: Sequence[tuple[int, int]]) -> None:
    """Every (H, W) must be positive multiples of the network's size multiple."""
    multiple = int(getattr(model, "size_multiple", 1))
    for h, w in sizes:
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise SrpkdError(
                f"{getattr(model, 'arch', 'this generator')} needs sizes that are multiples of {multiple}, got {h}x{w}"
            )
        check_pixels(h, w)
        check_min_size(model, h, w)


def parity_shapes(model: nn.Module, size: tuple[int, int], dynamic: bool) -> list[tuple[int, ...]]:
    """The inputs an export is checked on: the traced shape, and for dynamic exports a second
    batch size and a non-square size, so that a silently fixed axis is caught."""
    c, (h, w) = in_channels(model), size
    shapes = [(1, c, h, w)]
    if dynamic:
        shapes.append((2, c, h, w + int(getattr(model, "size_multiple", 1))))
    return shapes


def check_parity(model: nn.Module, runner: Runner, shapes: Sequence[Sequence[int]], atol: float, what: str) -> float:
    """The largest difference between ``runner`` and PyTorch over ``shapes``; raise if any is above ``atol``."""
    worst = 0.0
    for shape in shapes:
        diff = max_abs_diff(model, runner, shape)
        if not diff <= atol:  # also catches NaN
            raise SrpkdError(
                f"{what} output differs from PyTorch by {diff:.3g} (> {atol:g}) on a {'x'.join(map(str, shape))} input"
            )
        worst = max(worst, diff)
    return worst


def write_export(
    path: str | os.PathLike,
    fmt: str,
    build: Callable[[], tuple[bytes, float, list[tuple[int, ...]]]],
    overwrite: bool = False,
) -> ExportReport:
    """Refuse an existing ``path`` unless ``overwrite``; ``build()`` (export + checks); write atomically."""
    path = Path(path)
    if path.is_dir():
        raise SrpkdError(f"{path} is a folder; give the export a file name")
    if path.exists() and not overwrite:
        raise SrpkdError(f"{path} exists; use --overwrite to replace it")
    try:
        data, diff, shapes = build()
    except SrpkdError as e:
        raise SrpkdError(f"{e}; nothing written to {path}") from None
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return ExportReport(path, fmt, len(data), diff, shapes)
