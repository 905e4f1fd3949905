"""Exporting generators for deployment: ONNX (:mod:`.onnx`) and TorchScript (:mod:`.torchscript`).

Every export is built in memory, reloaded in its target runtime and compared
with PyTorch on random inputs (max abs difference <= ``atol``, 1e-4 by
default) before anything touches the disk; then it is written atomically. A
failed check raises :class:`~srpkd.errors.SrpkdError` and leaves no file.
Both formats carry the srpkd export record (architecture, input range, size
multiple, version): ONNX in ``metadata_props["srpkd"]``, TorchScript in the
extra file ``srpkd.json``.
"""
from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from ..errors import SrpkdError
from .common import ExportReport, check_parity, check_sizes, parity_shapes, write_export
from .onnx import export_onnx
from .torchscript import export_torchscript

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}


def export_model(model: nn.Module, path: str | os.PathLike, format: str = "onnx", **options: Any) -> ExportReport:
    """Export to ``format`` (``onnx`` or ``torchscript``); see :func:`.onnx.export_onnx` and
    :func:`.torchscript.export_torchscript` for the options."""
    if format == "onnx":
        return export_onnx(model, path, **options)
    if format == "torchscript":
        return export_torchscript(model, path, **options)
    raise SrpkdError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")


__all__ = ["FORMATS", "ExportReport", "check_parity", "check_sizes", "export_model", "parity_shapes", "write_export"]
