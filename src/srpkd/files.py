"""Atomic file writes: every file srpkd writes goes through :func:`atomic_path`.

The data is written to a temporary file in the target's folder, flushed to
disk and renamed over the target, so a crash leaves either the old file or the
new one, never half of one; the temporary file a killed writer leaves behind is
removed by the next write into that folder. The result gets the permissions
``open()`` would give it (0666 & ~umask), not the temporary file's 0600.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import SrpkdError, first_line, os_error_code

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; hold_lock does nothing there
    fcntl = None

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


class FileTaken(SrpkdError):
    """An exclusive write found its target already there (another process made it first)."""


class Busy(SrpkdError):
    """Another live process holds the lock of :func:`hold_lock`."""


def hold_lock(path: str | os.PathLike, what: str):
    """Take an exclusive lock on ``path`` (created if absent) and return its open file: the lock lasts until the
    file is closed or the process ends, however it ends (the kernel drops it, so a killed process leaves no
    stale lock). Raises :class:`Busy`, naming the holder's pid, when another process holds it; ``what`` names
    the locked thing in that message. Advisory (``flock``); on Windows it returns None and locks nothing.
    """
    if fcntl is None:
        return None
    path = Path(path)
    try:
        f = open(path, "a+")
    except OSError as e:
        raise SrpkdError(f"cannot lock {what}: {e.strerror or e} ({path})") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise Busy(f"{what} is in use by another process (pid {holder}); wait for it to end or stop it") from None
        raise SrpkdError(f"cannot lock {what}: {e.strerror or e} ({path})") from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")  # who holds it, for the message above ("a+": written at the end, here 0)
    f.flush()
    return f


def _publish_exclusive(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if no file has it: ``link`` is atomic and refuses an existing name."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileTaken(f"{path} exists") from None
    except OSError:  # a file system without hard links: claim the name, then replace the empty claim
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise FileTaken(f"{path} exists") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any error the temporary file is removed and ``path`` is untouched. With
    ``exclusive`` an existing ``path`` is never replaced: :class:`FileTaken` is
    raised instead, atomically (of two processes, exactly one gets the name).
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
        if exclusive:
            _publish_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
        _fsync_dir(parent)
    except SrpkdError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        reason = write_failure(e, parent)  # before the unlink: the temporary file is what filled the disk
        tmp.unlink(missing_ok=True)
        if reason is None:
            raise
        raise SrpkdError(f"cannot write {path}: {reason}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def durable_replace(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Rename a finished file (e.g. a download's ``.part``) over ``dst``: its data and the rename reach the disk."""
    src, dst = Path(src), Path(dst)
    try:
        with open(src, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(src, dst)
    except OSError as e:
        raise SrpkdError(f"cannot write {dst}: {e.strerror or e}") from None
    _fsync_dir(dst.parent if str(dst.parent) else Path("."))
    return dst


def write_failure(e: BaseException, folder: Path) -> str | None:
    """Why a write into ``folder`` failed, when the cause is the system's and not a bug: an ``OSError``, an errno
    that a library reports in its own exception type (safetensors' ``SafetensorError``, PyTorch's C++ writer),
    or a folder that is out of space whatever the library said. ``None``: a programming error, left loud."""
    code = os_error_code(e)
    if code is None and not isinstance(e, OSError) and _out_of_space(folder):
        code = errno.ENOSPC
    if code is not None:
        return os.strerror(code)
    return first_line(e) if isinstance(e, OSError) else None


def _out_of_space(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs on Windows
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (with a final newline) atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_lines(path: Path) -> list[str]:
    """The lines of a text file written by srpkd; bytes that are not UTF-8 (a damaged file) become U+FFFD, so the
    line they are on fails to parse and is skipped by the reader, instead of the whole file failing."""
    try:
        return path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as e:
        raise SrpkdError(f"cannot read {path}: {e.strerror or e}") from None


def refuse_to_replace(path: str | os.PathLike, overwrite: bool, ours: Callable[[Path], bool] | None = None) -> None:
    """An output path the user named: an existing file there is replaced only with ``--overwrite``, or when
    ``ours(path)`` recognises it as srpkd's own (e.g. an earlier report)."""
    path = Path(path)
    if path.is_dir():
        raise SrpkdError(f"{path} is a folder; give a file name")
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if ours is not None and ours(path):
        return
    raise SrpkdError(f"{path} exists; use --overwrite to replace it")


def read_json_object(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object (a run's optional files)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None
