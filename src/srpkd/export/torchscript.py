"""TorchScript export by tracing, checked after a save-and-reload round trip.

Tracing, not scripting: ``torch.jit.script`` rejects the generators' forward
(it defines a closure to collect distillation taps), while a trace of
``G(x)`` records only tensor operations. None of the generators has
shape-dependent Python control flow, so the trace is shape-generic: reflection
padding and transposed convolutions read the input size at run time. The
parity check runs a second batch size and a non-square size to prove it.
(``torch.jit`` is deprecated in favour of ``torch.export``; TorchScript files
still load in libtorch / C++ deployments, which is why the format is offered.)
"""
from __future__ import annotations

import io
import json
import logging
import os
import warnings

import torch
import torch.nn as nn

from ..errors import SrpkdError, first_line
from ..runtime import METADATA_FILE, TorchScriptRunner, export_metadata
from .common import ExportReport, check_parity, check_sizes, in_channels, parity_shapes, write_export


def to_torchscript(model: nn.Module, size: tuple[int, int] = (256, 256)) -> bytes:
    """Trace ``model`` on a ``size`` input and serialize it with the srpkd record as an extra file."""
    metadata = export_metadata(model)
    check_sizes(model, [size])
    example = torch.zeros(1, in_channels(model), *size, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        # TracerWarnings come from InstanceNorm's argument checks, which are constant for a given
        # network; the deprecation warnings from torch.jit itself.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    except Exception as e:  # tracing can fail in many ways; keep one line
        logging.getLogger(__name__).debug("TorchScript export failed", exc_info=True)
        raise SrpkdError(f"TorchScript export of {metadata['arch']} failed: {first_line(e)}") from None
    finally:
        model.train(was_training)
    return buffer.getvalue()


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    size: tuple[int, int] = (256, 256),
    atol: float = 1e-4,
    overwrite: bool = False,
) -> ExportReport:
    """Trace, reload from bytes, compare with PyTorch (max abs diff <= ``atol``), then write atomically."""

    def build() -> tuple[bytes, float, list[tuple[int, ...]]]:
        data = to_torchscript(model, size)
        runner = TorchScriptRunner(data, device=next(model.parameters()).device)
        shapes = parity_shapes(model, size, dynamic=True)
        return data, check_parity(model, runner, shapes, atol, "the reloaded TorchScript module"), shapes

    return write_export(path, "torchscript", build, overwrite)
