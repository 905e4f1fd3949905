"""A student derived from its teacher (student.derive ls): kept channels, least-squares refit, layer by layer."""
from __future__ import annotations

import logging

import pytest
import torch

from srpkd.cli.main import main
from srpkd.config import load_config
from srpkd.distill import check_derivable, derive_student
from srpkd.errors import SrpkdError
from srpkd.metrics.image import psnr
from srpkd.models import create_generator, init_weights
from train_helpers import read_log, tiny_teacher


def _teacher(norm="instance_affine", ngf=8):
    torch.manual_seed(0)
    t = init_weights(create_generator("resnet_9blocks", ngf=ngf, norm=norm), gain=0.2).eval()
    with torch.no_grad():  # norms with a scale and shift of their own, as a trained teacher has
        for m in t.modules():
            if getattr(m, "weight", None) is not None and m.weight.dim() == 1:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return t


def test_a_student_as_wide_as_its_teacher_becomes_the_teacher():
    """Every channel kept: each layer's least-squares refit is exact, transposed convolutions included."""
    t = _teacher()
    s = create_generator("resnet_9blocks", ngf=8, norm="instance_affine")
    x = torch.rand(16, 3, 32, 32) * 2 - 1  # 1024 positions of the 8x8 body, more than its 289 weights per channel
    fit = derive_student(t, s, x)
    assert fit["psnr_before"] < 20 and fit["psnr_after"] > 50
    held_out = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert float(psnr(s.eval()(held_out), t(held_out))) > 40  # the ridge term keeps it from exact


def _embed(small, ngf: int, seed: int = 0):
    """A wide teacher that computes what ``small`` does: ``small``'s weights on random channels of each layer
    (one set for the residual stream), every other weight zero, so its other channels stay zero."""
    g = torch.Generator().manual_seed(seed)
    big = create_generator("resnet_9blocks", ngf=ngf, norm="instance_affine").eval()
    with torch.no_grad():
        for p in big.parameters():
            p.zero_()
        for m in big.modules():  # unused channels: a zero input stays zero through (0 - 0) * 1 + 0
            if getattr(m, "weight", None) is not None and m.weight.dim() == 1:
                m.weight.fill_(1.0)

        def pick(n_small, n_big):
            return torch.randperm(n_big, generator=g)[:n_small].sort().values

        def put(b_conv, s_conv, b_norm, s_norm, cin, cout):
            w = b_conv.weight
            if isinstance(b_conv, torch.nn.ConvTranspose2d):  # (in, out, k, k)
                w[cin[:, None], cout[None, :]] = s_conv.weight
            else:
                w[cout[:, None], cin[None, :]] = s_conv.weight
            b_conv.bias[cout] = s_conv.bias
            if b_norm is not None:
                b_norm.weight[cout], b_norm.bias[cout] = s_norm.weight, s_norm.bias

        rgb = torch.arange(3)
        c = {n: pick(getattr(small, n)[0 if n != "stem" else 1].out_channels, getattr(big, n)[0 if n != "stem"
                     else 1].out_channels) for n in ("stem", "down1", "up1", "up2")}
        stream = pick(small.down2[0].out_channels, big.down2[0].out_channels)
        put(big.stem[1], small.stem[1], big.stem[2], small.stem[2], rgb, c["stem"])
        put(big.down1[0], small.down1[0], big.down1[1], small.down1[1], c["stem"], c["down1"])
        put(big.down2[0], small.down2[0], big.down2[1], small.down2[1], c["down1"], stream)
        for bb, sb in zip(big.blocks, small.blocks):
            inner = pick(sb.conv_block[1].out_channels, bb.conv_block[1].out_channels)
            put(bb.conv_block[1], sb.conv_block[1], bb.conv_block[2], sb.conv_block[2], stream, inner)
            put(bb.conv_block[5], sb.conv_block[5], bb.conv_block[6], sb.conv_block[6], inner, stream)
        put(big.up1[0], small.up1[0], big.up1[1], small.up1[1], stream, c["up1"])
        put(big.up2[0], small.up2[0], big.up2[1], small.up2[1], c["up1"], c["up2"])
        put(big.head[1], small.head[1], None, None, c["up2"], rgb)
    return big


@pytest.mark.parametrize("arch", ["resnet_9blocks", "skip_resnet_9blocks"])
def test_a_narrow_network_hidden_in_a_wide_teacher_is_found_again(arch):
    """Channel choice and refit together: a 16-wide teacher that is a 4-wide network on scattered channels
    gives back that network (held-out images), whichever channels hold it; a skip head learns to ignore the
    input it sees."""
    small = _teacher(ngf=4)
    x, held_out = torch.rand(16, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    for seed in (0, 1):
        big = _embed(small, ngf=16, seed=seed)
        with torch.no_grad():
            torch.testing.assert_close(big(held_out), small(held_out), atol=1e-5, rtol=0)
        torch.manual_seed(1)
        s = init_weights(create_generator(arch, ngf=4, norm="instance_affine"))
        fit = derive_student(big, s, x)
        with torch.no_grad():
            assert fit["psnr_after"] > 40 and float(psnr(s.eval()(held_out), small(held_out))) > 40


def test_students_that_cannot_be_derived_are_refused():
    t = _teacher()
    for s, why in [(create_generator("mobile_resnet_9blocks", ngf=4), "plain or skip ResNet"),
                   (create_generator("resnet_6blocks", ngf=4), "9 residual blocks, the student 6"),
                   (create_generator("resnet_9blocks", ngf=16), "wider than its teacher")]:
        with pytest.raises(SrpkdError, match=why):
            check_derivable(t, s)


def test_distill_with_a_derived_student_logs_its_start_and_trains(tmp_path, caplog):
    teacher = tiny_teacher(tmp_path / "t.safetensors", arch="resnet_9blocks")
    args = ["distill", "--teacher", str(teacher), "--size", "32", "--steps", "2", "--out-dir", str(tmp_path),
            "--name", "r", "--set", "student.ngf=4", "--set", "data.max_images=4", "--set", "student.derive=ls",
            "--set", "student.derive_images=3"]
    caplog.set_level(logging.INFO, logger="srpkd")
    assert main(args) == 0
    assert "student derived from the teacher on 3 training images" in caplog.text
    assert any("loss/kd" in r for r in read_log(tmp_path / "r")) and (tmp_path / "r" / "student.safetensors").exists()


def test_derive_without_a_teacher_or_with_init_is_one_line(tmp_path, capsys):
    teacher = tiny_teacher(tmp_path / "t.safetensors")  # resnet_6blocks: the student has 9 blocks
    rc = main(["distill", "--teacher", str(teacher), "--size", "32", "--steps", "1", "--out-dir", str(tmp_path),
               "--set", "student.ngf=4", "--set", "student.derive=ls", "--quiet"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "the teacher has 6 residual blocks, the student 9" in err[0], err
    assert "student.derive none starts the student from random weights" in err[0]  # the way out, named
    assert not list(tmp_path.glob("*/student.safetensors"))
    # the main preset derives its student: a start of the user's own is refused with the setting that allows it
    assert load_config("main").student.derive == "ls"
    with pytest.raises(SrpkdError, match="add --set student.derive=none to start from student.init"):
        load_config("main", ["student.init=x.safetensors"])
    assert load_config("main", ["student.init=x.safetensors", "student.derive=none"]).student.init == "x.safetensors"
