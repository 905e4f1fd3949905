"""The teacher's relation row norms, cached with the teacher, give the same relation loss and gradient."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from srpkd.distill.teacher import Teacher
from srpkd.errors import SrpkdError
from srpkd.losses import relation
from srpkd.losses.relation import relation_sq_norms, semantic_relation_loss
from srpkd.models import create_generator


@pytest.mark.parametrize("chunk", [None, 7])
def test_precomputed_teacher_norms_match(monkeypatch, chunk):
    if chunk:
        monkeypatch.setattr(relation, "CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(0)
    ft = torch.randn(3, 24, 5, 6, generator=g).relu()
    ft[0, :, 1, 2] = 0  # a dead teacher pixel
    fs = torch.randn(3, 8, 5, 6, generator=g).requires_grad_()
    ref = semantic_relation_loss(ft, fs)
    (g_ref,) = torch.autograd.grad(ref, fs)
    norms = relation_sq_norms(ft)
    assert norms.shape == (3, 30) and norms.dtype == torch.float64
    fast = semantic_relation_loss(ft, fs, teacher_sq_norms=norms)
    (g_fast,) = torch.autograd.grad(fast, fs)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-14)
    # the dense method and a teacher that needs grad ignore them
    dense = semantic_relation_loss(ft, fs, "dense", teacher_sq_norms=norms)
    torch.testing.assert_close(dense, ref, rtol=1e-9, atol=0)
    with pytest.raises(SrpkdError, match="teacher_sq_norms"):
        semantic_relation_loss(ft, fs, teacher_sq_norms=norms[:, :5])


def test_teacher_norms_gradcheck():
    g = torch.Generator().manual_seed(1)
    ft = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64)
    fs = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    norms = relation_sq_norms(ft)
    assert torch.autograd.gradcheck(lambda s: semantic_relation_loss(ft, s, teacher_sq_norms=norms), (fs,))


def test_teacher_cache_keeps_norms_for_relation_taps():
    torch.manual_seed(0)
    t = create_generator("resnet_6blocks", ngf=8)
    items = [{"A": torch.rand(3, 32, 32) * 2 - 1} for _ in range(5)]
    teacher = Teacher(t, ["encoder"], torch.device("cpu"), norm_taps=["encoder"])
    teacher.build_cache(items, chunk=2)
    idx = torch.tensor([4, 1])
    out, feats, sq_norms = teacher(None, idx)
    assert set(feats) == {"encoder"} and set(sq_norms) == {"encoder"}
    torch.testing.assert_close(sq_norms["encoder"], relation_sq_norms(feats["encoder"]), rtol=1e-12, atol=0)
    plain = Teacher(t, ["encoder"], torch.device("cpu"))
    plain.build_cache(items, chunk=2)
    assert set(plain(None, idx).feats) == {"encoder"} and not plain(None, idx).sq_norms


PEAK_SCRIPT = """
import resource, torch
from srpkd.distill.teacher import Teacher
from srpkd.models import create_generator

class Items:  # made on the fly, so that only the cache grows
    def __len__(self):
        return 300
    def __getitem__(self, i):
        return {"A": torch.full((3, 256, 256), i / 300.0)}

torch.set_num_threads(1)
teacher = Teacher(create_generator("resnet_6blocks", ngf=4), [], torch.device("cpu"))
teacher.compute(torch.stack([Items()[i]["A"] for i in range(8)]))  # the forward's own buffers, before measuring
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
teacher.build_cache(Items(), chunk=8)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown * 1024, teacher.cache["out"].numel() * teacher.cache["out"].element_size())
"""


def test_teacher_cache_fills_in_place_without_a_second_copy():
    """A real process's peak memory: filling a 225 MiB cache grows it by about the cache, not twice the cache
    (chunks concatenated at the end did, and two 800-photo runs side by side ran out of 24 GiB)."""
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, check=True)
    grown, cache = (int(v) for v in out.stdout.split())
    assert cache == 300 * 3 * 256 * 256 * 4
    assert grown < 1.3 * cache, (grown / cache)
