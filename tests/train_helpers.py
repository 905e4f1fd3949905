"""Tiny configurations shared by the training tests (ngf 4-8, 32 px, ndf 8, a few steps)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from srpkd import create_generator, save_generator
from srpkd.checkpoint import load_tensors
from srpkd.models import init_weights

TINY = [
    "--set", "student.ngf=4", "--set", "discriminator.ndf=8", "--set", "discriminator.n_layers=2",
    "--set", "log_every=1", "--set", "eval_images=2", "--set", "threads=1", "--quiet",
    # the GAN term on from the first step: the main preset has none, and its KD-only warm-up would hide it for
    # a few steps; the tests cover the discriminator's paths (its updates, checkpoints and resume)
    "--set", "loss.gan=1", "--set", "loss.gan_start=0",
    # a random start: the main preset derives its student from the teacher, which the tiny teachers (6 blocks)
    # do not allow; test_derive covers the derived start
    "--set", "student.derive=none",
    "--set", "profile_runtimes=[eager]",  # the end-of-run ONNX latency exports twice (~15 s); test_report covers it
]


def tiny_teacher(path: Path, arch: str = "resnet_6blocks", ngf: int = 8, seed: int = 0, **kw) -> Path:
    torch.manual_seed(seed)
    g = init_weights(create_generator(arch, ngf=ngf, **kw), gain=0.2)
    save_generator(g, path)
    return path


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def load_state(path: Path) -> dict[str, torch.Tensor]:
    return load_tensors(path)[0]


def assert_same_tensors(
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    prefixes=("G.", "D.", "G_B.", "D_B.", "adapters.", "optG.", "optD."),
):
    keys = [k for k in a if k.startswith(prefixes)]
    assert keys and sorted(keys) == sorted(k for k in b if k.startswith(prefixes))
    for k in keys:
        assert torch.equal(a[k], b[k]), k
