"""Convert generators saved by other code bases into srpkd generators.

Understood layouts (a ``module.`` prefix from DataParallel is removed first):

- pytorch-CycleGAN-and-pix2pix ``ResnetGenerator``: ``model.N.*`` keys, blocks
  ``model.10 .. model.10+n-1`` with ``conv_block.*`` inside (reflect padding).
  The vintagify teacher uses the same layout with ``block.*`` inside.
- pytorch-CycleGAN-and-pix2pix ``UnetGenerator``: nested ``model.model.1.model.1...``
  ``UnetSkipConnectionBlock`` keys, 7 (``unet_128``) or 8 (``unet_256``) levels.

The norm is read from the keys: that code base puts a bias on convolutions
only when the norm is not BatchNorm, so convolutions without bias mean
``batch`` (or ``none`` when there are no norm tensors, whose zero biases are
filled in), and convolutions with bias mean ``instance`` or, with norm
weights, ``instance_affine``. InstanceNorm running statistics left in files
written before PyTorch 0.4 are dropped, as that code base does on load.
Dropout cannot be seen in U-Net keys (it has no tensors); ResNet dropout shifts
the block indices and is detected. Replicate padding cannot be told from
reflect padding by the keys; reflect (the default) is assumed.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import load_state_strict
from ..errors import SrpkdError
from .registry import create_generator, list_models

STATS = ("running_mean", "running_var", "num_batches_tracked")
_CONTAINERS = ("state_dict", "model", "generator", "netG", "G", "params")


def _is_state(o) -> bool:
    """A non-empty dict of str -> tensor."""
    if not isinstance(o, dict) or not o:
        return False
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in o.items())


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a foreign ``.pth`` file, loaded with ``weights_only=True`` (no code in a pickle runs)."""
    path = Path(path)
    if not path.is_file():
        raise SrpkdError(f"file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines()]
        code = [ln for ln in lines if "global" in ln.lower()]
        if code:  # a class or function reference: the pickle would run or build arbitrary objects
            raise SrpkdError(f"{path} is refused: it holds Python objects that "
                             f"torch.load(weights_only=True) will not load ({code[0]})") from None
        why = next((ln for ln in lines if ln.startswith("Unsupported")), "not a pickle")
        raise SrpkdError(f"{path} is not a readable PyTorch weights file ({why})") from None
    except Exception as e:  # garbage makes the unpickler raise anything: struct.error, IndexError, KeyError...
        reason = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        raise SrpkdError(f"{path} is not a readable PyTorch weights file ({reason})") from None
    if isinstance(obj, dict) and not _is_state(obj):
        inner = [obj[k] for k in _CONTAINERS if _is_state(obj.get(k))]
        if not inner:
            keys = ", ".join(map(repr, list(obj)[:8]))
            raise SrpkdError(f"{path} holds no generator state_dict (top-level keys: {keys})")
        obj = inner[0]
    if not _is_state(obj):
        raise SrpkdError(f"{path} holds no generator state_dict (found {type(obj).__name__})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _conv_dim(state: dict, key: str, axis: int) -> int:
    """A size of the 4-D convolution weight ``key`` (checked, so odd files give one clear line)."""
    w = state.get(key)
    if w is None or w.ndim != 4 or 0 in w.shape:
        got = "missing" if w is None else f"of shape {tuple(w.shape)}"
        raise SrpkdError(f"{key} is {got}; expected a 4-D convolution weight")
    return int(w.shape[axis])


def _norm(state: dict, conv: str, norm: str) -> str:
    """Infer the norm from the first convolution ``conv`` and the norm module ``norm`` after it."""
    if f"{conv}.bias" in state:
        return "instance_affine" if f"{norm}.weight" in state else "instance"
    return "batch" if f"{norm}.weight" in state or f"{norm}.running_mean" in state else "none"


def _resnet(state: dict) -> tuple[dict, dict]:
    """(srpkd kwargs, {foreign module path: srpkd module path}) for a ResnetGenerator."""
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.(?:conv_)?block\.", k))})
    n = len(blocks)
    if blocks != list(range(10, 10 + n)):
        raise SrpkdError(f"residual blocks at unexpected indices {blocks} (expected model.10 .. model.{9 + n})")
    inner = "block" if n and any(k.startswith("model.10.block.") for k in state) else "conv_block"
    if n and f"model.10.{inner}.0.weight" in state:
        raise SrpkdError("residual blocks use padding_type 'zero'; srpkd's ResNet uses reflect padding only")
    dropout = 0.5 if n and getattr(state.get(f"model.10.{inner}.6.weight"), "ndim", 0) == 4 else 0.0
    conv2, norm2 = (6, 7) if dropout else (5, 6)
    names = {1: "stem.1", 2: "stem.2", 4: "down1.0", 5: "down1.1", 7: "down2.0", 8: "down2.1",
             10 + n: "up1.0", 11 + n: "up1.1", 13 + n: "up2.0", 14 + n: "up2.1", 17 + n: "head.1"}
    mapping = {f"model.{k}": v for k, v in names.items()}
    for i in range(n):
        for j in (1, 2, conv2, norm2):
            mapping[f"model.{10 + i}.{inner}.{j}"] = f"blocks.{i}.conv_block.{j}"
    head = f"model.{17 + n}.weight"
    kwargs = {"ngf": _conv_dim(state, "model.1.weight", 0), "norm": _norm(state, "model.1", "model.2"),
              "in_channels": _conv_dim(state, "model.1.weight", 1), "out_channels": _conv_dim(state, head, 0),
              "dropout": dropout}
    return {"arch": f"resnet_{n}blocks", **kwargs}, mapping


def _unet(state: dict) -> tuple[dict, dict]:
    """(srpkd kwargs, mapping) for a UnetGenerator of nested UnetSkipConnectionBlocks."""
    p = "model.model."
    mapping = {f"{p}0": "downs.0.0", f"{p}3": "ups.0.1"}
    level = 1
    while True:
        p += "1.model." if level == 1 else "3.model."
        if not any(k.startswith(p) for k in state):
            raise SrpkdError(f"U-Net level {level} ({p.rstrip('.')}) is missing")
        if any(k.startswith(p + "3.model.") for k in state):  # a middle block
            mapping.update({f"{p}1": f"downs.{level}.1", f"{p}2": f"downs.{level}.2",
                            f"{p}5": f"ups.{level}.1", f"{p}6": f"ups.{level}.2"})
            level += 1
            continue
        mapping.update({f"{p}1": f"downs.{level}.1", f"{p}3": f"ups.{level}.1", f"{p}4": f"ups.{level}.2"})
        break
    num_downs = level + 1
    kwargs = {"ngf": _conv_dim(state, "model.model.0.weight", 0),
              "norm": _norm(state, "model.model.0", "model.model.1.model.2"),
              "in_channels": _conv_dim(state, "model.model.0.weight", 1),
              "out_channels": _conv_dim(state, "model.model.3.weight", 1), "dropout": 0.0}
    arch = {7: "unet_128", 8: "unet_256"}.get(num_downs, f"unet with {num_downs} levels")
    return {"arch": arch, **kwargs}, mapping


def infer_layout(state: dict) -> tuple[dict, dict]:
    """({"arch", "ngf", "norm", ...}, {foreign module: srpkd module}) read from the keys."""
    if any(k.startswith("model.model.") for k in state):
        return _unet(state)
    if any(re.match(r"model\.\d+\.", k) for k in state):
        return _resnet(state)
    raise SrpkdError(f"unknown generator layout (first keys: {', '.join(list(state)[:3])}); "
                     "expected a pytorch-CycleGAN-and-pix2pix ResnetGenerator or UnetGenerator state_dict")


def convert_state(state: dict, arch: str | None = None, source: str | os.PathLike = "weights",
                  **overrides) -> nn.Module:
    """Build the srpkd generator for a foreign state_dict and load it strictly.

    ``arch`` and keyword ``overrides`` (``ngf``, ``norm``, ``dropout``...) replace
    what is inferred from the keys; a mismatch with the tensors is one clear error.
    """
    try:
        found, mapping = infer_layout(state)
    except SrpkdError as e:
        raise SrpkdError(f"{source}: {e}") from None
    inferred_arch = found.pop("arch")
    arch = arch or inferred_arch
    if arch not in list_models("generator"):
        raise SrpkdError(f"{source}: {inferred_arch} has no srpkd architecture; srpkd has {', '.join(list_models())}")
    if arch != inferred_arch:
        raise SrpkdError(f"{source} holds a {inferred_arch} generator, not {arch}")
    kwargs = {**found, **{k: v for k, v in overrides.items() if v is not None}}
    kwargs = {k: v for k, v in kwargs.items() if not (k in ("in_channels", "out_channels") and v == 3)}
    if not kwargs.get("dropout"):
        kwargs.pop("dropout", None)
    model = create_generator(arch, **kwargs)
    own = model.state_dict()
    out = {}
    for key, value in state.items():
        module, _, name = key.rpartition(".")
        if name in STATS and kwargs["norm"] != "batch":
            continue  # InstanceNorm statistics of old files
        out[f"{mapping[module]}.{name}" if module in mapping else key] = value
    for key, value in own.items():  # absent from old BatchNorm files; pix2pix's norm 'none' has no conv biases
        zero_ok = key.endswith("num_batches_tracked") or (kwargs["norm"] == "none" and key.endswith(".bias"))
        if key not in out and zero_ok:
            out[key] = torch.zeros_like(value)
    load_state_strict(model, out, source)
    return model.eval()


def import_generator(path: str | os.PathLike, arch: str | None = None, **overrides) -> nn.Module:
    """Read a foreign ``.pth`` generator file and return the equivalent srpkd generator."""
    return convert_state(read_state(path), arch, source=path, **overrides)
