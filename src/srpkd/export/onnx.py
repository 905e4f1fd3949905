"""ONNX export: dynamic batch, height and width by default, checked before it is written.

Which exporter. torch 2.13 has two: the torch.export-based one (``dynamo=True``,
the default, translated by onnxscript) and the deprecated TorchScript-based one
(``dynamo=False``). Both export every srpkd generator with a max abs error near
1e-6 against PyTorch, both keep reflection padding and transposed convolutions
shape-generic, and ONNX Runtime runs both equally fast. We use ``dynamo=True``:
its graph is the network and nothing else (a ResNet-9 is 91 nodes: Conv, Pad,
InstanceNormalization, ...; the legacy exporter adds about 350 nodes of shape
arithmetic around the Pads), and the legacy exporter warns that it will be
removed. The price is time: about 6 s of CPU per export, against 0.3 s.

Two traps found on the way, both handled below:
- named ``torch.export.Dim`` objects fail for the U-Net (its 1x1 bottleneck
  makes torch.export guard the height to >= 2**num_downs and reject the range),
  so the axes are declared ``Dim.DYNAMIC`` and renamed batch/height/width after;
- InstanceNorm without affine parameters exports as InstanceNormalization with
  a constant unit scale and zero bias, with affine as the learned ones; both
  match (the tests check both).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from typing import Iterator, Sequence

import onnx
import torch
import torch.nn as nn

from ..errors import SrpkdError, first_line
from ..runtime import METADATA_KEY, OnnxRunner, export_metadata
from .common import ExportReport, check_parity, check_sizes, in_channels, parity_shapes, write_export

# The exporter implements opset 18 and newer; asked for less, it tries a down-conversion that
# fails for these networks (Pad-18) and silently keeps 18. ONNX Runtime >= 1.14 runs opset 18.
MIN_OPSET = DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "output"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (torchvision op notices, optimizer pass logs, deprecations).

    The srpkd CLI logs at INFO on the root logger, which would otherwise print every pass of
    the onnxscript optimizer. Errors still raise.
    """
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def to_onnx(
    model: nn.Module, size: tuple[int, int] = (256, 256), dynamic: bool = True, opset: int = DEFAULT_OPSET
) -> bytes:
    """Export a srpkd generator to serialized ONNX with its metadata, checked by ``onnx.checker``.

    ``size`` is the traced input's (H, W): with ``dynamic=False`` it is the only shape the
    model accepts (batch 1); with ``dynamic=True`` batch, height and width are free.
    """
    metadata = export_metadata(model)
    check_sizes(model, [size])
    if opset < MIN_OPSET:
        raise SrpkdError(f"ONNX export needs opset {MIN_OPSET} or newer, got {opset}")
    example = torch.zeros(1, in_channels(model), *size, device=next(model.parameters()).device)
    free = torch.export.Dim.DYNAMIC
    was_training = model.training
    model.eval()
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: free, 2: free, 3: free},) if dynamic else None,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types, with pages of text: keep one line
        logging.getLogger(__name__).debug("ONNX export failed", exc_info=True)
        raise SrpkdError(f"ONNX export of {metadata['arch']} failed: {first_line(e)}") from None
    finally:
        model.train(was_training)
    if dynamic:
        dims = program.model.graph.inputs[0].shape
        program.rename_axes({dims[0]: "batch", dims[2]: "height", dims[3]: "width"})
    proto = program.model_proto
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:
        raise SrpkdError(f"the ONNX exporter wrote opset {written} where {opset} was asked for")
    proto.doc_string = f"srpkd {metadata['arch']} generator: RGB NCHW in [-1, 1] -> RGB NCHW in [-1, 1]"
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise SrpkdError(f"the exported ONNX model fails onnx.checker: {first_line(e)}") from None
    return proto.SerializeToString()


def build_onnx(
    model: nn.Module,
    size: tuple[int, int] = (256, 256),
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
) -> tuple[bytes, float, list[tuple[int, ...]]]:
    """The checked export, in memory: :func:`to_onnx`, then run in ONNX Runtime against PyTorch on
    :func:`~.common.parity_shapes`; raise if they differ by more than ``atol``.

    Returns (serialized model, worst difference, checked shapes). ``srpkd export`` writes these
    bytes; ``srpkd profile --runtime onnx`` times them; ``srpkd translate --runtime onnx`` runs them.
    """
    data = to_onnx(model, size, dynamic, opset)
    shapes = parity_shapes(model, size, dynamic)
    return data, verify(model, data, shapes, atol), shapes


def to_verified_onnx(
    model: nn.Module,
    size: tuple[int, int] | None = None,
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
) -> bytes:
    """The bytes of :func:`build_onnx`.

    Without ``size`` the check uses the smallest sizes the network takes (cheap), which is what
    ``srpkd translate --runtime onnx`` does with a PyTorch checkpoint.
    """
    if size is None:
        multiple = int(model.size_multiple)
        size = (max(64, multiple),) * 2
    return build_onnx(model, size, dynamic, opset, atol)[0]


def verify(model: nn.Module, data: bytes, shapes: Sequence[Sequence[int]], atol: float) -> float:
    """Run serialized ONNX in ONNX Runtime on ``shapes``; the worst difference to PyTorch (raises above ``atol``)."""
    return check_parity(model, OnnxRunner(data), shapes, atol, "ONNX Runtime")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    size: tuple[int, int] = (256, 256),
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> ExportReport:
    """Export, check with ``onnx.checker`` and ONNX Runtime, then write ``path`` atomically.

    If any check fails nothing is written (an existing file is left as it was).
    """
    report = write_export(path, "onnx", lambda: build_onnx(model, size, dynamic, opset, atol), overwrite)
    report.details.update(opset=opset, dynamic=dynamic)
    return report
