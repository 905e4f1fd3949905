import json

import pytest
import safetensors.torch
import torch

from srpkd import SrpkdError, create_discriminator, create_generator, list_models, load_generator, save_generator
from srpkd.checkpoint import load_tensors, save_tensors
from srpkd.cli.main import main
from srpkd.models import count_macs, count_params, norm_layer
from srpkd.models.base import InstanceNorm2d, ReflectionPad2d

GENERATORS = [
    "resnet_9blocks", "resnet_6blocks", "skip_resnet_9blocks", "mobile_resnet_9blocks", "unet_128", "unet_256"
]


# every network at 64/128/256 px, except U-Nets below their bottleneck's size (2^num_downs)
SHAPE_CASES = [
    (a, s)
    for a in GENERATORS
    for s in (64, 128, 256)
    if not (a == "unet_128" and s < 128 or a == "unet_256" and s < 256)
]


@pytest.mark.parametrize("arch,size", SHAPE_CASES)
def test_generator_shapes(arch, size):
    g = create_generator(arch, ngf=4).eval()
    assert size % g.size_multiple == 0
    with torch.no_grad():
        out = g(torch.randn(1, 3, size, size))
    assert out.shape == (1, 3, size, size)
    assert out.abs().max() <= 1.0  # tanh


@pytest.mark.parametrize("arch", GENERATORS)
def test_taps_named_and_shaped(arch):
    g = create_generator(arch, ngf=4).eval()
    size = max(64, g.size_multiple)
    x = torch.randn(2, 3, size, size)
    out, feats = g(x, taps=g.tap_names)
    assert set(feats) == set(g.tap_names)
    for name, f in feats.items():
        assert f.shape[0] == 2 and f.shape[1] == g.channels_of(name), name
    # the image is the same whether or not taps are asked for
    torch.testing.assert_close(out, g(x))
    assert torch.equal(feats["encoder"], feats[g.resolve_tap("encoder")])


def test_resnet_tap_layout():
    g = create_generator("resnet_9blocks", ngf=8)
    _, feats = g(torch.randn(1, 3, 64, 64), taps=["encoder", "block1", "block9", "up2"])
    assert feats["encoder"].shape == (1, 32, 16, 16)
    assert feats["block9"].shape == (1, 32, 16, 16)
    assert feats["up2"].shape == (1, 8, 64, 64)
    # "body" names the last residual block whatever the depth
    for arch, last in (("resnet_9blocks", "block9"), ("resnet_6blocks", "block6")):
        g = create_generator(arch, ngf=4)
        _, feats = g(torch.randn(1, 3, 32, 32), taps=["body", last])
        assert torch.equal(feats["body"], feats[last])


def test_unet_encoder_level_is_configurable():
    g = create_generator("unet_256", ngf=4, encoder_level=2)
    _, feats = g(torch.randn(1, 3, 256, 256), taps=["encoder", "down8"])
    assert feats["encoder"].shape == (1, 8, 64, 64)
    assert feats["down8"].shape == (1, 32, 1, 1)


def test_unet_size_multiple_is_its_bottleneck_stride():
    assert create_generator("unet_256", ngf=4).size_multiple == 256
    assert create_generator("unet_128", ngf=4).size_multiple == 128


def test_unknown_tap_and_arch_errors():
    g = create_generator("resnet_6blocks", ngf=4)
    with pytest.raises(SrpkdError, match="no feature tap 'block7'.*available: stem"):
        g(torch.randn(1, 3, 32, 32), taps=["block7"])
    with pytest.raises(SrpkdError, match="unknown generator architecture 'resnet_99'"):
        create_generator("resnet_99")
    with pytest.raises(SrpkdError, match="bad arguments"):
        create_generator("resnet_9blocks", wings=2)
    with pytest.raises(SrpkdError, match="unknown norm"):
        create_generator("resnet_9blocks", norm="layer")
    assert "patchgan" in list_models("discriminator")


def test_norm_variants_and_dropout():
    g = create_generator("resnet_6blocks", ngf=4, norm="instance_affine", dropout=0.5)
    assert any(isinstance(m, torch.nn.Dropout) for m in g.modules())
    assert any(isinstance(m, torch.nn.InstanceNorm2d) and m.affine for m in g.modules())
    b = create_generator("resnet_6blocks", ngf=4, norm="batch")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in b.modules())


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_norm_fast_path_equals_torch_instance_norm(affine, channels_last):
    """The group-norm form of instance norm: same output and gradients as nn.InstanceNorm2d (float rounding)."""
    torch.manual_seed(0)
    fast = InstanceNorm2d(8, affine=affine)
    ref = torch.nn.InstanceNorm2d(8, affine=affine)
    if affine:
        torch.nn.init.normal_(fast.weight, 1.0, 0.5), torch.nn.init.normal_(fast.bias, 0.0, 0.5)
        ref.load_state_dict(fast.state_dict())
    x = (3 * torch.randn(2, 8, 12, 10) + 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    g = torch.randn(2, 8, 12, 10)
    outs = [m(xi) for m, xi in zip((fast, ref), xs)]
    for o in outs:
        (o * g).sum().backward()
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-5, atol=1e-5)
    if affine:
        torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert isinstance(norm_layer("instance", 4), InstanceNorm2d)


@pytest.mark.parametrize("padding", [1, 3, (0, 2, 1, 0), (2, 1, 3, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reflection_pad_from_slices_equals_torch_reflection_pad(padding, dtype):
    """While autograd records: the same values bit for bit, and the same gradients (sums of two or four terms)."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 6).to(dtype)
    fast, ref = ReflectionPad2d(padding), torch.nn.ReflectionPad2d(padding)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = [m(xi) for m, xi in zip((fast, ref), xs)]
    assert outs[0].grad_fn.name() == "CatBackward0" and outs[1].grad_fn.name() == "ReflectionPad2DBackward0"
    assert torch.equal(outs[0], outs[1])
    g = torch.randn(outs[1].shape).to(dtype)
    for o in outs:
        o.backward(g)
    torch.testing.assert_close(xs[0].grad.float(), xs[1].grad.float(), rtol=0, atol=0.05 if dtype == torch.bfloat16
                               else 1e-6)
    with torch.no_grad():  # inference: torch's own pad
        assert torch.equal(fast(x), ref(x))
    with pytest.raises(RuntimeError, match="Padding size should be less than"):
        fast(torch.randn(1, 1, 2, 2, requires_grad=True) if max(fast.padding) >= 2 else torch.randn(1, 1, 1, 1,
                                                                                                       requires_grad=True))


def test_mobile_uses_depthwise_convolutions():
    g = create_generator("mobile_resnet_9blocks", ngf=16)
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups == 64 for m in g.modules())
    assert count_params(g) < count_params(create_generator("resnet_9blocks", ngf=16)) / 4


def test_skip_resnet_head_sees_the_input():
    """The global-skip student is the plain ResNet plus 3 input channels at its head, and it uses them."""
    torch.manual_seed(0)
    plain, skip = create_generator("resnet_9blocks", ngf=8), create_generator("skip_resnet_9blocks", ngf=8)
    assert count_params(skip) - count_params(plain) == 3 * 3 * 7 * 7  # head: 3 more input channels, 3 outputs
    assert count_macs(skip, 64) - count_macs(plain, 64) == 3 * 3 * 7 * 7 * 64 * 64
    assert skip.tap_names == plain.tap_names
    # A global colour shift is invisible to the instance-normalised body (the plain ResNet's output does not
    # move) but reaches the skip student's output through its head.
    x = torch.rand(1, 3, 64, 64) * 0.5 - 0.25
    with torch.no_grad():
        assert torch.allclose(plain(x), plain(x + 0.5), atol=1e-4)
        assert not torch.allclose(skip(x), skip(x + 0.5), atol=1e-2)


@pytest.mark.parametrize("n_layers,rf_out", [(3, 30), (2, 62)])
def test_patchgan(n_layers, rf_out):
    d = create_discriminator("patchgan", in_channels=6, ndf=8, n_layers=n_layers)
    out = d(torch.randn(2, 6, 256, 256))
    assert out.shape == (2, 1, rf_out, rf_out)


@pytest.mark.parametrize("ngf,params,macs", [(64, 11.38e6, 56.8e9), (16, 0.72e6, 3.8e9)])
def test_params_and_macs_match_the_field(ngf, params, macs):
    g = create_generator("resnet_9blocks", ngf=ngf)
    assert count_params(g) == pytest.approx(params, rel=0.01)
    assert count_macs(g, 256) == pytest.approx(macs, rel=0.01)


def test_macs_are_counted_where_the_weights_live():
    """The traced input follows the weights' device and dtype: at the end of a CUDA run the student is on
    the GPU, and a CPU input crashed its latency profile (seen on an H200); a bf16 copy is the same mismatch
    that a CPU-only machine can produce."""
    g = create_generator("resnet_9blocks", ngf=8)
    macs = count_macs(g, 64)
    assert count_macs(g.to(torch.bfloat16), 64) == macs
    assert next(g.parameters()).dtype == torch.bfloat16  # counting leaves the model as it was
    if torch.cuda.is_available():
        assert count_macs(g.float().cuda(), 64) == macs


def test_info_cli_json(capsys):
    assert main(["info", "--arch", "resnet_9blocks", "--ngf", "64", "--size", "256", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "resnet_9blocks" and info["size"] == 256
    assert info["params"] == pytest.approx(11.38e6, rel=0.01)
    assert info["macs"] == pytest.approx(56.8e9, rel=0.01)


def test_info_cli_bad_size(capsys):
    assert main(["info", "--arch", "resnet_9blocks", "--size", "30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "multiple of 4" in err


def test_checkpoint_round_trip(tmp_path, capsys):
    g = create_generator("unet_128", ngf=4, norm="instance", encoder_level=2)
    torch.nn.init.normal_(g.ups[0][1].weight)
    path = tmp_path / "g.safetensors"
    save_generator(g, path, note="hello")
    h = load_generator(path)
    assert h.arch == "unet_128" and h.arch_kwargs == g.arch_kwargs
    x = torch.randn(1, 3, 128, 128)
    torch.testing.assert_close(h(x), g.eval()(x), rtol=0, atol=0)
    assert h.checkpoint_meta["note"] == "hello"
    assert not list(tmp_path.glob("*.tmp"))
    assert main(["info", str(path), "--size", "128", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["arch"] == "unet_128"


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    g = create_generator("resnet_9blocks", ngf=8)
    path = tmp_path / "g.safetensors"
    save_generator(g, path)
    # tamper with the record: same file, claimed width 16
    tensors, meta = load_tensors(path)
    meta["kwargs"]["ngf"] = 16
    save_tensors(path, tensors, meta)
    with pytest.raises(SrpkdError, match=r"does not fit resnet_9blocks.*shape mismatches "
                                         r"\(first: stem.1.weight \(8, 3, 7, 7\) vs \(16, 3, 7, 7\)\)"):
        load_generator(path)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    g = create_generator("resnet_6blocks", ngf=4)
    path = tmp_path / "g.safetensors"
    save_generator(g, path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(SrpkdError, match="cannot write .*No space left on device"):
        save_generator(create_generator("resnet_6blocks", ngf=8), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]
