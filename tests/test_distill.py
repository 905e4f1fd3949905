"""KD terms: built by tap name, checked by a dry run, in the generator loss; the teacher stays frozen; caching."""
from __future__ import annotations

import pytest
import torch

from srpkd import SrpkdError, create_generator
from srpkd.config import load_config
from srpkd.distill import KDTerms, TapMismatch
from srpkd.train.data import collate
from srpkd.train.loop import Trainer
from train_helpers import tiny_teacher

BASE = ["student.ngf=4", "discriminator.ndf=8", "discriminator.n_layers=2", "data.crop_size=32", "data.max_images=4",
        "optim.batch_size=2", "optim.steps=3", "eval_images=2", "log_every=1", "deterministic=true"]


def _trainer(tmp_path, teacher, *extra, name="r"):
    cfg = load_config("main", [*BASE, f"teacher.checkpoint={teacher}", f"name={name}", *extra])
    return Trainer(cfg, distill=True, run_dir=tmp_path / name, quiet=True)


def _batch(tr):
    return collate([tr.data[(0, i)] for i in range(2)])


def test_srp_weight_changes_the_student_and_teacher_stays_frozen(tmp_path):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    results = {}
    for srp in (0, 1000):
        tr = _trainer(tmp_path, teacher, f"loss.srp={srp}", name=f"srp{srp}")
        t_model = tr.teacher.generator
        before = {k: v.clone() for k, v in t_model.state_dict().items()}
        losses = tr.train_step(_batch(tr), 0)
        assert ("srp" in losses) == (srp > 0)  # weight 0: not computed at all
        assert not t_model.training and all(not p.requires_grad and p.grad is None for p in t_model.parameters())
        assert all(torch.equal(before[k], v) for k, v in t_model.state_dict().items())
        results[srp] = {k: v.clone() for k, v in tr.G.state_dict().items()}
    init = _trainer(tmp_path, teacher, name="init").G.state_dict()  # same seed: same initial student
    changed0 = any(not torch.equal(init[k], results[0][k]) for k in init)
    differs = any(not torch.equal(results[0][k], results[1000][k]) for k in init)
    assert changed0 and differs


def test_kd_terms_resolve_taps_by_name_and_adapt_widths():
    t = create_generator("resnet_6blocks", ngf=8)
    s = create_generator("resnet_9blocks", ngf=4)
    cfg = load_config("main", ["loss.srp=1", "loss.feat=1", "loss.feat_taps=[encoder, block6]", "loss.at=1",
                               "loss.at_taps=[up2]", "loss.sp=1"])
    kd = KDTerms(cfg.loss, t, s)
    assert kd.tap_names == ["encoder", "block6", "up2"]
    assert kd.adapters["block6"].in_channels == 16 and kd.adapters["block6"].out_channels == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        to, tf = t(x, taps=kd.tap_names)
    so, sf = s(x, taps=kd.tap_names)
    losses = kd(so, sf, to, tf)
    assert set(losses) == {"kd", "srp", "feat", "sp", "at"}
    sum(losses.values()).backward()
    assert kd.adapters["encoder"].weight.grad is not None


def test_tap_mismatch_names_tap_and_shapes():
    cfg = load_config("main", ["loss.srp=1", "loss.feat=0"])
    t = create_generator("resnet_6blocks", ngf=8)
    with pytest.raises(TapMismatch, match=r"tap 'encoder' cannot be matched for the relation loss: teacher "
                                          r"resnet_6blocks gives \(1, 32, 32, 32\), "
                                          r"student unet_128 gives \(1, 16, 16, 16\) at 128x128"):
        KDTerms(cfg.loss, t, create_generator("unet_128", ngf=4))
    cfg = load_config("main", ["loss.srp=1", "loss.feat=0", "loss.srp_taps=[block9]"])
    with pytest.raises(SrpkdError, match="teacher resnet_6blocks has no feature tap 'block9'"):
        KDTerms(cfg.loss, t, create_generator("resnet_9blocks", ngf=4))
    # a U-Net pair matches at a configurable encoder level
    cfg = load_config("main", ["loss.srp=1", "loss.feat=0"])
    KDTerms(cfg.loss, create_generator("unet_128", ngf=8), create_generator("unet_128", ngf=4))


def test_teacher_cache_matches_no_cache(tmp_path):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    weights = {}
    for cache in (True, False):
        tr = _trainer(tmp_path, teacher, f"cache_teacher={str(cache).lower()}", "loss.srp=1000", "loss.feat=1",
                      name=f"c{cache}")
        line = tr.prepare_cache()
        assert line.startswith("teacher cache: on" if cache else "teacher cache: off")
        from srpkd.train.data import iterate

        it = iterate(tr.data, 2, tr.cfg.seed, 0, 0, 1)
        for step in range(3):
            tr.train_step(next(it)[1], step)
        weights[cache] = tr.G.state_dict()
    for k, v in weights[True].items():
        # the cache is filled in chunks of 8 in index order, training batches are 2 in shuffled order:
        # a sample's teacher output can differ in the last bits with the batch it is computed in
        torch.testing.assert_close(v, weights[False][k], rtol=1e-4, atol=1e-5)


def test_random_data_is_never_cached(tmp_path):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    tr = _trainer(tmp_path, teacher, "data.fixed_crops=false", "cache_teacher=true")
    assert tr.prepare_cache().startswith("teacher cache: off (the training transform is random")
    assert tr.teacher.cache is None
