"""Running a generator on images: the ``translate`` API, padding, and runtime wrappers.

A *runner* hides where the network runs (PyTorch eager, a TorchScript file, an
ONNX Runtime session) behind one call: a float32 ``(N, 3, H, W)`` array in
[-1, 1] goes in, an array of the same shape comes out. Each runner knows the
``size_multiple`` its network needs; images of any size are padded by
reflection up to the next multiple (split evenly between the two sides) and
the output is cropped back, so the result always has the input's size.

Exported files carry a JSON record (see :func:`export_metadata`): the
architecture, the input range and the size multiple, so that a runner built
from an ``.onnx`` or ``.torchscript`` file needs nothing else.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .data.images import to_image, to_rgb, to_tensor
from .errors import SrpkdError

METADATA_KEY = "srpkd"  # ONNX metadata_props key; TorchScript stores METADATA_FILE
METADATA_FILE = "srpkd.json"
ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".torchscript",)


# --------------------------------------------------------------------------- metadata


def export_metadata(model: nn.Module) -> dict[str, Any]:
    """The record an exported file carries: how to feed the network and where it came from."""
    from . import __version__
    from .checkpoint import generator_record

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


class TorchRunner(Runner):
    """A PyTorch module, run in eval mode without autograd (its own mode is restored afterwards).

    Without ``device`` the module stays where it is and inputs go to its device.
    """

    runtime = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device | None = None) -> None:
        if device is not None:
            model = model.to(device)
        else:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.model = model
        self.device = torch.device(device)
        # A module not built by srpkd has no declared multiple: it gets no padding.
        self.size_multiple = int(getattr(model, "size_multiple", 1))
        self.metadata = {"arch": getattr(model, "arch", type(model).__name__)}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                out = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
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
            raise SrpkdError(f"{name} is not a readable TorchScript file ({str(e).splitlines()[0]})") from None
        self.module.eval()
        self.device = torch.device(device)
        self.metadata = parse_metadata(extra[METADATA_FILE], name)
        self.size_multiple = self.metadata["size_multiple"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return out.float().cpu().numpy()


class OnnxRunner(Runner):
    """An ONNX Runtime session on a file written by ``srpkd export`` (or its bytes), on the CPU."""

    runtime = "onnx"

    def __init__(
        self, source: str | os.PathLike | bytes, threads: int | None = None, providers: Sequence[str] | None = None
    ) -> None:
        import onnxruntime as ort

        name = "ONNX bytes" if isinstance(source, bytes) else str(source)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; shape warnings would interleave with progress bars
        # One thread setting for both runtimes: without ``threads``, follow torch.set_num_threads.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        if not isinstance(source, bytes):
            if not Path(source).is_file():
                raise SrpkdError(f"ONNX model not found: {source}")
            source = str(source)
        try:
            self.session = ort.InferenceSession(source, options, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise SrpkdError(f"{name} is not a readable ONNX model ({str(e).splitlines()[0]})") from None
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


def load_runner(
    model: nn.Module | Runner | str | os.PathLike,
    runtime: str | None = None,
    threads: int | None = None,
    device: str | None = None,
) -> Runner:
    """A runner for a module, a checkpoint / run folder, an ``.onnx`` or a ``.torchscript`` file.

    ``runtime`` is ``"torch"`` or ``"onnx"``; by default it follows the model (ONNX files run in
    ONNX Runtime, everything else in PyTorch). A PyTorch generator asked to run on ``"onnx"`` is
    exported in memory first (with the same parity check as ``srpkd export``). ``threads`` sets
    ONNX Runtime's intra-op threads; by default it uses ``torch.get_num_threads()``, so that
    ``torch.set_num_threads`` (global for PyTorch) governs both runtimes. ``device`` is where
    PyTorch runs (default: a module stays where it is, files load on the CPU).
    """
    if runtime not in (None, "torch", "onnx"):
        raise SrpkdError(f"unknown runtime {runtime!r}; choose torch or onnx")
    if isinstance(model, Runner):
        if runtime and model.runtime != runtime and not (runtime == "torch" and model.runtime == "torchscript"):
            raise SrpkdError(f"this model already runs on {model.runtime}, not {runtime}")
        return model
    if isinstance(model, nn.Module):
        if runtime == "onnx":
            from .export.onnx import to_verified_onnx

            return OnnxRunner(to_verified_onnx(model), threads=threads)
        return TorchRunner(model, device)
    path = Path(model)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        if runtime == "torch":
            raise SrpkdError(f"{path} is an ONNX model: run it with --runtime onnx, or pass the srpkd checkpoint")
        return OnnxRunner(path, threads=threads)
    if suffix in TORCHSCRIPT_SUFFIXES:
        if runtime == "onnx":
            raise SrpkdError(f"{path} is a TorchScript file: run it with --runtime torch, or pass the srpkd checkpoint")
        return TorchScriptRunner(path, device or "cpu")
    from .checkpoint import load_generator

    return load_runner(load_generator(path), runtime, threads, device)


def max_abs_diff(model: nn.Module, runner: Runner, shape: Sequence[int], seed: int = 0) -> float:
    """Largest absolute difference between PyTorch eager and ``runner`` on one random input in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(tuple(shape), generator=g).mul(2).sub(1).numpy()
    expected = TorchRunner(model)(x)
    got = runner(x)
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got.astype(np.float64) - expected).max())


# --------------------------------------------------------------------------- padding


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The smallest (H, W) at least (height, width) that are multiples of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_reflect(x: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad a ``(C, h, w)`` array by reflection to ``size``; also return the slices that crop it back.

    The padding is split between top/bottom and left/right. Pads wider than the image reflect
    again (numpy's ``reflect`` mode), so even a 1-pixel-wide image pads to any size.
    """
    (height, width), (h, w) = size, x.shape[-2:]
    if height < h or width < w:
        raise ValueError(f"cannot pad {h}x{w} down to {height}x{width}")
    top, left = (height - h) // 2, (width - w) // 2
    padded = np.pad(x, ((0, 0), (top, height - h - top), (left, width - w - left)), mode="reflect")
    return padded, (slice(top, top + h), slice(left, left + w))


def run_batch(runner: Runner, images: Sequence[Image.Image]) -> list[Image.Image]:
    """Translate images whose padded sizes agree in one call of ``runner``; outputs keep each input's size."""
    arrays = [to_tensor(img).numpy() for img in images]
    sizes = {padded_size(*a.shape[1:], runner.size_multiple) for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"images of one batch must pad to one size, got {sorted(sizes)}")
    size = sizes.pop()
    padded, crops = zip(*(pad_reflect(a, size) for a in arrays))
    out = runner(np.stack(padded))
    return [to_image(torch.from_numpy(o[:, rows, cols])) for o, (rows, cols) in zip(out, crops)]


def as_image(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image, or a uint8 array (H x W grayscale, H x W x 1/3/4), as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 array (values 0..255), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    mode = "L" if image.ndim == 2 else {3: "RGB", 4: "RGBA"}.get(image.shape[2]) if image.ndim == 3 else None
    if mode is None:
        raise ValueError(f"expected an H x W or H x W x 3 (or 4) array, got shape {image.shape}")
    return to_rgb(Image.fromarray(np.ascontiguousarray(image), mode))


def translate(model: nn.Module | Runner | str | os.PathLike, image: Image.Image | np.ndarray) -> Image.Image:
    """Translate one image with a generator; the result is an RGB PIL image of the input's size.

    ``model`` is a generator module, a :class:`Runner`, or a path (a srpkd checkpoint or run
    folder, an ``.onnx`` or ``.torchscript`` export); a path is loaded on every call, so load it
    once with :func:`load_runner` when translating many images. ``image`` is a PIL image or a
    uint8 numpy array (grayscale H x W, or H x W x 3 / 4); grayscale and RGBA become RGB. Sizes
    that the network cannot take are padded by reflection and cropped back.
    """
    runner = load_runner(model)
    return run_batch(runner, [as_image(image)])[0]
