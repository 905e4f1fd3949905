"""srpkd train / distill: every task mode end to end on tiny data, CLI errors, NaN handling, signals."""
from __future__ import annotations

import logging
import os
import signal

import torch
import yaml

import srpkd.losses as L
from srpkd.checkpoint import load_generator, load_tensors
from srpkd.cli.main import main
from srpkd.train.loop import Trainer
from train_helpers import TINY, read_log, tiny_teacher


def _run_files(run, both=False):
    for name in ("config.yaml", "log.jsonl", "samples.png", "student.safetensors", "checkpoints/last.safetensors"):
        assert (run / name).is_file(), name
    assert (run / "tb").is_dir() and any((run / "tb").iterdir())
    assert (run / "student_B.safetensors").is_file() == both
    log = read_log(run)
    steps = [r for r in log if any(k.startswith("loss/") for k in r)]
    assert steps and all({"step", "epoch", "lr", "time"} <= set(r) for r in steps)
    _, meta = load_tensors(run / "checkpoints" / "last.safetensors")
    assert meta["kind"] == "training" and meta["generator_prefix"] == "G."
    g = load_generator(run / "checkpoints" / "last.safetensors")
    assert g.arch_kwargs["ngf"] == 4
    return log


def test_train_on_the_main_preset_starts_from_random_weights(tmp_path, aligned_dir):
    """The main preset derives a distilled student from its teacher; `srpkd train` has no teacher."""
    i = TINY.index("student.derive=none")
    tiny = TINY[:i - 1] + TINY[i + 1:]  # the preset's own student.derive (ls)
    assert main(["train", "--data", str(aligned_dir), "--mode", "aligned", "--task", "paired", "--size", "32",
                 "--batch-size", "2", "--steps", "1", "--name", "t", "--out-dir", str(tmp_path),
                 "--set", "data.load_size=36", *tiny]) == 0
    assert yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())["student"]["derive"] == "none"


def test_paired_train_and_distill(tmp_path, aligned_dir, capsys):
    common = ["--data", str(aligned_dir), "--mode", "aligned", "--task", "paired", "--size", "32", "--batch-size", "2",
              "--out-dir", str(tmp_path), "--set", "data.load_size=36", "--set", "ckpt_every=1", "--set", "keep_last=2"]
    assert main(["train", *common, "--steps", "3", "--name", "p", *TINY]) == 0
    log = _run_files(tmp_path / "p")
    assert {"loss/G_gan", "loss/G_l1", "loss/D_real", "loss/D_fake"} <= set(log[0])
    assert not any(k.startswith("loss/kd") for k in log[0])
    assert sorted(p.name for p in (tmp_path / "p" / "checkpoints").glob("step_*")) == ["step_0000001.safetensors",
                                                                                       "step_0000002.safetensors"]
    assert (tmp_path / "p" / "checkpoints" / "best.safetensors").is_file()
    assert any("val/l1_to_target" in r for r in log)

    teacher = tiny_teacher(tmp_path / "t.safetensors")
    assert main(["distill", *common, "--steps", "2", "--name", "pd", "--teacher", str(teacher),
                 "--set", "loss.srp=100", "--set", "loss.feat=1", *TINY]) == 0
    log = _run_files(tmp_path / "pd")
    assert {"loss/G_l1", "loss/kd", "loss/srp", "loss/feat"} <= set(log[0])
    assert any("val/l1_to_teacher" in r for r in log)
    tensors, _ = load_tensors(tmp_path / "pd" / "checkpoints" / "last.safetensors")
    assert any(k.startswith("adapters.") for k in tensors)
    out = capsys.readouterr().out
    assert "run folder:" in out and "teacher" in out and "PSNR" in out


def test_unpaired_both_directions(tmp_path, unaligned_dir):
    ta = tiny_teacher(tmp_path / "ta.safetensors", seed=1)
    tb = tiny_teacher(tmp_path / "tb.safetensors", seed=2)
    assert main(["distill", "--data", str(unaligned_dir), "--mode", "unaligned", "--task", "unpaired", "--size", "32",
                 "--steps", "2", "--batch-size", "2", "--name", "u", "--out-dir", str(tmp_path), "--teacher", str(ta),
                 "--teacher-b", str(tb), "--set", "data.load_size=32", "--set", "loss.srp=100", "--set", "pool_size=2",
                 "--set", "student.arch=resnet_9blocks", *TINY]) == 0
    log = _run_files(tmp_path / "u", both=True)
    keys = set(log[0])
    for k in ("cycle_A", "cycle_B", "idt_A", "idt_B", "G_gan", "G_gan_B", "kd", "kd_B", "srp", "srp_B", "D_B_fake"):
        assert f"loss/{k}" in keys, k
    tensors, meta = load_tensors(tmp_path / "u" / "checkpoints" / "last.safetensors")
    assert set(meta["generators"]) == {"G.", "G_B."}
    assert tensors["pool.fake_B.images"].shape[0] == 2
    assert load_generator(tmp_path / "u" / "checkpoints" / "last.safetensors", prefix="G_B.").arch == "resnet_9blocks"


def test_unpaired_relation_loss_on_one_generator_keeps_kd_on_both(tmp_path, unaligned_dir):
    # loss.srp_both=false is the paper's one-generator ablation: only the relation term leaves G_B
    ta = tiny_teacher(tmp_path / "ta.safetensors", seed=1)
    tb = tiny_teacher(tmp_path / "tb.safetensors", seed=2)
    assert main(["distill", "--data", str(unaligned_dir), "--mode", "unaligned", "--task", "unpaired", "--size", "32",
                 "--steps", "1", "--batch-size", "2", "--name", "one", "--out-dir", str(tmp_path), "--teacher", str(ta),
                 "--teacher-b", str(tb), "--set", "data.load_size=32", "--set", "loss.srp=100",
                 "--set", "loss.srp_both=false", *TINY]) == 0
    keys = {k for k in read_log(tmp_path / "one")[0] if k.startswith("loss/")}
    assert {"loss/kd", "loss/srp", "loss/kd_B"} <= keys and "loss/srp_B" not in keys


def test_unpaired_one_direction(tmp_path, unaligned_dir):
    ta = tiny_teacher(tmp_path / "ta.safetensors")
    assert main(["distill", "--data", str(unaligned_dir), "--mode", "unaligned", "--task", "unpaired", "--size", "32",
                 "--steps", "2", "--batch-size", "2", "--name", "a", "--out-dir", str(tmp_path), "--teacher", str(ta),
                 "--set", "directions=AtoB", "--set", "data.load_size=32", "--set", "loss.srp=100", *TINY]) == 0
    log = _run_files(tmp_path / "a", both=False)
    keys = set(log[0])
    assert {"loss/G_gan", "loss/kd", "loss/srp", "loss/idt_A"} <= keys
    assert not any("cycle" in k or k.endswith("_B") for k in keys)
    # CycleGAN training without a teacher: both generators, no KD
    assert main(["train", "--data", str(unaligned_dir), "--mode", "unaligned", "--task", "unpaired", "--size", "32",
                 "--steps", "1", "--name", "c", "--out-dir", str(tmp_path), "--set", "data.load_size=32", *TINY]) == 0
    log = _run_files(tmp_path / "c", both=True)
    assert not any(k.startswith("loss/kd") for k in log[0]) and any("val/cycle_l1" in r for r in log)


def test_teacher_only_builtin(tmp_path, capsys):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    assert main(["distill", "--teacher", str(teacher), "--size", "32", "--steps", "3", "--batch-size", "2",
                 "--name", "t", "--out-dir", str(tmp_path), "--set", "data.max_images=4", "--set", "loss.srp=500",
                 "--set", "loss.sp=1", "--set", "loss.at=1", *TINY]) == 0
    log = _run_files(tmp_path / "t")
    assert {"loss/kd", "loss/srp", "loss/sp", "loss/at", "loss/G_gan", "loss/D_real"} <= set(log[0])
    captured = capsys.readouterr()
    assert "teacher cache: on" in captured.out + captured.err
    # a non-empty run folder is not reused
    assert main(["distill", "--teacher", str(teacher), "--name", "t", "--out-dir", str(tmp_path), *TINY]) == 2
    assert "not empty" in capsys.readouterr().err


def test_tap_mismatch_is_one_line(tmp_path, capsys):
    teacher = tiny_teacher(tmp_path / "t.safetensors")  # ResNet: encoder at 1/4 resolution
    code = main(["distill", "--teacher", str(teacher), "--size", "32", "--steps", "1", "--name", "m",
                 "--out-dir", str(tmp_path), "--set", "student.arch=unet_128", "--set", "loss.srp=10",
                 "--set", "loss.feat=0", "--set", "student.norm=instance", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "tap 'encoder'" in err and "teacher resnet_6blocks gives (1, 32, " in err and "student unet_128 gives" in err
    assert not (tmp_path / "m").exists()


def test_bad_option_is_one_line(capsys):
    assert main(["distill", "--no-such-option"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unrecognized arguments: --no-such-option" in err
    assert main(["distill", "--set", "loss.nope=1"]) == 2
    assert "unknown config key(s): loss.nope" in capsys.readouterr().err
    assert main(["train", "--steps", "1"]) == 2  # main preset is teacher_only: needs a teacher
    assert "teacher_only" in capsys.readouterr().err


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch, capsys):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    args = ["distill", "--teacher", str(teacher), "--size", "32", "--batch-size", "2", "--out-dir", str(tmp_path),
            "--name", "n", "--set", "data.max_images=4", "--set", "ckpt_every=2", *TINY]
    real = L.output_kd_loss
    calls = {"n": 0}

    def flaky(s, t):
        calls["n"] += 1
        return real(s, t) * (float("nan") if calls["n"] == 3 else 1.0)

    monkeypatch.setattr(L, "output_kd_loss", flaky)
    code = main([*args, "--steps", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "loss kd is nan at step 3" in err[-1] and "last good checkpoint" in err[-1]
    last = tmp_path / "n" / "checkpoints" / "last.safetensors"
    _, meta = load_tensors(last)
    assert meta["step"] == 2  # written at step 2, not overwritten by the failed step
    assert not (tmp_path / "n" / "student.safetensors").exists()


def test_sigterm_saves_and_exits(tmp_path, monkeypatch, capsys):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    real = Trainer.train_step

    def step(self, batch, i):
        out = real(self, batch, i)
        if i == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step)
    code = main(["distill", "--teacher", str(teacher), "--size", "32", "--batch-size", "2", "--steps", "6",
                 "--out-dir", str(tmp_path), "--name", "s", "--set", "data.max_images=4", *TINY])
    assert code == 128 + signal.SIGTERM
    _, meta = load_tensors(tmp_path / "s" / "checkpoints" / "last.safetensors")
    assert meta["step"] == 2
    assert "--resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_speed_settings_and_time_limit(tmp_path, capsys):
    """amp bf16 + channels_last train; a time limit ends training early but normally (student saved)."""
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    assert main(["distill", "--teacher", str(teacher), "--size", "32", "--steps", "50", "--batch-size", "2",
                 "--name", "b", "--out-dir", str(tmp_path), "--set", "data.max_images=4", "--set", "amp=bf16",
                 "--set", "channels_last=true", "--set", "loss.srp=100", "--set", "time_limit=0.001", *TINY]) == 0
    log = read_log(tmp_path / "b")
    steps = [r["step"] for r in log if "loss/kd" in r]
    assert steps == [1] and all(torch.isfinite(torch.tensor(r["loss/kd"])) for r in log if "loss/kd" in r)
    assert (tmp_path / "b" / "student.safetensors").is_file()
    assert "finished 1 steps (time_limit 0.001 s reached: 50 planned)" in capsys.readouterr().out


def test_a_missing_validation_split_is_said_once_training_starts(tmp_path, caplog):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    caplog.set_level(logging.INFO, logger="srpkd")
    assert main(["distill", "--teacher", str(teacher), "--size", "32", "--steps", "1", "--batch-size", "2",
                 "--name", "v", "--out-dir", str(tmp_path), "--set", "data.max_images=4",
                 "--set", "data.val_split=nosuch", *TINY]) == 0
    said = [r.getMessage() for r in caplog.records if "no validation split" in r.getMessage()]
    assert len(said) == 1 and "the last student is kept" in said[0], said
