"""--resume continues bit for bit: N steps straight == N/2 steps, resume, N/2 steps (--deterministic, CPU)."""
from __future__ import annotations

import itertools
import os
import signal

import torch

from srpkd.cli.main import main
from srpkd.data.datasets import build_dataset
from srpkd.metrics.perceptual import stlpips
from srpkd.train.data import SeededDataset, epoch_batches, iterate
from srpkd.train.loop import Trainer
from train_helpers import TINY, assert_same_tensors, load_state, read_log, tiny_teacher


def _straight_vs_resumed(tmp_path, monkeypatch, args, n=4):
    assert main([*args, "--steps", str(n), "--name", "straight"]) == 0
    # the same n-step job (same lr schedule) interrupted by SIGTERM after n/2 steps, then resumed
    real = Trainer.train_step

    def step(self, batch, i):
        out = real(self, batch, i)
        if i == n // 2 - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", step)
        assert main([*args, "--steps", str(n), "--name", "half"]) == 128 + signal.SIGTERM
    a = load_state(tmp_path / "half" / "checkpoints" / "last.safetensors")
    assert main(["distill" if args[0] == "distill" else "train", "--resume", str(tmp_path / "half"), *TINY]) == 0
    s = load_state(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    r = load_state(tmp_path / "half" / "checkpoints" / "last.safetensors")
    assert not all(bool((a[k] == r[k]).all()) for k in a if k.startswith("G."))  # the resumed half did train
    assert_same_tensors(s, r)
    for k in s:
        if k.startswith(("pool.", "rng.")):
            assert (s[k] == r[k]).all(), k
    # the log of the resumed run has every step once
    steps = [rec["step"] for rec in read_log(tmp_path / "half") if any(x.startswith("loss/") for x in rec)]
    assert steps == list(range(1, n + 1))


def test_resume_teacher_only_random_crops(tmp_path, monkeypatch):
    """Random crops and flips (no cache), GAN, SRP, perceptual KD and feature KD with an adapter.

    The shared ST-LPIPS network is dropped first, so that the straight run builds it (perceptual KD
    loads it before the adapters are drawn) and the interrupted run reuses it: the two runs must
    still start from the same adapters, whatever ran before in this process."""
    stlpips.instances.clear()
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    args = ["distill", "--teacher", str(teacher), "--size", "32", "--batch-size", "2", "--out-dir", str(tmp_path),
            "--deterministic", "--set", "data.max_images=6", "--set", "data.fixed_crops=false",
            "--set", "data.flip=true", "--set", "loss.srp=100", "--set", "loss.feat=1", "--set", "student.dropout=0.5",
            *TINY]
    _straight_vs_resumed(tmp_path, monkeypatch, args)


def test_resume_unpaired_pools(tmp_path, monkeypatch, unaligned_dir):
    """CycleGAN: two generators, two discriminators, image pools (random draws), random B pairing and crops."""
    args = ["train", "--data", str(unaligned_dir), "--mode", "unaligned", "--task", "unpaired", "--size", "24",
            "--batch-size", "2", "--out-dir", str(tmp_path), "--deterministic", "--set", "data.load_size=28",
            "--set", "pool_size=3", *TINY]
    _straight_vs_resumed(tmp_path, monkeypatch, args)


def test_data_order_is_a_function_of_seed_and_epoch():
    a = epoch_batches(10, 3, seed=5, epoch=2, rank=0, world=1)
    assert a == epoch_batches(10, 3, seed=5, epoch=2, rank=0, world=1)
    assert a != epoch_batches(10, 3, seed=5, epoch=3, rank=0, world=1)
    r0 = epoch_batches(10, 2, seed=5, epoch=0, rank=0, world=2)
    r1 = epoch_batches(10, 2, seed=5, epoch=0, rank=1, world=2)
    assert len(r0) == len(r1) == 2
    seen = [i for b in r0 + r1 for _, i in b]
    assert len(set(seen)) == len(seen) == 8  # disjoint shards of one permutation


def test_worker_processes_draw_the_same_augmented_batches():
    """Random crops and flips depend only on (seed, epoch, index): DataLoader workers give the same batches."""
    ds = SeededDataset(build_dataset("builtin", split="train", crop_size=16, max_images=6, flip=True), seed=3)
    a = [b for _, b in itertools.islice(iterate(ds, 2, 3, 1, 0, 1, num_workers=0), 4)]
    b = [b for _, b in itertools.islice(iterate(ds, 2, 3, 1, 0, 1, num_workers=2), 4)]
    for x, y in zip(a, b):
        assert torch.equal(x["A"], y["A"]) and torch.equal(x["index"], y["index"])
    c = [b for _, b in itertools.islice(iterate(ds, 2, 3, 0, 0, 1), 5)][1:]  # from step 0, skipping the first
    assert all(torch.equal(x["A"], y["A"]) for x, y in zip(a, c))


def test_resume_before_the_first_checkpoint_starts_again(tmp_path, capsys):
    """A run killed before any checkpoint (config.yaml written, no last.safetensors) restarts from step 0."""
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    args = ["distill", "--teacher", str(teacher), "--size", "32", "--batch-size", "2", "--out-dir", str(tmp_path),
            "--deterministic", "--set", "data.max_images=4", *TINY]
    assert main([*args, "--steps", "2", "--name", "straight"]) == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    straight_config = (tmp_path / "straight" / "config.yaml").read_text()
    (killed / "config.yaml").write_text(straight_config.replace("straight", "killed"))
    (killed / "log.jsonl").write_text('{"step": 1, "loss/kd": 0.5}\n')  # a line from the lost attempt
    assert main(["distill", "--resume", str(killed), *TINY]) == 0
    assert "starting it again from step 0" in capsys.readouterr().out
    assert_same_tensors(load_state(tmp_path / "straight" / "checkpoints" / "last.safetensors"),
                        load_state(killed / "checkpoints" / "last.safetensors"))
    steps = [rec["step"] for rec in read_log(killed) if any(x.startswith("loss/") for x in rec)]
    assert steps == [1, 2]


def test_resume_with_the_draw_cache(tmp_path, monkeypatch, capsys):
    """cache_draws 2, random crops and flips: killed in epoch 1 (some slots filled, some not), resumed into epochs
    2-3 that only read the cache: bit-identical to the uninterrupted run."""
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    args = ["distill", "--teacher", str(teacher), "--size", "32", "--batch-size", "2", "--out-dir", str(tmp_path),
            "--deterministic", "--set", "data.max_images=6", "--set", "data.fixed_crops=false",
            "--set", "data.flip=true", "--set", "loss.srp=100", "--set", "loss.feat=1", "--set", "cache_draws=2",
            "--set", "ckpt_every=2", *TINY]
    _straight_vs_resumed(tmp_path, monkeypatch, args, n=10)
    # 5 steps of 3 batches of 2 (6 items): all of draw 0, 4 items of draw 1 were on disk for the resumed run
    out = capsys.readouterr().out
    assert "teacher cache: 2 draws x 6 items, filled on first use" in out and "10 filled slots reused" in out
    for run in ("straight", "half"):  # a finished run deletes its draw cache
        assert not (tmp_path / run / "teacher_cache").exists()
