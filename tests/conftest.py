"""Shared fixtures: tiny images and datasets, the path of ../shared/data, and a really full disk (a tmpfs)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as srpkd does; before torch loads OpenMP
# The suite is the CPU suite that CI runs: its runs use `device: auto`, and several compare bits (resume,
# the teacher cache, two ranks against one) that hold on a CPU, not across GPU kernels. On a machine with a
# GPU it is hidden (before torch initialises CUDA; subprocesses inherit it) unless SRPKD_TEST_GPU=1.
if os.environ.get("SRPKD_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

# two pytest-xdist workers (make test) share the cores: one thread each; a single process may use two
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]


def srpkd_env(**extra: str) -> dict:
    """The environment of a subprocess that runs srpkd from this tree: src first on PYTHONPATH, before what
    the caller's PYTHONPATH already holds (a machine may provide packages through it)."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


SHARED_DATA = Path(os.environ.get("SRPKD_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny networks: threads gain nothing, and on a shared machine OpenMP barriers cost seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "facades").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def write_image(path: Path, w: int, h: int, seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(path)
    return path


@pytest.fixture
def aligned_dir(tmp_path) -> Path:
    """pix2pix layout: train/ and test/ with 4 A|B images of 64x32."""
    root = tmp_path / "aligned"
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            write_image(root / split / f"{i}.jpg", 64, 32, seed=i)
    return root


@pytest.fixture
def unaligned_dir(tmp_path) -> Path:
    """CycleGAN layout: trainA/trainB/testA/testB with 32x32 images."""
    root = tmp_path / "unaligned"
    for split, n in (("trainA", 4), ("trainB", 3), ("testA", 2), ("testB", 2)):
        for i in range(n):
            write_image(root / split / f"{i}.png", 32, 32, seed=hash(split) % 1000 + i)
    return root


@pytest.fixture
def full_disk(tmp_path):
    """A 16 MiB tmpfs; ``fill()`` then takes all of its free space with a real file."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: a real full disk cannot be made here")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({r.stderr.strip() or r.returncode}): "
                    "the mocked ENOSPC rows of test_bad_input.py still run")

    class Disk:
        path = mnt

        @staticmethod
        def fill(leave: int = 0) -> None:
            """Write a filler file until the disk is full, then free ``leave`` bytes of it."""
            filler = mnt / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                while True:
                    os.write(fd, b"\0" * 65536)
            except OSError:
                pass
            finally:
                os.close(fd)
            if leave:
                os.truncate(filler, max(0, filler.stat().st_size - leave))

    yield Disk
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
