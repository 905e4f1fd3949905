"""Checkpoints: safetensors weights with the architecture record in the header.

A generator file is one ``.safetensors`` file whose header metadata holds
``{"srpkd": {"format": 1, "kind": "generator", "arch": NAME, "kwargs": {...}}}``
as JSON, so :func:`load_generator` rebuilds the model with no other input.
Nothing is ever unpickled. Every write goes to a temporary file in the same
folder, is flushed to disk and then renamed over the target, so a crash leaves
either the old file or the new one, never half of one; the temporary file a
killed writer leaves behind is removed by the next write into that folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from . import run_folder
from .errors import SrpkdError

FORMAT = 1


_TAG = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname() or "host")[:32]


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``.

    Temporary names carry the writer's host and process id
    (``.NAME.<host>-<pid>.XXXXXXXX.tmp``); a file of this host whose process no
    longer exists can only be the remains of a crash (SIGKILL, power loss)
    during a write. Files of live processes, of other hosts and of other
    programs are left alone. Called on every atomic write into the folder.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        parts = name.rsplit(".", 3)
        if len(parts) != 4 or "-" not in parts[1]:
            continue
        host, pid = parts[1].rsplit("-", 1)
        if host != _TAG or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or a reused pid): leave it
        except ProcessLookupError:
            pass
        except OSError:
            continue  # e.g. PermissionError: the process exists
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(Path(folder) / name)
        except OSError:
            pass
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_TAG}-{os.getpid()}.", suffix=".tmp", dir=parent)
    except OSError as e:
        blocker = next((a for a in [parent, *parent.parents] if a.exists() and not a.is_dir()), None)
        if blocker is not None:  # mkdir says "File exists" when a parent is a regular file
            raise SrpkdError(f"cannot write {path}: {blocker} is a file, not a folder") from None
        raise SrpkdError(f"cannot write {path}: {e.strerror or e}") from None
    remove_stale_temps(parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes the file 0600 (and writers such as safetensors may recreate it):
        # give the result the permissions open() would, 0666 & ~umask
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SrpkdError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors plus a JSON-able ``meta`` record atomically as safetensors."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"srpkd": json.dumps(meta)})


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a srpkd safetensors file; one clear :class:`SrpkdError` for anything wrong with it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise SrpkdError(f"checkpoint not found: {path}")
    if path.suffix in (".pth", ".pt", ".ckpt", ".bin"):
        raise SrpkdError(
            f"{path} is a PyTorch pickle file; srpkd reads only .safetensors checkpoints "
            f"(convert a foreign generator with 'srpkd import')"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
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
    from .models import create_generator

    if not isinstance(record, dict):
        raise SrpkdError(f"{source} has a malformed architecture record: {record!r}")
    arch, kwargs = record.get("arch"), record.get("kwargs", {})
    if not isinstance(arch, str) or not isinstance(kwargs, dict):
        raise SrpkdError(f"{source} has a malformed architecture record: {record!r}")
    try:
        return create_generator(arch, **kwargs)
    except (SrpkdError, TypeError, ValueError, RuntimeError, OverflowError, ZeroDivisionError, IndexError, KeyError) as e:
        # e.g. an unknown architecture, or a negative or fractional width written into the header by hand
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SrpkdError(f"{source} has an architecture record srpkd cannot build ({arch} {kwargs}): {reason}") from None


def load_state_strict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike, check_only: bool = False
) -> None:
    """``load_state_dict(strict=True)`` with one readable line on mismatch (``check_only``: do not load)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
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
            raise SrpkdError(f"{path} is a folder without a srpkd generator (looked for {', '.join(c.name for c in candidates)})")
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
