"""srpkd.devices.resolve_device: the one answer to --device for every command, one line when it cannot be."""
from __future__ import annotations

import pytest
import torch

from srpkd import SrpkdError
from srpkd.cli.main import main
from srpkd.devices import native_bf16, resolve_amp, resolve_device


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend to have two CUDA GPUs (resolve_device only builds torch.device objects; nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_and_auto_without_gpu(no_gpu):
    for name in ("auto", None, "", "cpu", " CPU ", torch.device("cpu")):
        assert resolve_device(name) == torch.device("cpu")


def test_gpus(two_gpus):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    # a torchrun process takes its own GPU for a bare cuda, or auto; an explicit index wins
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    with pytest.raises(SrpkdError, match=r"^--device cuda:2: there is no cuda:2 here \(CUDA GPUs: cuda:0 to cuda:1\)$"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name, message", [
    ("gpu0", "unknown --device 'gpu0'; use auto, cpu, cuda or cuda:N"),
    ("cuda:x", "unknown --device 'cuda:x'; use auto, cpu, cuda or cuda:N"),
    ("cuda", "--device cuda: no CUDA GPU is available here"),
    ("cuda:1", "--device cuda:1: no CUDA GPU is available here"),
    ("meta", "--device meta: srpkd runs on auto, cpu, cuda or cuda:N, not meta"),
])
def test_errors_are_one_line(no_gpu, name, message):
    with pytest.raises(SrpkdError) as e:
        resolve_device(name)
    assert str(e.value) == message


@pytest.mark.parametrize("argv", [
    ["eval", "run", "--device", "cuda"],
    ["profile", "--arch", "resnet_9blocks", "--size", "32", "--device", "cuda"],
    ["translate", "model.safetensors", "in.png", "out.png", "--device", "cuda"],
])
def test_every_command_says_it_the_same_way(no_gpu, argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == "srpkd: error: --device cuda: no CUDA GPU is available here"


def test_amp_auto_is_bf16_exactly_where_the_cpu_has_bf16_instructions():
    cpu = torch.device("cpu")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_bf16(cpu) == native
    assert resolve_amp("auto", cpu) == ("bf16" if native else "none")
    assert resolve_amp("none", cpu) == "none" and resolve_amp("bf16", cpu) == "bf16"
