"""Where a generator runs: runners for PyTorch, TorchScript and ONNX Runtime, the one ONNX Runtime
session builder, and the record every exported file carries.

A *runner* hides where the network runs (PyTorch eager, a TorchScript file, an
ONNX Runtime session) behind one call: a float32 ``(N, 3, H, W)`` array in
[-1, 1] goes in, an array of the same shape comes out. Each runner knows the
``size_multiple`` its network needs (padding to it is :mod:`srpkd.inference`'s
job).

Exported files carry a JSON record (see :func:`export_metadata`): the
architecture, the input range and the size multiple, so that a runner built
from an ``.onnx`` or ``.torchscript`` file needs nothing else.

Both the exporters (:mod:`srpkd.export`, which check an export by running it
here) and :mod:`srpkd.inference` (which runs exports) build on this module; it
imports neither.
"""
from __future__ import annotations

import functools
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from ._version import __version__
from .checkpoint import build_from_record, generator_record
from .errors import SrpkdError, first_line
from .models.modes import MODES, train_mode_forward
from .models.sizes import min_input_size

METADATA_KEY = "srpkd"  # ONNX metadata_props key; TorchScript stores METADATA_FILE
METADATA_FILE = "srpkd.json"


# --------------------------------------------------------------------------- metadata


def export_metadata(model: nn.Module) -> dict[str, Any]:
    """The record an exported file carries: how to feed the network and where it came from."""
    record = generator_record(model)
    return {
        "format": record["format"],
        "kind": "generator",
        "arch": record["arch"],
        "kwargs": record["kwargs"],
        "layout": "NCHW",
        "channels": "RGB",
        "input_range": [-1.0, 1.0],
        "size_multiple": int(model.size_multiple),
        "srpkd_version": __version__,
    }


def parse_metadata(text: str | bytes | None, source: str | os.PathLike) -> dict[str, Any]:
    """Decode and check an export record; one :class:`SrpkdError` naming ``source`` if it is unusable."""
    if not text:
        raise SrpkdError(f"{source} has no srpkd metadata; export the generator with 'srpkd export'")
    try:
        meta = json.loads(text)
        if not isinstance(meta, dict):
            raise ValueError("not an object")
        multiple = meta["size_multiple"]
        if not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f"size_multiple {multiple!r}")
    except (ValueError, KeyError) as e:
        raise SrpkdError(f"{source} has corrupt srpkd metadata ({e})") from None
    return meta


# --------------------------------------------------------------------------- ONNX Runtime


def onnx_session(
    source: str | os.PathLike | bytes,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    spin: bool = True,
) -> ort.InferenceSession:
    """The one way srpkd opens an ONNX model in ONNX Runtime (``srpkd translate``, the export check,
    ``srpkd profile`` and the benchmarks all use it).

    All graph optimisations, errors-only logging, one inter-op thread and ``threads`` intra-op
    threads; without ``threads`` it follows ``torch.get_num_threads()``, so that
    ``torch.set_num_threads`` governs both runtimes. ``device`` ``cuda[:N]`` runs on the CUDA
    provider (with the CPU one for unsupported nodes); ``spin=False`` turns the intra-op threads'
    spin-waiting off, which helps on a machine with more runnable threads than cores.
    """
    name = "ONNX bytes" if isinstance(source, bytes) else str(source)
    device = torch.device(device)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; shape warnings would interleave with progress bars
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SrpkdError("this onnxruntime has no CUDA provider; install onnxruntime-gpu, or run ONNX on the CPU")
        providers: list = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    elif device.type == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise SrpkdError(f"ONNX Runtime runs on cpu or cuda, not {device.type}")
    if not isinstance(source, bytes):
        if not Path(source).is_file():
            raise SrpkdError(f"ONNX model not found: {source}")
        source = str(source)
    try:
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise SrpkdError(f"{name} is not a readable ONNX model ({first_line(e)})") from None


# --------------------------------------------------------------------------- runners


class Runner:
    """One network, one call: float32 ``(N, C, H, W)`` in [-1, 1] -> array of the same shape."""

    runtime = "?"
    size_multiple: int = 1
    # (N, C, H, W) for a network exported with fixed shapes, else None
    fixed_shape: tuple[int, int, int, int] | None = None
    metadata: dict[str, Any] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        arch = self.metadata.get("arch", "generator")
        return f"{arch} on {self.runtime}"

    def skeleton(self) -> nn.Module | None:
        """The network rebuilt from the file's record on the ``meta`` device (shapes only), if it can be."""
        try:
            with torch.device("meta"):
                return build_from_record(self.metadata, "export")
        except SrpkdError:
            return None

    @functools.cached_property
    def min_size(self) -> int:
        """The smallest side the network takes (a multiple of ``size_multiple``); smaller images are padded."""
        net = self.skeleton()
        return min_input_size(net) if net is not None else self.size_multiple


class TorchRunner(Runner):
    """A PyTorch module, run without autograd (its own mode is restored afterwards).

    Without ``device`` the module stays where it is and inputs go to its device.
    ``mode="eval"`` (default) runs it in eval mode; ``mode="train"`` runs it as
    pytorch-CycleGAN-and-pix2pix's test.py does without ``--eval``
    (:func:`srpkd.models.modes.train_mode_forward`: each image normalised by its
    own BatchNorm statistics, dropout on with masks seeded by ``seed``).
    """

    runtime = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device | None = None, mode: str = "eval",
                 seed: int = 0) -> None:
        if mode not in MODES:
            raise SrpkdError(f"unknown network mode {mode!r}; choose one of: {', '.join(MODES)}")
        if device is not None:
            model = model.to(device)
        else:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.model = model
        self.device = torch.device(device)
        self.mode, self.seed = mode, seed
        # A module not built by srpkd has no declared multiple: it gets no padding.
        self.size_multiple = int(getattr(model, "size_multiple", 1))
        self.metadata = {"arch": getattr(model, "arch", type(model).__name__)}

    def describe(self) -> str:
        return super().describe() + (" in train mode (pix2pix test.py without --eval)" if self.mode == "train" else "")

    def skeleton(self) -> nn.Module:
        return self.model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if self.mode == "train":
            return train_mode_forward(self.model, x, self.seed).float().cpu().numpy()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                out = self.model(x)
        finally:
            self.model.train(was_training)
        return out.float().cpu().numpy()


class TorchScriptRunner(Runner):
    """A file written by ``srpkd export --format torchscript`` (or its bytes)."""

    runtime = "torchscript"

    def __init__(self, source: str | os.PathLike | bytes, device: str | torch.device = "cpu") -> None:
        name = "TorchScript bytes" if isinstance(source, bytes) else str(source)
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise SrpkdError(f"TorchScript file not found: {source}")
        extra = {METADATA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load is deprecated in favour of torch.export
                stream = io.BytesIO(source) if isinstance(source, bytes) else str(source)
                self.module = torch.jit.load(stream, map_location=device, _extra_files=extra)
        except (RuntimeError, OSError, ValueError) as e:
            raise SrpkdError(f"{name} is not a readable TorchScript file ({first_line(e)})") from None
        self.module.eval()
        self.device = torch.device(device)
        self.metadata = parse_metadata(extra[METADATA_FILE], name)
        self.size_multiple = self.metadata["size_multiple"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return out.float().cpu().numpy()


class OnnxRunner(Runner):
    """An :func:`onnx_session` on a file written by ``srpkd export`` (or its bytes), on the CPU."""

    runtime = "onnx"

    def __init__(self, source: str | os.PathLike | bytes, threads: int | None = None) -> None:
        name = "ONNX bytes" if isinstance(source, bytes) else str(source)
        self.session = onnx_session(source, threads=threads)
        self.metadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), name)
        self.size_multiple = self.metadata["size_multiple"]
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if all(isinstance(d, int) for d in inp.shape):
            self.fixed_shape = tuple(inp.shape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.fixed_shape is not None:
            n, *chw = self.fixed_shape
            if list(x.shape[1:]) != chw:
                raise SrpkdError(
                    f"this ONNX model was exported with a fixed input of {'x'.join(map(str, self.fixed_shape))}, "
                    f"got {'x'.join(map(str, x.shape))}; export it with dynamic shapes or resize the input to match"
                )
            if x.shape[0] != n:  # a fixed batch of n: feed it n images at a time
                if x.shape[0] % n:
                    raise SrpkdError(f"this ONNX model takes batches of exactly {n}, got {x.shape[0]}")
                return np.concatenate([self(x[i : i + n]) for i in range(0, x.shape[0], n)])
        return self.session.run(None, {self.input_name: x})[0]


def max_abs_diff(model: nn.Module, runner: Runner, shape: Sequence[int], seed: int = 0) -> float:
    """Largest absolute difference between PyTorch eager and ``runner`` on one random input in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(tuple(shape), generator=g).mul(2).sub(1).numpy()
    expected = TorchRunner(model)(x)
    got = runner(x)
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got.astype(np.float64) - expected).max())
