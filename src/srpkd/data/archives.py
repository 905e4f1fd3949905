"""Extracting downloaded archives (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``) safely.

Every member is checked before anything is written: an archive with a link
(symbolic or hard), a device, a FIFO, an absolute path or a path with a
``..`` component is refused whole, so nothing can land outside the target
folder or point outside it. Tar archives are then extracted with tarfile's
``filter="data"`` as well, where Python has it (3.10.12+, 3.11.4+). A truncated or corrupt archive
is one :class:`SrpkdError` naming it. An archive that unpacks to more than the free space of the
target's disk (the members' declared sizes, which extraction holds them to) is refused before anything is
written, as :class:`DiskFull`: the archive is fine, the disk is not.
"""
from __future__ import annotations

import errno
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import SrpkdError, first_line

SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError)


def unsafe_name(name: str) -> str | None:
    """Why a member name may not be extracted, or None when it stays inside the target folder."""
    if not name or "\0" in name:
        return "an empty name"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")):
        return "an absolute path"
    if ".." in parts:
        return "a path leaving the folder ('..')"
    return None


class DiskFull(SrpkdError):
    """The archive does not fit on the target's disk (a sound archive: keep it)."""


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _refuse(archive: Path, member: str, why: str) -> SrpkdError:
    return SrpkdError(f"refusing {archive}: member {member!r} is {why}; nothing was extracted")


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tf.getmembers()  # reads the whole archive: a truncated one fails here, before any write
    for m in members:
        if m.issym() or m.islnk():
            raise _refuse(archive, m.name, f"a link (to {m.linkname!r})")
        if not (m.isfile() or m.isdir()):
            raise _refuse(archive, m.name, "a device or FIFO")
        why = unsafe_name(m.name)
        if why:
            raise _refuse(archive, m.name, why)
    return members


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    for m in members:
        mode = m.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise _refuse(archive, m.filename, "a link")
        if mode and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(archive, m.filename, "a device or FIFO")
        why = unsafe_name(m.filename)
        if why:
            raise _refuse(archive, m.filename, why)
    return members


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract ``archive`` into the folder ``dest`` (created) after checking every member; returns ``dest``."""
    archive, dest = Path(archive), Path(dest)
    name = archive.name.lower()
    if not name.endswith(SUFFIXES):
        raise SrpkdError(f"{archive}: not an archive srpkd extracts ({', '.join(SUFFIXES)})")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = _zip_members(archive, zf)
                _check_room(archive, dest, sum(m.file_size for m in members))
                for m in members:
                    zf.extract(m, dest)
        else:
            with tarfile.open(archive, "r:*") as tf:
                members = _tar_members(archive, tf)
                _check_room(archive, dest, sum(m.size for m in members if m.isfile()))
                # filter="data" (3.10.12+, 3.11.4+) as a second guard; the checks above already refuse the same
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(dest, members=members, **safe)
    except SrpkdError:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"cannot extract {archive} into {dest}: {e.strerror}") from None
        if e.errno is not None:  # the disk, not the archive (a gzip error has no errno)
            raise SrpkdError(f"cannot extract {archive} into {dest}: {e.strerror or e}") from None
        raise SrpkdError(f"{archive} is damaged or truncated ({first_line(e)})") from None
    except DAMAGED as e:
        raise SrpkdError(f"{archive} is damaged or truncated ({first_line(e)})") from None
    return dest


def _check_room(archive: Path, dest: Path, size: int) -> None:
    free = shutil.disk_usage(dest).free
    if size > free:
        raise DiskFull(f"{archive} unpacks to {_mib(size)} but {dest} has {_mib(free)} free; nothing was extracted")
