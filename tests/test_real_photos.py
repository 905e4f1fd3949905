"""benchmarks/real_photos.py: the photo set of the real-teacher benchmarks, prepared by processes that share a folder.

Skips when ../shared/data is absent.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import srpkd_env

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import real_photos  # noqa: E402  (a benchmark module, imported by its folder like the scripts do)

needs_data = pytest.mark.skipif(not all((real_photos.SHARED / n).is_dir() for n in real_photos.NEEDS),
                                reason=f"shared data not found under {real_photos.SHARED}")

PREPARE = ("import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; import real_photos; "
           "print(real_photos.prepare_real_teacher_data(Path(sys.argv[1]), 32, 3))")


@needs_data
def test_two_processes_prepare_one_folder(tmp_path):
    # benchmarks/converged.sh starts two benchmark processes on a fresh output folder at once; before the
    # folder was built under a private name and renamed into place, the second died on the first's links
    env = srpkd_env()
    procs = [subprocess.Popen([sys.executable, "-c", PREPARE, str(tmp_path)], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert {out.strip() for out, _ in results} == {str(tmp_path / "data_32_n3")}
    root = tmp_path / "data_32_n3"
    assert (root / ".done").is_file() and sorted(os.listdir(tmp_path)) == ["data_32_n3"]  # no private copy left
    assert len(list((root / "trainA").glob("*.png"))) == 6 and (root / "trainB").resolve() == (root / "trainA")
    assert len(list((root / "valA").glob("*.png"))) == 40 and len(list((root / "testA").glob("*.png"))) > 100


@needs_data
def test_a_half_written_folder_is_rebuilt(tmp_path):
    # a process stopped before the rename (or an older version writing in place) leaves no .done
    (tmp_path / "data_32_n3" / "trainA").mkdir(parents=True)
    (tmp_path / "data_32_n3" / "trainA" / "facades_torn.png").write_bytes(b"")
    root = real_photos.prepare_real_teacher_data(tmp_path, 32, 3)
    assert (root / ".done").is_file() and not (root / "trainA" / "facades_torn.png").exists()
    assert len(list((root / "trainA").glob("*.png"))) == 6
