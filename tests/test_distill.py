"""KD terms: built by tap name, checked by a dry run, in the generator loss; the teacher stays frozen; caching."""
from __future__ import annotations

import os
import subprocess

import pytest
import torch

from srpkd import SrpkdError, create_generator
from srpkd.cli.main import main
from srpkd.config import load_config
from srpkd.distill import KDTerms, TapMismatch, TeacherOutput
from srpkd.losses.relation import relation_sq_norms
from srpkd.train.data import collate, iterate
from srpkd.train.loop import Trainer
from train_helpers import tiny_teacher

BASE = ["student.ngf=4", "discriminator.ndf=8", "discriminator.n_layers=2", "data.crop_size=32", "data.max_images=4",
        "optim.batch_size=2", "optim.steps=3", "eval_images=2", "log_every=1", "deterministic=true",
        "student.derive=none"]  # the tiny teachers have 6 blocks; test_derive covers the main preset's derived start


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
    assert set(losses) == {"kd", "srp", "feat", "sp", "at", "perc"}  # perc: the preset's perceptual KD
    sum(losses.values()).backward()
    assert kd.adapters["encoder"].weight.grad is not None


def test_perceptual_kd_term_trains_the_student_and_stays_out_of_the_state(tmp_path):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    tr = _trainer(tmp_path, teacher, "loss.perc=1", "loss.perc_crop=32")
    losses = tr.train_step(_batch(tr), 0)
    assert losses["perc"] > 0
    kd = tr.task.student.kd
    assert not any("lins" in k or "net." in k for k in kd.state_dict())  # the frozen ST-LPIPS is not saved
    t, s = create_generator("resnet_6blocks", ngf=8), create_generator("resnet_9blocks", ngf=4)
    with pytest.raises(SrpkdError, match="perc_crop is 16: ST-LPIPS needs at least 32 px"):
        KDTerms(load_config("main", ["loss.perc=1", "loss.perc_crop=16"]).loss, t, s)
    off = KDTerms(load_config("main", ["loss.perc=0", "loss.perc_crop=16", "loss.srp=0", "loss.feat=0"]).loss, t, s)
    assert set(off(torch.zeros(1, 3, 32, 32), {}, torch.zeros(1, 3, 32, 32), {})) == {"kd"}  # weight 0: off


def test_colour_kd_term_trains_the_student_and_checks_its_pool(tmp_path):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    tr = _trainer(tmp_path, teacher, "loss.colour=10", "loss.colour_pool=8")
    before = {k: v.clone() for k, v in tr.G.state_dict().items()}
    losses = tr.train_step(_batch(tr), 0)
    assert losses["colour"] > 0 and any(not torch.equal(before[k], v) for k, v in tr.G.state_dict().items())
    t, s = create_generator("resnet_6blocks", ngf=8), create_generator("resnet_9blocks", ngf=4)
    with pytest.raises(SrpkdError, match="loss.colour_pool is -1"):
        KDTerms(load_config("main", ["loss.colour=1", "loss.colour_pool=-1"]).loss, t, s)


def test_factorized_feature_kd_gives_the_direct_losses_and_gradients_on_real_networks():
    """loss.feat_method: the same weighted term and the same gradients on student and adapters (float32 rounding)."""
    torch.manual_seed(0)
    t = create_generator("resnet_6blocks", ngf=8).eval()
    x = torch.randn(2, 3, 32, 32)
    taps = ["encoder", "body", "up1", "up2"]
    with torch.no_grad():
        to, tf = t(x, taps=taps)
    got = {}
    for method in ("direct", "factorized"):
        torch.manual_seed(1)  # same student and adapters for both
        s = create_generator("resnet_9blocks", ngf=4)
        kd = KDTerms(load_config("main", ["loss.srp=0", f"loss.feat_method={method}",
                                          f"loss.feat_taps=[{', '.join(taps)}]"]).loss, t, s)
        so, sf = s(x, taps=taps)
        losses = kd(so, sf, to, tf)
        losses["feat"].backward()
        params = [*s.named_parameters(), *kd.adapters.named_parameters()]
        got[method] = (losses["feat"].detach(), {n: p.grad.clone() for n, p in params if p.grad is not None})
    (ld, gd), (lf, gf) = got["direct"], got["factorized"]
    torch.testing.assert_close(lf, ld, rtol=1e-5, atol=0)
    assert gd.keys() == gf.keys() and len(gd) > 40
    scale = max(g.abs().max().item() for g in gd.values())  # biases before an instance norm get ~0: noise only
    for name in gd:
        torch.testing.assert_close(gf[name], gd[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


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
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    losses, outputs = {}, {}
    for cache in (True, False):
        tr = _trainer(tmp_path, teacher, f"cache_teacher={str(cache).lower()}", "loss.srp=1000", "loss.feat=1",
                      name=f"c{cache}")
        line = tr.prepare_cache()
        assert line.startswith("teacher cache: on" if cache else "teacher cache: off")
        it = iterate(tr.data, 2, tr.cfg.seed, 0, 0, 1)
        losses[cache] = [tr.train_step(next(it)[1], step) for step in range(3)]
        with torch.no_grad():
            outputs[cache] = tr.G.eval()(x)
    # The cache is filled in chunks of 8 in index order, training batches are 2 in shuffled order: a sample's
    # teacher output can differ in the last bits with the batch it is computed in. Compared: every loss of every
    # step and the trained student's output, not its weights: a convolution's bias just before an instance norm
    # has no gradient but rounding noise, which Adam scales up to a full learning-rate step (up to 4e-3 apart
    # after three steps on an AVX2 CPU, without any effect on the output, which the norm takes the bias out of).
    for a, b in zip(losses[True], losses[False]):
        assert a.keys() == b.keys() and a == pytest.approx(b, rel=1e-4, abs=1e-6)
    torch.testing.assert_close(outputs[True], outputs[False], rtol=0, atol=2e-4)


def test_random_data_is_never_cached(tmp_path):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    tr = _trainer(tmp_path, teacher, "data.fixed_crops=false", "cache_teacher=true")
    assert tr.prepare_cache().startswith("teacher cache: off (the training transform is random")
    assert tr.teacher.cache is None


def _losses(tr, steps):
    it = iterate(tr.data, 2, tr.cfg.seed, 0, 0, 1)
    return [tr.train_step(next(it)[1], step) for step in range(steps)]


def test_draw_cache_matches_no_cache_in_its_first_draws(tmp_path):
    """cache_draws K: the first K epochs draw the same crops as without it; the teacher's view differs only by
    the float16 rounding of the stored images and features."""
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    random = ["data.fixed_crops=false", "data.flip=true", "loss.srp=1000", "loss.feat=1"]
    plain = _trainer(tmp_path, teacher, *random, name="plain")
    drawn = _trainer(tmp_path, teacher, *random, "cache_draws=2", name="drawn")
    assert plain.prepare_cache().startswith("teacher cache: off")
    assert drawn.prepare_cache().startswith("teacher cache: 2 draws x 4 items")
    a, b = _losses(plain, 4), _losses(drawn, 4)  # 2 batches per epoch: epochs 0 and 1
    for step, (la, lb) in enumerate(zip(a, b)):
        assert la.keys() == lb.keys()
        for k in la:  # the first step sees the rounding alone; Adam then carries it into the weights
            assert lb[k] == pytest.approx(la[k], rel=2e-3 if step == 0 else 3e-2, abs=1e-6), (step, k)
    assert bool(drawn.teacher.draws.filled.all())


def test_draw_cache_repeats_the_draws_and_runs_the_teacher_once_per_slot(tmp_path, monkeypatch):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    tr = _trainer(tmp_path, teacher, "data.fixed_crops=false", "data.flip=true", "cache_draws=2", "loss.srp=1000")
    tr.prepare_cache()
    for i in range(4):
        e0, e2, e1 = tr.data[(0, i)], tr.data[(2, i)], tr.data[(1, i)]
        assert torch.equal(e0["A"], e2["A"]) and e0["draw"] == e2["draw"] == 0 and e1["draw"] == 1
        assert not torch.equal(e0["A"], e1["A"])  # another crop / flip
    computed = []
    real = type(tr.teacher).compute
    monkeypatch.setattr(type(tr.teacher), "compute", lambda self, x: computed.append(len(x)) or real(self, x))
    _losses(tr, 8)  # 4 epochs of 2 batches: the teacher runs in epochs 0 and 1 only
    assert computed == [2, 2, 2, 2]
    slots = tr.teacher.draws
    x = collate([tr.data[(3, i)] for i in range(2)])
    direct = tr.teacher.compute(x["A"])
    cached = tr.teacher(x["A"], x["index"], x["draw"])
    torch.testing.assert_close(cached.out, direct.out, rtol=0, atol=2e-3)  # float16 on [-1, 1]
    for k in cached.feats:
        torch.testing.assert_close(cached.feats[k], direct.feats[k], rtol=2e-3, atol=2e-3)
    assert slots.bytes_per_slot > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_draw_cache_on_a_full_disk_is_one_line_and_leaves_no_files(tmp_path, capsys):
    """A real 512 KiB tmpfs: the run folder fits, the draw cache (100 draws) does not."""
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        code = main(["distill", "--teacher", str(teacher), "--size", "32", "--batch-size", "2", "--out-dir", str(mnt),
                     "--name", "r", "--steps", "2", "--quiet", "--set", "data.max_images=6",
                     "--set", "data.fixed_crops=false", "--set", "cache_draws=100", "--set", "threads=1",
                     "--set", "student.ngf=4", "--set", "discriminator.ndf=8", "--set", "student.derive=none"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, err
        assert err[-1].startswith("srpkd: error: cannot create the teacher cache in ") and "No space left" in err[-1]
        assert "Traceback" not in "\n".join(err)
        assert not list((mnt / "r" / "teacher_cache").rglob("*.bin"))
    finally:
        subprocess.run(["umount", str(mnt)])


def test_bf16_training_reports_float32_figures(tmp_path):
    """amp bf16 trains in bf16, but the held-out figures are those of the float32 student and teacher."""
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    tr = _trainer(tmp_path, teacher, "amp=bf16", "loss.srp=1000")
    assert tr.cfg.amp == "bf16"
    _losses(tr, 2)
    got = tr.evaluate()
    x = tr.validation.batch["A"]
    with torch.no_grad():
        was = tr.G.training
        tr.G.eval()
        s, t = tr.G(x), tr.teacher.model(x)
        tr.G.train(was)
    p = tr.validation.prefix
    assert got[p + "l1_to_teacher"] == pytest.approx(float((s - t).abs().mean()), rel=1e-5)
    assert got[p + "copy_l1_to_teacher"] == pytest.approx(float((x - t).abs().mean()), rel=1e-5)


def test_perceptual_kd_on_crops_under_32_px_is_one_line_after_the_networks_checks(tmp_path, capsys):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    rc = main(["distill", "--teacher", str(teacher), "--size", "24", "--steps", "1", "--out-dir", str(tmp_path),
               "--set", "loss.perc=1", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "24x24 training images, too small for perceptual KD (loss.perc" in err[0], err
    assert not (tmp_path / "runs").exists() and not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_teacher_view_of_a_square_crops_each_tap_at_its_stride():
    """Features that say where they come from: each tap holds its positions' full-resolution coordinates, so the
    square's view must hold exactly the square's coordinates; the relation row norms are the square's own."""
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    where = (1000 * rows + cols).expand(2, 3, 32, 32)
    feats = {"full": where, "quarter": where[..., ::4, ::4].clone(), "half": where[..., ::2, ::2].clone()}
    view = TeacherOutput(where, feats, {"quarter": relation_sq_norms(feats["quarter"])})
    sq = view.crop(8, 12, 16)
    want = where[..., 8:24, 12:28]
    assert torch.equal(sq.out, want) and torch.equal(sq.feats["full"], want)
    assert torch.equal(sq.feats["half"], want[..., ::2, ::2]) and torch.equal(sq.feats["quarter"], want[..., ::4, ::4])
    assert set(sq.sq_norms) == {"quarter"}
    torch.testing.assert_close(sq.sq_norms["quarter"], relation_sq_norms(want[..., ::4, ::4]), rtol=0, atol=0)
    with pytest.raises(SrpkdError, match="not aligned to tap 'quarter'"):
        view.crop(6, 12, 16)


def test_progressive_resolution_trains_on_aligned_squares_first_then_whole_crops(tmp_path):
    """optim.progressive_crop 16 for half of 4 steps on 32 px crops: the student sees 16 px squares in steps 0-1,
    each at a multiple of the teacher's coarsest stride (4) and with the teacher's cached view of that square,
    then the whole 32 px crops; the held-out figures stay on whole images."""
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    tr = _trainer(tmp_path, teacher, "optim.progressive_crop=16", "optim.progressive_until=0.5", "optim.steps=4",
                  "loss.srp=1000", "loss.perc=0")
    seen, kd_inputs = [], []
    tr.G.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])) if m.training else None)
    real_kd = tr.task.student.kd.forward
    tr.task.student.kd.forward = lambda s, sf, t, tf, n=None: kd_inputs.append((s, t, n)) or real_kd(s, sf, t, tf, n)
    tr.run()
    assert seen == [(16, 16), (16, 16), (32, 32), (32, 32)]
    assert [tuple(t.shape[-2:]) for _, t, _ in kd_inputs] == seen
    _, t, norms = kd_inputs[0]
    assert norms["encoder"].shape[-1] == 4 * 4  # the square's 4x4 encoder positions, not the crop's 8x8
    # the teacher's square is one of the aligned squares of a cached training image
    cached = tr.task.student.teacher.cache["out"]
    assert any(torch.equal(t[0], cached[i, :, a:a + 16, b:b + 16])
               for i in range(len(cached)) for a in range(0, 17, 4) for b in range(0, 17, 4))
    with pytest.raises(SrpkdError, match="not unpaired"):
        load_config("main", ["task=unpaired", "optim.progressive_crop=64"])


@pytest.mark.parametrize("extra, line", [
    (["optim.progressive_crop=18"], "optim.progressive_crop is 18, but"),
    (["optim.progressive_crop=8", "loss.perc=0", "loss.gan=1"], "optim.progressive_crop is 8, too small for"),
    (["optim.progressive_crop=24", "loss.perc=1"], "optim.progressive_crop is 24, too small for perceptual KD"),
])
def test_progressive_squares_that_do_not_suit_the_networks_are_one_line(tmp_path, capsys, extra, line):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    rc = main(["distill", "--teacher", str(teacher), "--size", "64", "--steps", "1", "--out-dir", str(tmp_path),
               *[a for e in extra for a in ("--set", e)], "--set", "student.ngf=4", "--set", "data.max_images=4",
               "--quiet"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and line in err[0], err
