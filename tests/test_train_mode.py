"""Train-mode inference (pytorch-CycleGAN-and-pix2pix's test.py without --eval) in translate and eval."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import write_image
from PIL import Image

from srpkd import create_generator, save_generator
from srpkd.cli.main import main
from srpkd.export.onnx import export_onnx
from srpkd.metrics.evaluate import Scorer, evaluate_generator
from srpkd.metrics.fid import FeatureCache
from srpkd.models.modes import forward, train_mode_forward

pytestmark = pytest.mark.usefixtures("one_thread")


def pix2pix_unet(seed: int = 0) -> nn.Module:
    """A tiny pix2pix U-Net (BatchNorm, dropout) whose running statistics are not the defaults."""
    torch.manual_seed(seed)
    g = create_generator("unet_128", ngf=4, dropout=0.5)
    g.train()
    with torch.no_grad():
        g(torch.randn(4, 3, 128, 128) * 0.5 + 0.3)
    return g.eval()


def pix2pix_test_script(model: nn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    """What pix2pix's test.py computes without --eval: a network left in train() mode, one image at a time."""
    model = copy.deepcopy(model).train()
    outs = []
    with torch.no_grad():
        for one in x.split(1):
            torch.manual_seed(seed)
            outs.append(model(one))
    return torch.cat(outs)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_train_mode_is_the_pix2pix_test_script(images):
    g = pix2pix_unet()
    got = train_mode_forward(g, images, seed=5)
    assert torch.equal(got, pix2pix_test_script(g, images, seed=5))
    assert (got - forward(g, images, "eval")).abs().max() > 0.05  # batch statistics and dropout change the output


def test_train_mode_leaves_the_network_and_the_random_state_alone(images):
    g = pix2pix_unet()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    train_mode_forward(g, images, seed=0)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's generator is untouched
    assert not g.training and all(not m.training for m in g.modules())
    assert all(torch.equal(v, before[k]) for k, v in g.state_dict().items())  # running statistics not updated
    assert all(m.track_running_stats for m in g.modules() if isinstance(m, nn.BatchNorm2d))


def test_train_mode_output_of_an_image_does_not_depend_on_its_batch(images):
    g = pix2pix_unet()
    together = train_mode_forward(g, images, seed=3)
    alone = train_mode_forward(g, images[1:2], seed=3)
    assert torch.equal(together[1:2], alone)
    assert not torch.equal(train_mode_forward(g, images[1:2], seed=4), alone)  # the seed draws the dropout masks


def test_train_mode_equals_eval_mode_without_batchnorm_and_dropout():
    torch.manual_seed(0)
    g = create_generator("resnet_9blocks", ngf=4)  # CycleGAN: InstanceNorm, no dropout
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(train_mode_forward(g, x), forward(g, x, "eval"), atol=1e-5)  # batch-size rounding only


def _png(path, seed):
    return write_image(path, 128, 128, seed=seed)


def _read(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_translate_train_mode(tmp_path, capsys):
    g = pix2pix_unet()
    save_generator(g, tmp_path / "g.safetensors")
    _png(tmp_path / "in" / "a.png", 1)
    _png(tmp_path / "in" / "b.png", 2)
    ckpt, src = str(tmp_path / "g.safetensors"), str(tmp_path / "in")
    assert main(["translate", ckpt, src, str(tmp_path / "eval")]) == 0
    assert main(["translate", ckpt, src, str(tmp_path / "train"), "--train-mode", "--batch", "2"]) == 0
    assert main(["translate", ckpt, src, str(tmp_path / "again"), "--train-mode"]) == 0
    assert "train mode" in capsys.readouterr().out
    for name in ("a.png", "b.png"):
        x = torch.from_numpy(_read(tmp_path / "in" / name).astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
        ref = ((pix2pix_test_script(g, x, seed=0)[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
        train = _read(tmp_path / "train" / name)
        assert np.abs(train - ref).max() <= 1  # the reference, up to rounding
        assert np.array_equal(train, _read(tmp_path / "again" / name))  # batch 2 == batch 1, repeatable
        assert np.abs(train - _read(tmp_path / "eval" / name)).max() > 10


def test_translate_train_mode_refuses_an_export(tmp_path, capsys):
    g = pix2pix_unet()
    export_onnx(g, tmp_path / "g.onnx", size=(128, 128))
    _png(tmp_path / "in" / "a.png", 1)
    rc = main(["translate", str(tmp_path / "g.onnx"), str(tmp_path / "in"), str(tmp_path / "out"), "--train-mode"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("srpkd: error: ") and "g.onnx" in err and "eval mode" in err
    assert not (tmp_path / "out").exists()


class StubFeatures(nn.Module):
    extractor_id = "stub-avgpool4"

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 4).flatten(1)


def test_eval_train_mode_scores_the_train_mode_outputs(tmp_path):
    for i in range(2):
        write_image(tmp_path / "data" / "test" / f"{i}.png", 256, 128, seed=i)
    scorer = Scorer(extractor=StubFeatures(), cache=FeatureCache(tmp_path / "cache"), batch=2, progress=False,
                    perceptual=False)
    student, teacher = pix2pix_unet(0), pix2pix_unet(1)
    common = dict(task="paired", mode="aligned", root=tmp_path / "data", size=128, teacher=teacher, scorer=scorer)
    in_eval = evaluate_generator(student, **common)
    in_train = evaluate_generator(student, network_mode="train", seed=0, **common)
    assert in_eval["network_mode"] == "eval" and in_train["network_mode"] == "train" and in_train["seed"] == 0
    assert in_train["student"]["psnr"] != pytest.approx(in_eval["student"]["psnr"])
    assert in_train["fidelity"]["l1"] != pytest.approx(in_eval["fidelity"]["l1"])
    assert evaluate_generator(student, network_mode="train", seed=0, **common)["student"]["psnr"] == pytest.approx(
        in_train["student"]["psnr"])  # repeatable


def test_eval_cli_train_mode(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("srpkd.metrics.evaluate.inception", lambda device="cpu": StubFeatures())
    for i in range(2):
        write_image(tmp_path / "data" / "test" / f"{i}.png", 256, 128, seed=i)
    save_generator(pix2pix_unet(), tmp_path / "g.safetensors")
    rc = main(["eval", str(tmp_path / "g.safetensors"), "--data", str(tmp_path / "data"), "--mode", "aligned",
               "--size", "128", "--teacher", "none", "-q", "--no-cache", "--no-perceptual", "--train-mode"])
    out = capsys.readouterr().out
    assert rc == 0 and "train mode" in out
    metrics = json.loads((tmp_path / "g.metrics.json").read_text())
    assert metrics["directions"]["AtoB"]["network_mode"] == "train"
