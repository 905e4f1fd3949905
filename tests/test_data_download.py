"""srpkd data download / combine, against archives served by a local HTTP server on 127.0.0.1.

The server plays the dataset host: it serves a pix2pix .tar.gz and a CycleGAN .zip, answers HTTP Range
requests, and can break a transfer off after some bytes, ignore ranges, or serve damaged and hostile
archives. Nothing leaves the machine.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import re
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srpkd.cli.main import main
from srpkd.data import catalog
from srpkd.data.archives import extract, unsafe_name
from srpkd.data.datasets import AlignedDataset, UnalignedDataset
from srpkd.data.images import to_tensor
from srpkd.errors import SrpkdError


# ----------------------------------------------------------------------------- the host


class Host(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: list[int] = []  # for each of the next requests, break the body off after this many bytes
    honour_ranges = True
    requests: list[dict] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Host.requests.append({"path": self.path, "range": self.headers.get("Range"),
                              "if_range": self.headers.get("If-Range")})
        data = Host.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and Host.honour_ranges:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if Host.cut_after:
            body = body[: Host.cut_after.pop(0)]
        self.wfile.write(body)


@pytest.fixture
def host():
    Host.files, Host.cut_after, Host.honour_ranges, Host.requests = {}, [], True, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ----------------------------------------------------------------------------- archives


def png(w: int, h: int, seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def pix2pix_members(name="facades") -> dict[str, bytes]:
    return {f"{name}/{split}/{i}.png": png(64, 32, 10 * k + i)
            for k, (split, n) in enumerate((("train", 3), ("val", 1), ("test", 2))) for i in range(n)}


def cyclegan_members(name="horse2zebra") -> dict[str, bytes]:
    return {f"{name}/{split}/{i}.png": png(32, 32, 10 * k + i)
            for k, (split, n) in enumerate((("trainA", 3), ("trainB", 2), ("testA", 1), ("testB", 1)))
            for i in range(n)}


def tar_gz(members: dict[str, bytes], links: dict[str, tuple[str, bytes]] | None = None) -> bytes:
    """A .tar.gz of files; ``links``: name -> (kind SYMTYPE/LNKTYPE, target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


P2P = "/pix2pix/datasets/facades.tar.gz"
CG = "/cyclegan/datasets/horse2zebra.zip"


def download(host: str, root: Path, name: str = "facades", *extra: str) -> list[str]:
    return ["data", "download", name, str(root), "--host", host, "-q", *extra]


def one_error(capsys, rc: int) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("srpkd: error: "), err
    return lines[0]


def no_leftovers(parent: Path, keep: tuple[str, ...] = ()) -> None:
    hidden = sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and p.name not in keep)
    assert not hidden, hidden


# ----------------------------------------------------------------------------- downloads


def test_download_pix2pix_dataset(host, tmp_path, capsys):
    members = pix2pix_members()
    Host.files[P2P] = tar_gz(members)
    root = tmp_path / "datasets" / "facades"
    assert main(download(host, root)) == 0
    out = capsys.readouterr().out
    assert "train 3, val 1, test 2" in out and "--mode aligned" in out
    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "val"]
    assert (root / "train" / "0.png").read_bytes() == members["facades/train/0.png"]
    ds = AlignedDataset(root, "test", "BtoA")
    assert len(ds) == 2 and ds[0]["A"].shape == (3, 32, 32)
    no_leftovers(root.parent)  # archive, .part and staging folder gone
    assert [r["range"] for r in Host.requests] == [None]


def test_download_cyclegan_dataset_checks_size_and_sha256(host, tmp_path, capsys, monkeypatch):
    data = zip_bytes(cyclegan_members())
    Host.files[CG] = data
    known = catalog.Archive("cyclegan/horse2zebra", "cyclegan", "unaligned", len(data),
                            hashlib.sha256(data).hexdigest(), "test")
    monkeypatch.setitem(catalog.ARCHIVES, "cyclegan/horse2zebra", known)
    root = tmp_path / "h2z"
    assert main(download(host, root, "horse2zebra", "--keep-archive")) == 0
    assert "trainA 3, trainB 2, testA 1, testB 1" in capsys.readouterr().out
    assert len(UnalignedDataset(root, "train")) == 3
    assert (tmp_path / ".h2z.horse2zebra.zip").read_bytes() == data  # --keep-archive


def test_known_size_mismatch_is_refused_before_downloading(host, tmp_path, capsys, monkeypatch):
    Host.files[CG] = zip_bytes(cyclegan_members())
    monkeypatch.setitem(catalog.ARCHIVES, "cyclegan/horse2zebra",
                        catalog.Archive("cyclegan/horse2zebra", "cyclegan", "unaligned", 123, None, "test"))
    line = one_error(capsys, main(download(host, tmp_path / "h2z", "horse2zebra")))
    assert "123" in line and "expected" in line
    assert not (tmp_path / "h2z").exists()
    assert not any(p.name.endswith(".part") and p.stat().st_size for p in tmp_path.iterdir())
    assert main(download(host, tmp_path / "h2z", "horse2zebra", "--no-verify")) == 0  # a re-packed mirror


def test_checksum_mismatch_deletes_the_download(host, tmp_path, capsys, monkeypatch):
    data = zip_bytes(cyclegan_members())
    Host.files[CG] = data
    monkeypatch.setitem(catalog.ARCHIVES, "cyclegan/horse2zebra",
                        catalog.Archive("cyclegan/horse2zebra", "cyclegan", "unaligned", len(data), "0" * 64, "test"))
    line = one_error(capsys, main(download(host, tmp_path / "h2z", "horse2zebra")))
    assert "SHA-256" in line and "damaged" in line
    assert not (tmp_path / "h2z").exists()
    no_leftovers(tmp_path)


def test_an_interrupted_transfer_resumes_with_a_range_request(host, tmp_path, capsys):
    data = tar_gz(pix2pix_members())
    Host.files[P2P] = data
    Host.cut_after = [1000, 500]  # two broken transfers, then a whole one
    root = tmp_path / "facades"
    assert main(download(host, root)) == 0
    assert [r["range"] for r in Host.requests] == [None, "bytes=1000-", "bytes=1500-"]
    assert all(r["if_range"] == '"v1"' for r in Host.requests[1:])
    assert (root / "test" / "1.png").is_file()


def test_a_second_run_resumes_what_the_first_left(host, tmp_path, capsys):
    Host.files[P2P] = tar_gz(pix2pix_members())
    Host.cut_after = [700]
    root = tmp_path / "facades"
    line = one_error(capsys, main(download(host, root, "facades", "--retries", "0")))
    assert "700 bytes are kept" in line and "run the same command again" in line
    assert (tmp_path / ".facades.facades.tar.gz.part").stat().st_size == 700 and not root.exists()
    assert main(download(host, root)) == 0
    assert Host.requests[-1]["range"] == "bytes=700-"
    assert len(AlignedDataset(root, "train")) == 3
    no_leftovers(tmp_path)


def test_a_server_that_ignores_ranges_sends_the_whole_file_again(host, tmp_path):
    Host.files[P2P] = tar_gz(pix2pix_members())
    Host.cut_after = [900]
    Host.honour_ranges = False
    assert main(download(host, tmp_path / "facades")) == 0
    assert len(AlignedDataset(tmp_path / "facades", "train")) == 3


def test_a_truncated_archive_is_refused_and_deleted(host, tmp_path, capsys):
    data = tar_gz(pix2pix_members())
    Host.files[P2P] = data[: len(data) // 2]  # served whole: only the archive itself shows the damage
    line = one_error(capsys, main(download(host, tmp_path / "facades")))
    assert "damaged or truncated" in line and "the archive was deleted" in line
    assert not (tmp_path / "facades").exists()
    no_leftovers(tmp_path)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "zip_dotdot", "zip_symlink"])
def test_a_hostile_archive_is_refused_whole(host, tmp_path, capsys, kind):
    members = pix2pix_members()
    if kind == "dotdot":
        archive, path = tar_gz({**members, "facades/../../escaped.txt": b"owned"}), P2P
    elif kind == "absolute":
        archive, path = tar_gz({**members, str(tmp_path / "escaped.txt"): b"owned"}), P2P
    elif kind == "symlink":
        archive, path = tar_gz(members, {"facades/train/link.png": (tarfile.SYMTYPE, "/etc/passwd")}), P2P
    elif kind == "hardlink":
        archive, path = tar_gz(members, {"facades/train/hard.png": (tarfile.LNKTYPE, "/etc/passwd")}), P2P
    elif kind == "zip_dotdot":
        archive, path = zip_bytes({**cyclegan_members(), "../escaped.txt": b"owned"}), CG
    else:
        archive, path = zip_bytes(cyclegan_members(), {"horse2zebra/trainA/link.png": "/etc/passwd"}), CG
    Host.files[path] = archive
    name = "facades" if path == P2P else "cyclegan/horse2zebra"
    rc = main(download(host, tmp_path / "sub" / "ds", name, "--no-verify"))
    line = one_error(capsys, rc)
    assert "refusing" in line and "nothing was extracted" in line
    assert not (tmp_path / "sub" / "ds").exists() and not (tmp_path / "escaped.txt").exists()
    assert not list(tmp_path.rglob("escaped.txt")) and not list(tmp_path.rglob("*link*.png"))
    no_leftovers(tmp_path / "sub")


def test_download_refusals(host, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    assert "not empty" in one_error(capsys, main(download(host, tmp_path / "full")))
    assert "unknown dataset" in one_error(capsys, main(download(host, tmp_path / "a", "horse3zebra")))
    assert "HTTP 404" in one_error(capsys, main(download(host, tmp_path / "b", "night2day")))
    assert "cityscapes-dataset.com" in one_error(capsys, main(download(host, tmp_path / "c", "cityscapes")))
    assert (tmp_path / "full" / "x").read_text() == "mine"


def test_unsafe_names():
    assert unsafe_name("facades/train/1.jpg") is None
    for bad in ("../x", "a/../../x", "/etc/passwd", "a\\..\\..\\x", "C:/x", ""):
        assert unsafe_name(bad), bad


def test_extract_needs_a_known_archive_type(tmp_path):
    (tmp_path / "a.rar").write_bytes(b"x")
    with pytest.raises(SrpkdError, match="not an archive"):
        extract(tmp_path / "a.rar", tmp_path / "out")


def test_every_catalogue_url_is_on_the_original_host():
    for archive in catalog.ARCHIVES.values():
        url = archive.url(catalog.DEFAULT_HOST)
        assert url.startswith("http://efrosgans.eecs.berkeley.edu/") and archive.stem in url
    assert catalog.find("facades").family == "pix2pix" and catalog.find("horse2zebra").family == "cyclegan"
    assert catalog.find("cyclegan/facades").layout == "unaligned"


# ----------------------------------------------------------------------------- combine


def _folder(root: Path, names: dict[str, tuple[int, int]], seed: int) -> None:
    for i, (rel, (w, h)) in enumerate(names.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(w, h, seed + i))


def test_combine_builds_pairs_srpkd_reads(tmp_path, capsys):
    _folder(tmp_path / "A", {"train/1.png": (16, 16), "train/2.png": (16, 16), "train/3.png": (16, 16),
                             "test/9.png": (16, 16)}, 0)
    _folder(tmp_path / "B", {"train/1.png": (16, 16), "train/2.png": (16, 16), "test/9.png": (16, 16)}, 50)
    assert main(["data", "combine", str(tmp_path / "A"), str(tmp_path / "B"), str(tmp_path / "AB")]) == 0
    out = capsys.readouterr().out
    assert "train: 2 pairs (1 images without a counterpart skipped)" in out and "test: 1 pairs" in out
    ds = AlignedDataset(tmp_path / "AB", "train")
    assert len(ds) == 2
    item = ds[0]
    assert torch.equal(item["A"], to_tensor(Image.open(tmp_path / "A" / "train" / "1.png")))
    assert torch.equal(item["B"], to_tensor(Image.open(tmp_path / "B" / "train" / "1.png")))
    again = main(["data", "combine", str(tmp_path / "A"), str(tmp_path / "B"), str(tmp_path / "AB")])
    assert "exists" in one_error(capsys, again)


def test_combine_flat_folders_with_resize(tmp_path, capsys):
    _folder(tmp_path / "A", {"x.jpg": (40, 30)}, 0)
    _folder(tmp_path / "B", {"x.png": (20, 20)}, 1)
    args = ["data", "combine", str(tmp_path / "A"), str(tmp_path / "B"), str(tmp_path / "AB")]
    assert "--size" in one_error(capsys, main(args))
    assert main(args + ["--size", "24", "--split", "val"]) == 0
    with Image.open(tmp_path / "AB" / "val" / "x.jpg") as img:
        assert img.size == (48, 24) and img.format == "JPEG"


def test_an_archive_larger_than_the_free_space_is_refused_and_kept(host, full_disk, capsys):
    """A real 16 MiB tmpfs: the archive (a few KiB) downloads, but it unpacks to 24 MiB; refused before
    anything is written, and the sound archive is kept, so the rerun after space was freed needs no download."""
    Host.files[P2P] = tar_gz({**pix2pix_members(), "facades/train/zeros.bin": bytes(24 * 2**20)})
    root = full_disk.path / "facades"
    line = one_error(capsys, main(download(host, root, "facades", "--no-verify")))
    assert "unpacks to 24.0 MiB" in line and "nothing was extracted" in line and "was kept" in line, line
    assert not root.exists()
    no_leftovers(full_disk.path, keep=(".facades.facades.tar.gz",))  # the download; no staging folder
    # the rerun extracts the kept archive (refused again, still no room) without asking the host for it
    served = len(Host.requests)
    assert "unpacks to 24.0 MiB" in one_error(capsys, main(download(host, root, "facades", "--no-verify")))
    assert len(Host.requests) == served and (full_disk.path / ".facades.facades.tar.gz").is_file()
