"""Resumable HTTP downloads, checked for size (and SHA-256 where known), published atomically.

``fetch(url, dest)`` writes to ``dest.part`` and keeps the server's
validators (ETag / Last-Modified, total size) in ``dest.part.json``. A
transfer that breaks off is resumed with an HTTP ``Range`` request (with
``If-Range``, so a file that changed on the server starts over), up to
``retries`` times in one call; a later call with the same ``dest`` resumes
from what the earlier one left. The complete file must have the announced
size (and the expected size and SHA-256 when the caller knows them); only
then is it renamed to ``dest``. Only the standard library's ``urllib`` is
used: plain HTTP(S), redirects followed, no credentials.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import SrpkdError, first_line
from ..files import durable_replace

CHUNK = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "srpkd-data-download"


@dataclass
class _Response:
    status: int
    offset: int  # where the body starts in the file
    total: int | None  # the whole file's size, when the server says
    validator: str | None  # ETag or Last-Modified


def _part_paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _read_state(meta: Path, url: str) -> dict:
    try:
        state = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("url") == url else {}


def _describe(resp) -> _Response:
    status = resp.status
    validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
    if status == 206:
        m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", resp.headers.get("Content-Range") or "")
        if not m:
            raise SrpkdError(f"{resp.url}: the server answered a range request with a bad Content-Range")
        return _Response(206, int(m.group(1)), None if m.group(3) == "*" else int(m.group(3)), validator)
    length = resp.headers.get("Content-Length")
    return _Response(status, 0, int(length) if length and length.isdigit() else None, validator)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _open(url: str, have: int, state: dict, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if state.get("validator"):
            headers["If-Range"] = state["validator"]
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def fetch(url: str, dest: str | Path, *, size: int | None = None, sha256: str | None = None, retries: int = 3,
          progress: bool = True, timeout: float = TIMEOUT_S, label: str | None = None) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); see the module docstring. Returns ``dest``."""
    dest = Path(dest)
    part, meta = _part_paths(dest)
    state = _read_state(meta, url)
    if not state:
        part.unlink(missing_ok=True)  # no record of what it holds (or another URL's): start over
    total: int | None = state.get("total")
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label or dest.name, file=sys.stderr,
               dynamic_ncols=True, disable=None if progress else True)
    failure = ""
    try:
        for _ in range(retries + 1):
            have = part.stat().st_size if part.exists() else 0
            if total is not None and have == total:
                break
            try:
                resp = _open(url, have, state, timeout)
            except urllib.error.HTTPError as e:
                if e.code == 416:  # nothing left to send from `have`: what we hold is wrong
                    part.unlink(missing_ok=True)
                    state, total, failure = {}, None, "the server refused the resume range"
                    continue
                raise SrpkdError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError) as e:
                failure = first_line(getattr(e, "reason", e) or e)
                continue
            with resp:
                got = _describe(resp)
                if got.status == 206 and got.offset != have:
                    part.unlink(missing_ok=True)
                    state, total, failure = {}, None, f"the server resumed at byte {got.offset}, not {have}"
                    continue
                if got.status != 206:
                    have = 0  # a whole file: the server ignored the range, or the file changed (If-Range)
                total = got.total
                if size is not None and total is not None and total != size:
                    raise SrpkdError(f"{url} is {total} bytes on the server, but {size} are expected; "
                                     f"refusing it (another file, or a changed one)")
                state = {"url": url, "validator": got.validator, "total": total}
                meta.write_text(json.dumps(state))
                bar.reset(total=total)
                bar.update(have)
                try:
                    with open(part, "r+b" if have else "wb") as f:
                        f.seek(have)
                        f.truncate()
                        while block := resp.read(CHUNK):
                            f.write(block)
                            bar.update(len(block))
                except (http.client.HTTPException, OSError) as e:
                    failure = f"the transfer broke off ({first_line(e)})"
                    continue
            have = part.stat().st_size
            if total is None or have == total:
                total = have
                break
            failure = f"the transfer ended at {have} of {total} bytes"
        else:
            have = part.stat().st_size if part.exists() else 0
            raise SrpkdError(f"cannot download {url}: {failure}; {have} bytes are kept in {part}, "
                             f"run the same command again to resume")
    finally:
        bar.close()
    _check(part, meta, url, size, sha256)
    durable_replace(part, dest)
    meta.unlink(missing_ok=True)
    return dest


def _check(part: Path, meta: Path, url: str, size: int | None, sha256: str | None) -> None:
    """The expected size and SHA-256, when known; a file that fails is deleted (a resume could not mend it)."""
    have = part.stat().st_size
    problem = None
    if size is not None and have != size:
        problem = f"{have} bytes, expected {size}"
    elif sha256 is not None and _sha256(part) != sha256.lower():
        problem = f"SHA-256 {_sha256(part)}, expected {sha256}"
    if problem:
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise SrpkdError(f"the download of {url} is damaged ({problem}); it was deleted, run the command again")
