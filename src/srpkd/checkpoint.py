"""Checkpoints: safetensors weights with the architecture record in the header.

A generator file is one ``.safetensors`` file whose header metadata holds
``{"srpkd": {"format": 1, "kind": "generator", "arch": NAME, "kwargs": {...}}}``
as JSON, so :func:`load_generator` rebuilds the model with no other input.
Nothing is ever unpickled. Every write is atomic (:func:`srpkd.files.atomic_path`):
a crash leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch  # called through the module, so that tests can patch safetensors.torch.save_file
import torch
import torch.nn as nn
from safetensors import SafetensorError

from . import run_folder
from .errors import SrpkdError
from .files import _TAG, atomic_path  # noqa: F401  (_TAG re-exported: older callers import both from here)
from .models import create_generator

FORMAT = 1


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors plus a JSON-able ``meta`` record atomically as safetensors."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata={"srpkd": json.dumps(meta)})


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a srpkd safetensors file; one clear :class:`SrpkdError` for anything wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise SrpkdError(f"checkpoint not found: {path}")
    if path.suffix in (".pth", ".pt", ".ckpt", ".bin"):
        raise SrpkdError(
            f"{path} is a PyTorch pickle file; srpkd reads only .safetensors checkpoints "
            f"(convert a foreign generator with 'srpkd import')"
        )
    try:
        with safetensors.torch.safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = safetensors.torch.load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError, MemoryError) as e:
        # TypeError/OverflowError: e.g. a shape [0, 2**63] that safetensors accepts and torch cannot reshape to
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SrpkdError(f"{path} is not a readable safetensors checkpoint ({reason})") from None
    if "srpkd" not in header:
        raise SrpkdError(f"{path} has no srpkd metadata; import foreign weights with 'srpkd import'")
    try:
        meta = json.loads(header["srpkd"])
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise SrpkdError(f"{path} has corrupt srpkd metadata ({e})") from None
    return tensors, meta


def generator_record(model: nn.Module) -> dict[str, Any]:
    arch = getattr(model, "arch", None)
    if arch is None:
        raise ValueError("model was not built by srpkd.models.create_generator; its architecture is unknown")
    return {"format": FORMAT, "kind": "generator", "arch": arch, "kwargs": dict(model.arch_kwargs)}


def save_generator(model: nn.Module, path: str | os.PathLike, **extra: Any) -> None:
    """Save a generator's weights and architecture record (extra keys go into the record)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    save_tensors(path, model.state_dict(), {**generator_record(model), **extra})


def build_from_record(record: dict[str, Any], source: str | os.PathLike = "checkpoint") -> nn.Module:
    if not isinstance(record, dict):
        raise SrpkdError(f"{source} has a malformed architecture record: {record!r}")
    arch, kwargs = record.get("arch"), record.get("kwargs", {})
    if not isinstance(arch, str) or not isinstance(kwargs, dict):
        raise SrpkdError(f"{source} has a malformed architecture record: {record!r}")
    try:
        return create_generator(arch, **kwargs)
    except (
        SrpkdError, TypeError, ValueError, RuntimeError, OverflowError, ZeroDivisionError, IndexError, KeyError
    ) as e:
        # e.g. an unknown architecture, or a negative or fractional width written into the header by hand
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SrpkdError(
            f"{source} has an architecture record srpkd cannot build ({arch} {kwargs}): {reason}"
        ) from None


def load_state_strict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike, check_only: bool = False
) -> None:
    """``load_state_dict(strict=True)`` with one readable line on mismatch (``check_only``: do not load)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    wrong += [
        f"{k} is {state[k].dtype}, expected {own[k].dtype}"
        for k in own
        if k in state and state[k].shape == own[k].shape and own[k].is_floating_point() != state[k].is_floating_point()
    ]
    if missing or unexpected or wrong:
        arch = getattr(model, "arch", type(model).__name__)
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (first: {wrong[0]})")
        if missing:
            parts.append(f"{len(missing)} missing tensors (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
        raise SrpkdError(f"{source} does not fit {arch} {getattr(model, 'arch_kwargs', '')}: {'; '.join(parts)}")
    if not check_only:
        model.load_state_dict(state, strict=True)


def load_generator(path: str | os.PathLike, prefix: str | None = None) -> nn.Module:
    """Rebuild a generator from a srpkd checkpoint, or from a run folder (its final student).

    ``prefix`` selects one generator inside a training checkpoint (e.g. ``"G_A."``);
    by default the checkpoint's ``"generator_prefix"`` record is used.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / run_folder.STUDENT, path / "generator.safetensors", path / run_folder.LAST]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            looked_for = ", ".join(c.name for c in candidates)
            raise SrpkdError(f"{path} is a folder without a srpkd generator (looked for {looked_for})")
        path = found
    tensors, meta = load_tensors(path)
    if meta.get("kind") == "training":
        prefix = prefix or meta.get("generator_prefix", "G.")
        generators = meta.get("generators", {})
        if not isinstance(prefix, str) or not isinstance(generators, dict):
            raise SrpkdError(f"{path} has corrupt srpkd metadata (generator_prefix/generators)")
        record = generators.get(prefix)
        if record is None:
            raise SrpkdError(f"{path} holds no generator {prefix!r}")
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    elif meta.get("kind") == "generator":
        record = meta
    else:
        raise SrpkdError(f"{path} is a srpkd {meta.get('kind', 'unknown')!r} file, not a generator")
    # Check the record against the stored tensors on the meta device first: a
    # header claiming ngf=10**6 must be refused, not allocated.
    with torch.device("meta"):
        skeleton = build_from_record(record, path)
    load_state_strict(skeleton, tensors, path, check_only=True)
    del skeleton
    model = build_from_record(record, path)
    load_state_strict(model, tensors, path)
    model.checkpoint_meta = meta
    return model.eval()
