"""Running a generator on images: the ``translate`` API, padding, and choosing a runner.

The runners themselves (PyTorch eager, a TorchScript file, an ONNX Runtime
session) are in :mod:`srpkd.runtime`; :func:`load_runner` picks one for a
module, a checkpoint or an exported file. Images of any size are padded by
reflection up to the next multiple of the runner's ``size_multiple``, and at
least to the smallest size its network takes (``min_size``: a 1x1 image becomes
8x8 for a ResNet), split evenly between the two sides, and the output is
cropped back, so the result always has the input's size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .checkpoint import load_generator
from .data.images import to_image, to_rgb, to_tensor
from .devices import resolve_device
from .errors import SrpkdError
from .export.onnx import to_verified_onnx
from .runtime import OnnxRunner, Runner, TorchRunner, TorchScriptRunner

ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".torchscript",)


def load_runner(
    model: nn.Module | Runner | str | os.PathLike,
    runtime: str | None = None,
    threads: int | None = None,
    device: str | torch.device | None = None,
    mode: str = "eval",
    seed: int = 0,
) -> Runner:
    """A runner for a module, a checkpoint / run folder, an ``.onnx`` or a ``.torchscript`` file.

    ``runtime`` is ``"torch"`` or ``"onnx"``; by default it follows the model (ONNX files run in
    ONNX Runtime, everything else in PyTorch). A PyTorch generator asked to run on ``"onnx"`` is
    exported in memory first (with the same parity check as ``srpkd export``). ``threads`` sets
    ONNX Runtime's intra-op threads; by default it uses ``torch.get_num_threads()``, so that
    ``torch.set_num_threads`` (global for PyTorch) governs both runtimes. ``device`` is where
    PyTorch runs (default: a module stays where it is, files load on the CPU).
    ``mode="train"`` runs a PyTorch generator as pix2pix's test.py does without ``--eval``
    (see :mod:`srpkd.models.modes`; ``seed`` seeds its dropout); exports were traced in eval
    mode and cannot run that way.
    """
    if runtime not in (None, "torch", "onnx"):
        raise SrpkdError(f"unknown runtime {runtime!r}; choose torch or onnx")
    if mode == "train":
        _refuse_train_mode(model, runtime)
    if device is not None:
        device = resolve_device(device)
    if isinstance(model, Runner):
        if runtime and model.runtime != runtime and not (runtime == "torch" and model.runtime == "torchscript"):
            raise SrpkdError(f"this model already runs on {model.runtime}, not {runtime}")
        return model
    if isinstance(model, nn.Module):
        if runtime == "onnx":
            return OnnxRunner(to_verified_onnx(model), threads=threads)
        return TorchRunner(model, device, mode=mode, seed=seed)
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
    return load_runner(load_generator(path), runtime, threads, device, mode, seed)


def _refuse_train_mode(model, runtime: str | None) -> None:
    """Train mode needs the PyTorch module: exports and ONNX Runtime were traced in eval mode."""
    if isinstance(model, Runner):
        what = f"an existing {model.runtime} runner"
    elif runtime == "onnx":
        what = "ONNX Runtime"
    elif not isinstance(model, nn.Module) and Path(model).suffix.lower() in ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES:
        what = f"the export {Path(model).name}"
    else:
        return
    raise SrpkdError(f"train mode runs a srpkd checkpoint or run folder in PyTorch, not {what} "
                     "(exports are traced in eval mode)")


# --------------------------------------------------------------------------- padding


def padded_size(height: int, width: int, multiple: int, minimum: int = 1) -> tuple[int, int]:
    """The smallest (H, W) at least (height, width) and ``minimum`` (the smallest side the network takes)
    that are multiples of ``multiple``."""
    height, width = max(height, minimum), max(width, minimum)
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
    sizes = {padded_size(*a.shape[1:], runner.size_multiple, runner.min_size) for a in arrays}
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
