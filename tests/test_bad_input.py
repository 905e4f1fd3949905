"""The bad-input matrix: every row runs the real command line on one bad input.

Each row expects: a non-zero exit, exactly ONE line on stderr of the form
``srpkd: error: ...`` naming the problem (and the file, where there is one),
no ``Traceback``, and no output file left behind half-written (no
``.*.tmp`` beside the output, an older output byte-identical).

Rows run in-process through ``srpkd.cli.main.main`` (fast; stderr captured by
capsys); the rows in ``SUBPROCESS_ROWS`` also run as ``python -m srpkd`` to
prove the exit status and the absence of a traceback end to end.
RELIABILITY.md lists the rows.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn as nn

import srpkd.cli.info as cli_info
import srpkd.cli.train as cli_train
import srpkd.train.loop as loop
from srpkd import SrpkdError, create_generator, load_generator, save_generator
from srpkd.checkpoint import load_tensors, save_tensors
from srpkd.cli.main import main

from conftest import srpkd_env, write_image


# ----------------------------------------------------------------------------- helpers


@dataclass
class Case:
    argv: list[str]
    expect: list[str]  # substrings of the one error line (file names, the problem)
    absent: list[Path] = field(default_factory=list)  # must not exist afterwards
    intact: dict[Path, bytes] = field(default_factory=dict)  # must still hold exactly these bytes
    no_tmp_in: list[Path] = field(default_factory=list)  # folders that must hold no .*.tmp afterwards
    setup: Callable[[pytest.MonkeyPatch], None] | None = None  # in-process fault injection


def check_one_error(rc: int, err: str, case: Case) -> str:
    assert rc != 0, f"expected a non-zero exit, stderr: {err!r}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("srpkd: error: "), line
    assert "\x1b" not in line, f"terminal codes in: {line!r}"
    for needle in case.expect:
        assert needle.lower() in line.lower(), f"{needle!r} not named in: {line}"
    for p in case.absent:
        assert not Path(p).exists(), f"{p} was left behind"
    for p, data in case.intact.items():
        assert Path(p).read_bytes() == data, f"{p} was changed"
    for folder in case.no_tmp_in:
        if Path(folder).is_dir():
            left = [p.name for p in Path(folder).rglob(".*.tmp")]
            assert not left, f"temporary files left in {folder}: {left}"
    return line


def tiny_generator(path: Path, arch: str = "resnet_9blocks", ngf: int = 4, **kw) -> Path:
    torch.manual_seed(0)
    save_generator(create_generator(arch, ngf=ngf, **kw), path)
    return path


def safetensors_raw(path: Path, header: bytes, length: int | None = None, body: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + body)
    return path


class CodePayload:
    """Unpickling this calls open(marker, "w"): the marker file proves that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_with_code(path: Path, marker: Path, how: str = "torch") -> Path:
    payload = {"model.1.weight": CodePayload(marker), "model.1.bias": torch.zeros(4)}
    if how == "torch":
        torch.save(payload, path)
    elif how == "torch_legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    return path


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def save_file_then_enospc(tensors, filename, metadata=None):
    """Write half a file, as a full disk would, then fail."""
    with open(filename, "wb") as f:
        f.write(b"\0" * 100)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def foreign_pth(path: Path, ngf: int = 4) -> Path:
    """A pytorch-CycleGAN-and-pix2pix ResnetGenerator (9 blocks, InstanceNorm) state_dict, keys and shapes only."""
    class Block(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
                nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
            )

    m = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
    for mult in (1, 2):
        m += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 1), nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
    m += [Block(ngf * 4) for _ in range(9)]
    for mult in (4, 2):
        m += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1),
              nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
    m += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
    net = nn.Module()
    net.model = nn.Sequential(*m)
    torch.save(net.state_dict(), path)
    return path


# ----------------------------------------------------------------------------- rows

ROWS: dict[str, Callable[[Path], Case]] = {}


def row(name: str):
    def deco(fn):
        assert name not in ROWS
        ROWS[name] = fn
        return fn

    return deco


# -- checkpoints given to `srpkd info` (load_generator)


@row("info_checkpoint_missing")
def _(t):
    return Case(["info", str(t / "nope.safetensors")], ["nope.safetensors", "not found"])


@row("info_checkpoint_zero_bytes")
def _(t):
    (t / "z.safetensors").write_bytes(b"")
    return Case(["info", str(t / "z.safetensors")], ["z.safetensors"])


@row("info_checkpoint_truncated")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return Case(["info", str(p)], ["g.safetensors"])


@row("info_checkpoint_truncated_in_header")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    p.write_bytes(p.read_bytes()[:40])
    return Case(["info", str(p)], ["g.safetensors"])


@row("info_checkpoint_random_bytes")
def _(t):
    (t / "r.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    return Case(["info", str(t / "r.safetensors")], ["r.safetensors"])


@row("info_checkpoint_bogus_header_length")
def _(t):
    safetensors_raw(t / "b.safetensors", b"{}", length=2**62)
    return Case(["info", str(t / "b.safetensors")], ["b.safetensors"])


@row("info_checkpoint_header_not_json")
def _(t):
    safetensors_raw(t / "b.safetensors", b"{this is not json")
    return Case(["info", str(t / "b.safetensors")], ["b.safetensors"])


@row("info_checkpoint_header_json_not_object")
def _(t):
    safetensors_raw(t / "b.safetensors", b"[1, 2, 3]")
    return Case(["info", str(t / "b.safetensors")], ["b.safetensors"])


@row("info_checkpoint_srpkd_record_not_object")
def _(t):
    safetensors_raw(t / "b.safetensors", json.dumps({"__metadata__": {"srpkd": "[1]"}}).encode())
    return Case(["info", str(t / "b.safetensors")], ["b.safetensors", "corrupt"])


@row("info_checkpoint_without_srpkd_record")
def _(t):
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(t / "plain.safetensors"))
    return Case(["info", str(t / "plain.safetensors")], ["plain.safetensors", "srpkd import"])


def _tampered_checkpoint(t, arch: str | None = None, **kwargs) -> Path:
    """A tiny resnet checkpoint whose architecture record claims another arch or other kwargs."""
    p = tiny_generator(t / "g.safetensors", ngf=4)
    tensors, meta = load_tensors(p)
    meta["arch"] = arch or meta["arch"]
    meta["kwargs"].update(kwargs)
    save_tensors(p, tensors, meta)
    return p


@row("info_checkpoint_other_architecture")
def _(t):
    # resnet weights under a unet record: the file claims another architecture
    p = _tampered_checkpoint(t, arch="unet_128")
    return Case(["info", str(p)], ["g.safetensors", "does not fit unet_128"])


@row("info_checkpoint_other_width")
def _(t):
    p = _tampered_checkpoint(t, ngf=8)
    return Case(["info", str(p)], ["g.safetensors", "does not fit", "shape"])


@row("info_checkpoint_absurd_width")
def _(t):
    # a hand-edited header must not make srpkd allocate terabytes
    p = _tampered_checkpoint(t, ngf=100_000)
    return Case(["info", str(p)], ["g.safetensors", "does not fit"])


@row("info_checkpoint_is_a_discriminator")
def _(t):
    save_tensors(t / "d.safetensors", {"w": torch.zeros(1)}, {"format": 1, "kind": "discriminator"})
    return Case(["info", str(t / "d.safetensors")], ["d.safetensors", "not a generator"])


@row("info_pickle_with_code_pth")
def _(t):
    marker = t / "PWNED"
    p = pickle_with_code(t / "evil.pth", marker)
    return Case(["info", str(p)], ["evil.pth", "pickle"], absent=[marker])


@row("info_pickle_with_code_renamed_safetensors")
def _(t):
    marker = t / "PWNED"
    p = pickle_with_code(t / "evil.safetensors", marker)
    return Case(["info", str(p)], ["evil.safetensors"], absent=[marker])


@row("info_folder_without_checkpoint")
def _(t):
    (t / "run").mkdir()
    return Case(["info", str(t / "run")], ["run", "without a srpkd generator"])


# -- sizes given to `srpkd info --arch`


@row("info_size_zero")
def _(t):
    return Case(["info", "--arch", "resnet_9blocks", "--ngf", "4", "--size", "0"], ["--size"])


@row("info_size_negative")
def _(t):
    return Case(["info", "--arch", "resnet_9blocks", "--ngf", "4", "--size", "-8"], ["--size"])


@row("info_width_zero")
def _(t):
    return Case(["info", "--arch", "resnet_9blocks", "--ngf", "0"], ["ngf"])


@row("info_width_negative")
def _(t):
    return Case(["info", "--arch", "resnet_9blocks", "--ngf", "-4"], ["bad arguments", "-4"])


@row("info_unknown_architecture")
def _(t):
    return Case(["info", "--arch", "resnet_10blocks"], ["resnet_10blocks"])


# -- `srpkd import` (torch.load(weights_only=True) is the only unpickling in srpkd)


for _how in ("torch", "torch_legacy", "plain_pickle"):

    def _make(t, how=_how):
        marker = t / "PWNED"
        p = pickle_with_code(t / "evil.pth", marker, how)
        out = t / "out.safetensors"
        # torch.save files name the refused global; a bare pickle fails earlier, as "not a PyTorch file"
        expect = ["evil.pth", "refused"] if how != "plain_pickle" else ["evil.pth"]
        return Case(["import", str(p), str(out)], expect, absent=[marker, out], no_tmp_in=[t])

    row(f"import_pickle_with_code_{_how}")(_make)


@row("import_missing_file")
def _(t):
    return Case(["import", str(t / "nope.pth"), str(t / "o.safetensors")], ["nope.pth"], absent=[t / "o.safetensors"])


@row("import_zero_bytes")
def _(t):
    (t / "z.pth").write_bytes(b"")
    return Case(["import", str(t / "z.pth"), str(t / "o.safetensors")], ["z.pth"], absent=[t / "o.safetensors"])


@row("import_truncated")
def _(t):
    p = foreign_pth(t / "w.pth")
    p.write_bytes(p.read_bytes()[:1000])
    return Case(["import", str(p), str(t / "o.safetensors")], ["w.pth"], absent=[t / "o.safetensors"])


@row("import_random_bytes")
def _(t):
    (t / "r.pth").write_bytes(np.random.default_rng(1).bytes(2048))
    return Case(["import", str(t / "r.pth"), str(t / "o.safetensors")], ["r.pth"], absent=[t / "o.safetensors"])


@row("import_not_a_state_dict")
def _(t):
    torch.save([torch.zeros(3), 4], t / "l.pth")
    return Case(["import", str(t / "l.pth"), str(t / "o.safetensors")], ["l.pth"], absent=[t / "o.safetensors"])


@row("import_unknown_layout")
def _(t):
    torch.save({"fc.weight": torch.zeros(3, 3)}, t / "u.pth")
    return Case(["import", str(t / "u.pth"), str(t / "o.safetensors")], ["u.pth"], absent=[t / "o.safetensors"])


@row("import_width_override_does_not_fit")
def _(t):
    p = foreign_pth(t / "w.pth")
    return Case(["import", str(p), str(t / "o.safetensors"), "--ngf", "8"], ["w.pth"], absent=[t / "o.safetensors"])


@row("import_output_under_a_file")
def _(t):
    p = foreign_pth(t / "w.pth")
    (t / "afile").write_text("x")
    out = t / "afile" / "o.safetensors"
    return Case(["import", str(p), str(out)], ["afile"], intact={t / "afile": b"x"})


@row("import_output_in_proc")
def _(t):
    p = foreign_pth(t / "w.pth")
    return Case(["import", str(p), "/proc/srpkd-test.safetensors"], ["/proc/srpkd-test.safetensors"])


@row("import_output_wrong_suffix")
def _(t):
    p = foreign_pth(t / "w.pth")
    return Case(["import", str(p), str(t / "o.pth")], [".safetensors"], absent=[t / "o.pth"])


@row("import_disk_full")
def _(t):
    p = foreign_pth(t / "w.pth")
    out = t / "out" / "g.safetensors"
    out.parent.mkdir()
    tiny_generator(out)  # an older good file that must survive
    old = out.read_bytes()

    def setup(mp):
        mp.setattr(safetensors.torch, "save_file", save_file_then_enospc)

    return Case(["import", str(p), str(out), "--overwrite"], [str(out), "No space left"], intact={out: old},
                no_tmp_in=[out.parent], setup=setup)


@row("import_disk_full_at_fsync")
def _(t):
    p = foreign_pth(t / "w.pth")
    out = t / "out" / "g.safetensors"
    out.parent.mkdir()
    tiny_generator(out)
    old = out.read_bytes()

    def setup(mp):
        mp.setattr(os, "fsync", enospc)

    return Case(["import", str(p), str(out), "--overwrite"], [str(out), "No space left"], intact={out: old},
                no_tmp_in=[out.parent], setup=setup)


# -- `srpkd distill`: data, config, checkpoints, outputs, faults during the run


def distill_world(t: Path) -> dict:
    """6 aligned 64x32 pairs, 2 test pairs, a ResNet-9 ngf 4 teacher."""
    for split, n in (("train", 6), ("test", 2)):
        for i in range(n):
            write_image(t / "data" / split / f"{i}.png", 64, 32, seed=i)
    tiny_generator(t / "teacher.safetensors")
    return {"data": t / "data", "teacher": t / "teacher.safetensors", "out": t / "runs"}


def distill(t: Path, *extra: str, data: Path | None = None, teacher: Path | None = None, steps: int = 3) -> list[str]:
    argv = [
        "distill", "--teacher", str(teacher or t / "teacher.safetensors"), "--data", str(data or t / "data"),
        "--mode", "aligned", "--task", "paired", "--steps", str(steps), "--batch-size", "2", "--size", "32",
        "--out-dir", str(t / "runs"), "--name", "r", "--device", "cpu", "--quiet",
        "--set", "student.ngf=4", "--set", "discriminator.ndf=8", "--set", "data.load_size=36",
        "--set", "data.fixed_crops=false", "--set", "data.max_images=null", "--set", "threads=1",
        "--set", "eval_images=2",
        "--set", "loss.gan=1",  # pix2pix's objective: the main preset (no GAN term) is not a paired recipe
        "--set", "student.derive=none",  # its rows set student.init, which a derived start would overrule
    ]
    return argv + list(extra)


@row("distill_data_folder_missing")
def _(t):
    distill_world(t)
    return Case(distill(t, data=t / "nowhere"), ["nowhere"], absent=[t / "runs" / "r"])


@row("distill_data_folder_empty")
def _(t):
    distill_world(t)
    (t / "empty" / "train").mkdir(parents=True)
    return Case(distill(t, data=t / "empty"), ["empty/train", "no images"], absent=[t / "runs" / "r"])


@row("distill_data_without_train_split")
def _(t):
    distill_world(t)
    (t / "flat").mkdir()
    write_image(t / "flat" / "0.png", 64, 32)
    return Case(distill(t, data=t / "flat"), ["flat", "train"], absent=[t / "runs" / "r"])


@row("distill_zero_byte_image")
def _(t):
    distill_world(t)
    (t / "data" / "train" / "0.png").write_bytes(b"")  # the first file: found while building the dataset
    return Case(distill(t), ["0.png"])


@row("distill_corrupt_image")
def _(t):
    distill_world(t)
    (t / "data" / "train" / "2.png").write_bytes(np.random.default_rng(0).bytes(3000))  # found during an epoch
    return Case(distill(t), ["2.png"], no_tmp_in=[t / "runs"])


@row("distill_truncated_image")
def _(t):
    distill_world(t)
    p = t / "data" / "train" / "3.png"
    p.write_bytes(p.read_bytes()[:200])
    return Case(distill(t), ["3.png"], no_tmp_in=[t / "runs"])


@row("distill_non_image_file")
def _(t):
    distill_world(t)
    (t / "data" / "train" / "5.png").write_text("just some text\n")
    return Case(distill(t), ["5.png"], no_tmp_in=[t / "runs"])


@row("distill_aligned_image_of_wrong_shape")
def _(t):
    distill_world(t)
    write_image(t / "data" / "train" / "4.png", 32, 32)  # square: not an A|B pair
    return Case(distill(t), ["4.png", "width twice the height"], no_tmp_in=[t / "runs"])


@row("distill_mixed_sizes_unbatchable")
def _(t):
    # preprocess none keeps each image's size: 64x32 and 128x64 pairs cannot share a batch
    distill_world(t)
    for i in (1, 3, 5):
        write_image(t / "data" / "train" / f"{i}.png", 128, 64, seed=i)
    return Case(distill(t, "--set", "data.preprocess=none", "--set", "data.flip=false"), ["different sizes"])


@row("distill_teacher_missing")
def _(t):
    distill_world(t)
    return Case(distill(t, teacher=t / "nope.safetensors"), ["nope.safetensors"], absent=[t / "runs" / "r"])


@row("distill_teacher_truncated")
def _(t):
    distill_world(t)
    p = t / "teacher.safetensors"
    p.write_bytes(p.read_bytes()[:5000])
    return Case(distill(t), ["teacher.safetensors"], absent=[t / "runs" / "r"])


@row("distill_teacher_bogus_header_length")
def _(t):
    distill_world(t)
    safetensors_raw(t / "bad.safetensors", b"{}", length=2**40)
    return Case(distill(t, teacher=t / "bad.safetensors"), ["bad.safetensors"], absent=[t / "runs" / "r"])


@row("distill_teacher_pickle_with_code")
def _(t):
    distill_world(t)
    marker = t / "PWNED"
    p = pickle_with_code(t / "evil.pth", marker)
    return Case(distill(t, teacher=p), ["evil.pth"], absent=[marker, t / "runs" / "r"])


@row("distill_student_init_of_another_width")
def _(t):
    distill_world(t)
    tiny_generator(t / "wide.safetensors", ngf=8)
    return Case(distill(t, "--set", f"student.init={t / 'wide.safetensors'}"), ["wide.safetensors", "does not fit"])


@row("distill_student_init_of_another_architecture")
def _(t):
    distill_world(t)
    tiny_generator(t / "unet.safetensors", arch="unet_128", ngf=4)
    return Case(distill(t, "--set", f"student.init={t / 'unet.safetensors'}"), ["unet.safetensors", "does not fit"])


@row("distill_resume_with_another_width")
def _(t):
    distill_world(t)
    assert main(distill(t, steps=1)) == 0
    last = t / "runs" / "r" / "checkpoints" / "last.safetensors"
    return Case(
        ["distill", "--resume", str(t / "runs" / "r"), "--quiet", "--set", "student.ngf=8"],
        ["last.safetensors", "does not fit"], intact={last: last.read_bytes()},
    )


@row("distill_resume_missing_run")
def _(t):
    return Case(["distill", "--resume", str(t / "runs" / "ghost"), "--quiet"], ["ghost"])


@row("distill_resume_truncated_checkpoint")
def _(t):
    distill_world(t)
    assert main(distill(t, steps=1)) == 0
    last = t / "runs" / "r" / "checkpoints" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:1000])
    return Case(["distill", "--resume", str(t / "runs" / "r"), "--quiet"], ["last.safetensors"])


@row("distill_run_folder_exists")
def _(t):
    distill_world(t)
    (t / "runs" / "r").mkdir(parents=True)
    (t / "runs" / "r" / "keep.txt").write_text("mine")
    return Case(distill(t), ["runs/r", "not empty"], intact={t / "runs" / "r" / "keep.txt": b"mine"})


def _yaml(t: Path, text: str) -> Path:
    (t / "bad.yaml").write_text(text)
    return t / "bad.yaml"


@row("config_yaml_unknown_key")
def _(t):
    distill_world(t)
    return Case(distill(t, "--config", str(_yaml(t, "optim:\n  stepz: 3\n"))), ["optim.stepz"])


@row("config_yaml_wrong_type")
def _(t):
    distill_world(t)
    return Case(distill(t, "--config", str(_yaml(t, "optim:\n  lr: fast\n"))), ["optim.lr", "fast"])


@row("config_yaml_not_a_mapping")
def _(t):
    distill_world(t)
    return Case(distill(t, "--config", str(_yaml(t, "- 1\n- 2\n"))), ["bad.yaml", "mapping"])


@row("config_yaml_syntax_error")
def _(t):
    distill_world(t)
    return Case(distill(t, "--config", str(_yaml(t, "optim: {steps: 3\n"))), ["bad.yaml", "YAML"])


@row("config_yaml_python_tag")
def _(t):
    distill_world(t)
    marker = t / "PWNED"
    text = f"seed: !!python/object/apply:os.system ['touch {marker}']\n"
    return Case(distill(t, "--config", str(_yaml(t, text))), ["bad.yaml"], absent=[marker])


@row("config_missing_file")
def _(t):
    distill_world(t)
    return Case(distill(t, "--config", str(t / "nope.yaml")), ["nope.yaml"])


@row("config_set_unknown_key")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "loss.kdd=1"), ["loss.kdd"])


@row("config_set_wrong_type")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "optim.batch_size=two"), ["optim.batch_size"])


@row("config_set_not_key_value")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "loss.kd"), ["loss.kd"])


@row("config_set_nan")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "optim.lr=.nan"), ["optim.lr"])


@row("distill_time_not_a_duration")
def _(t):
    distill_world(t)
    return Case(distill(t, "--time", "10 minutes"), ["bad duration", "10 minutes"], absent=[t / "runs" / "r"])


@row("distill_time_negative")
def _(t):
    distill_world(t)
    return Case(distill(t, "--time=-5m"), ["bad duration", "-5m"], absent=[t / "runs" / "r"])


@row("config_set_unknown_schedule")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "optim.schedule=step"), ["optim.schedule", "step"], absent=[t / "runs" / "r"])


@row("config_set_warmup_out_of_range")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "optim.warmup=1.5"), ["optim.warmup", "[0, 1)"], absent=[t / "runs" / "r"])


@row("config_set_gan_start_negative")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "loss.gan_start=-0.5"), ["loss.gan_start"], absent=[t / "runs" / "r"])


for _flag, _value, _key in [
    ("--steps", "0", "steps"), ("--steps", "-5", "steps"), ("--batch-size", "0", "batch_size"),
    ("--batch-size", "-2", "batch_size"), ("--size", "0", "crop_size"), ("--size", "-32", "crop_size"),
    ("--set", "data.load_size=0", "load_size"), ("--set", "student.ngf=0", "ngf"),
    ("--set", "discriminator.ndf=-8", "ndf"), ("--epochs", "-1", "epochs"),
]:

    def _make(t, flag=_flag, value=_value, key=_key):
        distill_world(t)
        argv = distill(t)
        if flag != "--set" and flag in argv:  # replace the default value
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
        return Case(argv, [key], absent=[t / "runs" / "r"])

    _slug = _value.replace("=", "_").replace(".", "_").replace("-", "minus")
    row(f"distill_{_flag.strip('-').replace('-', '_')}_{_slug}")(_make)


@row("distill_size_not_a_multiple_of_4")
def _(t):
    distill_world(t)
    argv = distill(t)
    argv[argv.index("--size") + 1] = "30"
    return Case(argv, ["30"], absent=[t / "runs" / "r"])


@row("distill_out_dir_under_a_file")
def _(t):
    distill_world(t)
    (t / "afile").write_text("x")
    argv = distill(t)
    argv[argv.index("--out-dir") + 1] = str(t / "afile" / "runs")
    return Case(argv, ["afile"], intact={t / "afile": b"x"})


@row("distill_out_dir_in_proc")
def _(t):
    distill_world(t)
    argv = distill(t)
    argv[argv.index("--out-dir") + 1] = "/proc/srpkd-runs"
    return Case(argv, ["/proc/srpkd-runs"])


@row("distill_disk_full_during_checkpoint")
def _(t):
    """ENOSPC on the 5th checkpoint write (ckpt_every=1): last.safetensors of the step before stays as it was."""
    distill_world(t)
    last = t / "runs" / "r" / "checkpoints" / "last.safetensors"
    seen: dict[str, bytes] = {}

    def setup(mp):
        real = safetensors.torch.save_file
        calls = {"n": 0}

        def save_file(tensors, filename, metadata=None):
            calls["n"] += 1
            if calls["n"] == 5:  # step 3: step_0000003 (write 5) fails
                seen["last"] = last.read_bytes()
                return save_file_then_enospc(tensors, filename, metadata)
            return real(tensors, filename, metadata=metadata)

        mp.setattr(safetensors.torch, "save_file", save_file)

    case = Case(distill(t, "--set", "ckpt_every=1", steps=6), ["No space left", "step_0000003"],
                no_tmp_in=[t / "runs" / "r"], setup=setup)
    case.intact = _LazyIntact(last, seen)
    return case


def _non_finite_loss(t, step: int, which: str, term: str, poison, needles: list[str]) -> Case:
    """A loss term turns non-finite at ``step`` (0-based) of the G or D update: one line naming it,
    and the checkpoint of the step before stays byte-identical."""
    distill_world(t)
    last = t / "runs" / "r" / "checkpoints" / "last.safetensors"
    seen: dict[str, bytes] = {}

    def setup(mp):
        real = loop.Trainer._backward_step

        def backward_step(self, losses, opt, params, i):
            if i == step and opt is getattr(self, which):  # what a diverging loss term would hand over
                seen["last"] = last.read_bytes()
                losses = {**losses, term: poison(losses[term])}
            return real(self, losses, opt, params, i)

        mp.setattr(loop.Trainer, "_backward_step", backward_step)

    case = Case(distill(t, "--set", "ckpt_every=1", steps=6), needles, no_tmp_in=[t / "runs" / "r"], setup=setup)
    case.intact = _LazyIntact(last, seen)
    return case


@row("distill_nan_loss")
def _(t):
    return _non_finite_loss(t, 2, "optG", "G_l1", lambda v: v * float("nan"),
                            ["G_l1", "nan", "step 3", "last good checkpoint"])


@row("distill_inf_loss")
def _(t):
    return _non_finite_loss(t, 3, "optD", "D_fake", lambda v: v + float("inf"), ["D_fake", "inf", "step 4"])


class _LazyIntact(dict):
    """{path: bytes} where the bytes are captured during the run (at the moment of the fault)."""

    def __init__(self, path: Path, seen: dict):
        super().__init__()
        self.path, self.seen = path, seen

    def items(self):
        assert "last" in self.seen, "the fault was never injected"
        return [(self.path, self.seen["last"])]


# -- `srpkd export`, `srpkd translate` (models and outputs), `srpkd eval`


@row("export_truncated_checkpoint")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    p.write_bytes(p.read_bytes()[:3000])
    return Case(["export", str(p), "-o", str(t / "g.onnx")], ["g.safetensors"], absent=[t / "g.onnx"], no_tmp_in=[t])


@row("export_pickle_with_code")
def _(t):
    marker = t / "PWNED"
    p = pickle_with_code(t / "evil.pth", marker)
    return Case(["export", str(p), "-o", str(t / "g.onnx")], ["evil.pth"], absent=[marker, t / "g.onnx"])


@row("export_output_under_a_file")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    (t / "afile").write_text("x")
    return Case(["export", str(p), "-o", str(t / "afile" / "sub" / "g.onnx"), "--size", "32"],
                ["afile is a file"], intact={t / "afile": b"x"})


@row("export_output_in_proc")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["export", str(p), "-o", "/proc/srpkd-test.onnx", "--size", "32"], ["/proc/srpkd-test.onnx"])


@row("export_size_zero")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["export", str(p), "-o", str(t / "g.onnx"), "--size", "0"], ["0x0"], absent=[t / "g.onnx"])


@row("export_size_not_a_multiple")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["export", str(p), "-o", str(t / "g.onnx"), "--size", "30"], ["30x30"], absent=[t / "g.onnx"])


@row("export_disk_full")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    out = t / "out" / "g.torchscript"
    out.parent.mkdir()
    out.write_bytes(b"an older export")

    def setup(mp):
        mp.setattr(os, "fsync", enospc)

    return Case(["export", str(p), "--format", "torchscript", "-o", str(out), "--size", "32", "--overwrite"],
                [str(out), "No space left"], intact={out: b"an older export"}, no_tmp_in=[out.parent], setup=setup)


def _translate_inputs(t: Path) -> Path:
    write_image(t / "in" / "0.png", 32, 32)
    return t / "in"


@row("translate_model_random_onnx")
def _(t):
    (t / "m.onnx").write_bytes(np.random.default_rng(2).bytes(2000))
    return Case(["translate", str(t / "m.onnx"), str(_translate_inputs(t)), str(t / "out")], ["m.onnx"],
                absent=[t / "out" / "0.png"])


@row("translate_model_random_torchscript")
def _(t):
    (t / "m.torchscript").write_bytes(np.random.default_rng(3).bytes(2000))
    return Case(["translate", str(t / "m.torchscript"), str(_translate_inputs(t)), str(t / "out")], ["m.torchscript"],
                absent=[t / "out" / "0.png"])


@row("translate_model_pickle_with_code")
def _(t):
    marker = t / "PWNED"
    p = pickle_with_code(t / "evil.pth", marker)
    return Case(["translate", str(p), str(_translate_inputs(t)), str(t / "out")], ["evil.pth"],
                absent=[marker, t / "out" / "0.png"])


@row("translate_input_missing")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["translate", str(p), str(t / "nothing"), str(t / "out")], ["nothing"])


@row("translate_input_folder_empty")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    (t / "in").mkdir()
    return Case(["translate", str(p), str(t / "in"), str(t / "out")], ["in", "no images"])


@row("translate_size_zero")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["translate", str(p), str(_translate_inputs(t)), str(t / "out"), "--size", "0"], ["--size"])


@row("translate_batch_zero")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["translate", str(p), str(_translate_inputs(t)), str(t / "out"), "--batch", "0"], ["--batch"])


@row("eval_truncated_checkpoint")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    p.write_bytes(p.read_bytes()[:3000])
    write_image(t / "data" / "test" / "0.png", 64, 32)
    return Case(["eval", str(p), "--data", str(t / "data"), "--mode", "aligned", "-q", "--teacher", "none"],
                ["g.safetensors"], absent=[t / "g.safetensors.metrics.json"])


@row("eval_missing_run")
def _(t):
    return Case(["eval", str(t / "runs" / "ghost"), "-q"], ["ghost"])


# -- srpkd relmap, srpkd data, train mode (issue 16)


def _relmap_world(t: Path) -> list[str]:
    tiny_generator(t / "student.safetensors")
    tiny_generator(t / "teacher.safetensors", ngf=8)
    write_image(t / "photo.png", 40, 30)
    return ["relmap", str(t / "student.safetensors"), str(t / "photo.png"), "--teacher", str(t / "teacher.safetensors")]


@row("relmap_pixel_outside_image")
def _(t):
    return Case(_relmap_world(t) + ["--pixels", "40,3", "-o", str(t / "r.png")], ["40,3", "outside", "40x30"],
                absent=[t / "r.png"])


@row("relmap_pixel_not_x_y")
def _(t):
    return Case(_relmap_world(t) + ["--pixels", "12", "-o", str(t / "r.png")], ["--pixels", "X,Y"],
                absent=[t / "r.png"])


@row("relmap_output_not_png")
def _(t):
    return Case(_relmap_world(t) + ["-o", str(t / "r.jpg")], ["r.jpg", ".png"], absent=[t / "r.jpg"])


@row("relmap_checkpoint_without_teacher")
def _(t):
    tiny_generator(t / "student.safetensors")
    write_image(t / "photo.png", 40, 30)
    return Case(["relmap", str(t / "student.safetensors"), str(t / "photo.png"), "-o", str(t / "r.png")],
                ["student.safetensors", "--teacher"], absent=[t / "r.png"])


@row("relmap_unknown_tap")
def _(t):
    return Case(_relmap_world(t) + ["--tap", "nowhere", "-o", str(t / "r.png")], ["nowhere", "encoder"],
                absent=[t / "r.png"])


@row("data_download_unknown_dataset")
def _(t):
    return Case(["data", "download", "horse3zebra", str(t / "ds"), "--host", "http://127.0.0.1:9"],
                ["horse3zebra", "horse2zebra"], absent=[t / "ds"])


@row("data_download_into_a_folder_that_is_not_empty")
def _(t):
    (t / "ds").mkdir()
    (t / "ds" / "mine.txt").write_bytes(b"keep")
    return Case(["data", "download", "facades", str(t / "ds"), "--host", "http://127.0.0.1:9"], ["ds", "not empty"],
                intact={t / "ds" / "mine.txt": b"keep"})


@row("data_download_host_unreachable")
def _(t):
    return Case(["data", "download", "facades", str(t / "ds"), "--host", "http://127.0.0.1:9", "--retries", "0",
                 "-q"], ["facades.tar.gz", "run the same command again"], absent=[t / "ds"])


@row("data_combine_folder_missing")
def _(t):
    write_image(t / "A" / "1.png", 16, 16)
    return Case(["data", "combine", str(t / "A"), str(t / "nothere"), str(t / "AB")], ["nothere"],
                absent=[t / "AB"])


@row("data_combine_halves_of_different_sizes")
def _(t):
    write_image(t / "A" / "1.png", 16, 16)
    write_image(t / "B" / "1.png", 20, 16)
    return Case(["data", "combine", str(t / "A"), str(t / "B"), str(t / "AB")], ["1.png", "--size"],
                absent=[t / "AB" / "train" / "1.png"], no_tmp_in=[t / "AB" / "train"])


@row("translate_train_mode_of_an_onnx_export")
def _(t):
    (t / "m.onnx").write_bytes(b"not even read")
    return Case(["translate", str(t / "m.onnx"), str(_translate_inputs(t)), str(t / "out"), "--train-mode"],
                ["m.onnx", "eval mode"], absent=[t / "out"])


@row("eval_train_mode_with_images")
def _(t):
    write_image(t / "gen" / "0.png", 32, 32)
    return Case(["eval", "--images", str(t / "gen"), "--real", str(t / "gen"), "--train-mode"], ["--train-mode"])


# -- issue 15, class 1: sizes too small for the network (checked before any output exists)


@row("info_size_too_small_for_the_network")
def _(t):
    return Case(["info", "--arch", "resnet_9blocks", "--ngf", "4", "--size", "4"], ["4x4", "too small", "8x8"])


@row("export_size_too_small_for_the_network")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["export", str(p), "-o", str(t / "g.onnx"), "--size", "4"], ["4x4", "too small", "8x8"],
                absent=[t / "g.onnx"], no_tmp_in=[t])


@row("profile_size_too_small_for_the_network")
def _(t):
    return Case(["profile", "--arch", "resnet_9blocks", "--ngf", "4", "--size", "4", "--runtime", "eager",
                 "--runs", "1", "--warmup", "0", "-o", str(t / "p.json")], ["4x4", "too small"], absent=[t / "p.json"])


@row("eval_size_too_small_for_the_network")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    write_image(t / "data" / "test" / "0.png", 64, 32)
    write_image(t / "data" / "test" / "1.png", 64, 32, seed=1)
    return Case(["eval", str(p), "--data", str(t / "data"), "--mode", "aligned", "-q", "--teacher", "none",
                 "--size", "4", "--no-perceptual"], ["4x4", "too small"], absent=[t / "g.safetensors.metrics.json"])


@row("distill_cache_draws_negative")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "cache_draws=-1"), ["cache_draws", "negative"], absent=[t / "runs" / "r"])


@row("distill_amp_unknown")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "amp=fp8"), ["amp", "auto", "fp8"], absent=[t / "runs" / "r"])


@row("distill_srp_precision_unknown")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "loss.srp_precision=half"), ["loss.srp_precision", "float32"],
                absent=[t / "runs" / "r"])


@row("distill_feat_method_unknown")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "loss.feat_method=fused"), ["loss.feat_method", "factorized"],
                absent=[t / "runs" / "r"])


@row("distill_size_4")
def _(t):
    distill_world(t)
    argv = distill(t)
    argv[argv.index("--size") + 1] = "4"
    return Case(argv, ["4x4", "too small", "discriminator"], absent=[t / "runs" / "r"])


@row("distill_discriminator_deeper_than_the_image")
def _(t):
    distill_world(t)
    return Case(distill(t, "--set", "discriminator.n_layers=6"), ["32x32", "too small", "discriminator", "192x192"],
                absent=[t / "runs" / "r"])


@row("distill_images_of_4x4_with_preprocess_none")
def _(t):
    distill_world(t)
    for i in range(6):
        write_image(t / "data" / "train" / f"{i}.png", 8, 4, seed=i)  # 4x4 A|B pairs
    return Case(distill(t, "--set", "data.preprocess=none", "--set", "data.flip=false"), ["4x4", "too small"],
                absent=[t / "runs" / "r"])


@row("translate_size_too_large_to_hold")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["translate", str(p), str(_translate_inputs(t)), str(t / "out"), "--size", "200000"],
                ["200000x200000", "pixels"], absent=[t / "out"])


@row("info_size_too_large_to_hold")
def _(t):
    return Case(["info", "--arch", "resnet_9blocks", "--ngf", "4", "--size", "1000000"], ["1000000x1000000", "pixels"])


@row("info_width_that_cannot_be_allocated")
def _(t):
    # a real allocation failure: the second convolution of ngf 10^6 asks the allocator for 72 TB
    return Case(["info", "--arch", "resnet_9blocks", "--ngf", "1000000", "--size", "8"], ["allocate"])


@row("train_out_of_memory_is_one_line")
def _(t):
    """(mock) What a RuntimeError of PyTorch's allocator looks like when it escapes a command's own checks."""
    distill_world(t)

    def setup(mp):
        def oom(*a, **k):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 120000000000 bytes")

        mp.setattr(cli_train, "Trainer", oom)

    return Case(distill(t), ["out of memory", "--size"], absent=[t / "runs" / "r"], setup=setup)


# -- issue 15, class 8: outputs (no file replaced that srpkd did not write, nothing outside the folder given)


@row("distill_name_leaves_out_dir")
def _(t):
    distill_world(t)
    argv = distill(t)
    argv[argv.index("--name") + 1] = "../escaped"
    return Case(argv, ["../escaped", "plain folder name"], absent=[t / "escaped", t / "runs"])


@row("distill_name_with_a_slash")
def _(t):
    distill_world(t)
    argv = distill(t)
    argv[argv.index("--name") + 1] = "a/b"
    return Case(argv, ["a/b", "plain folder name"], absent=[t / "runs"])


@row("import_output_exists_without_overwrite")
def _(t):
    p = foreign_pth(t / "w.pth")
    (t / "mine.safetensors").write_bytes(b"not srpkd's")
    return Case(["import", str(p), str(t / "mine.safetensors")], ["mine.safetensors", "--overwrite"],
                intact={t / "mine.safetensors": b"not srpkd's"})


@row("eval_output_exists_without_overwrite")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    (t / "notes.json").write_text("mine")
    return Case(["eval", str(p), "--data", str(t / "data"), "--mode", "aligned", "-q", "-o", str(t / "notes.json")],
                ["notes.json", "--overwrite"], intact={t / "notes.json": b"mine"})


@row("profile_output_exists_without_overwrite")
def _(t):
    (t / "notes.json").write_text("mine")
    return Case(["profile", "--arch", "resnet_9blocks", "--ngf", "4", "--size", "32", "--runtime", "eager",
                 "-o", str(t / "notes.json")], ["notes.json", "--overwrite"], intact={t / "notes.json": b"mine"})


@row("report_output_exists_without_overwrite")
def _(t):
    (t / "run").mkdir()
    (t / "index.html").write_text("<html>my page</html>")
    return Case(["report", str(t / "run"), "-o", str(t / "index.html")], ["index.html", "--overwrite"],
                intact={t / "index.html": b"<html>my page</html>"})


@row("translate_output_folder_symlinked_elsewhere")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    write_image(t / "in" / "sub" / "0.png", 32, 32)
    (t / "elsewhere").mkdir()
    (t / "out").mkdir()
    (t / "out" / "sub").symlink_to(t / "elsewhere")
    return Case(["translate", str(p), str(t / "in"), str(t / "out")], ["outside the output folder"],
                absent=[t / "elsewhere" / "0.png"])


# -- issue 15, class 9: nonsense numbers, colour codes and library warnings


@row("export_atol_nan")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["export", str(p), "-o", str(t / "g.onnx"), "--atol", "nan"], ["--atol", "finite"],
                absent=[t / "g.onnx"])


@row("export_atol_inf")
def _(t):
    p = tiny_generator(t / "g.safetensors")
    return Case(["export", str(p), "-o", str(t / "g.onnx"), "--atol", "inf"], ["--atol", "finite"],
                absent=[t / "g.onnx"])


@row("import_dropout_nan")
def _(t):
    p = foreign_pth(t / "w.pth")
    return Case(["import", str(p), str(t / "o.safetensors"), "--dropout", "nan"], ["--dropout", "finite"],
                absent=[t / "o.safetensors"])


@row("info_library_warning_and_colour_codes")
def _(t):
    """(mock) A library that warns (torch's weights_only advice) and colours its message: one plain line."""

    def setup(mp):
        def noisy(path):
            warnings.warn("You are using `torch.load` with `weights_only=False`", FutureWarning, stacklevel=1)
            raise SrpkdError("\x1b[96mexport failed\x1b[0m at\nstep 1/3")

        mp.setattr(cli_info, "load_generator", noisy)

    return Case(["info", str(t / "g.safetensors")], ["export failed at step 1/3"], setup=setup)


# ----------------------------------------------------------------------------- the tests

SUBPROCESS_ROWS = [
    "info_checkpoint_truncated",
    "info_pickle_with_code_pth",
    "import_pickle_with_code_torch",
    "distill_data_folder_missing",
    "distill_teacher_pickle_with_code",
    "config_yaml_unknown_key",
]


# Rows that fail because of a bug in another module, reported with file and fix (see RELIABILITY.md).
KNOWN_BUGS: dict[str, str] = {}  # row name -> reason, for a reported bug still open (xfail)


def _param(name):
    if name in KNOWN_BUGS:
        return pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_BUGS[name], strict=False))
    return name


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", [_param(n) for n in sorted(ROWS)])
def test_bad_input(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = ROWS[name](tmp_path)
    capsys.readouterr()
    if case.setup:
        case.setup(monkeypatch)
    rc = main(case.argv)
    out, err = capsys.readouterr()
    check_one_error(rc, err, case)


@pytest.mark.parametrize("name", [_param(n) for n in SUBPROCESS_ROWS])
def test_bad_input_subprocess(name, tmp_path):
    case = ROWS[name](tmp_path)
    assert case.setup is None
    env = srpkd_env()
    r = subprocess.run([sys.executable, "-m", "srpkd", *case.argv],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    check_one_error(r.returncode, r.stderr, case)


def test_translate_skips_and_reports_bad_images(tmp_path, capsys, monkeypatch):
    """translate's documented contract: unreadable images are skipped, each named on one
    ``srpkd: skipped:`` line, the good ones are translated, and the run ends with one
    ``srpkd: error:`` line and a non-zero exit."""
    monkeypatch.chdir(tmp_path)
    p = tiny_generator(tmp_path / "g.safetensors")
    write_image(tmp_path / "in" / "0.png", 32, 32)
    (tmp_path / "in" / "1.png").write_bytes(b"")
    (tmp_path / "in" / "2.png").write_bytes(np.random.default_rng(0).bytes(500))
    rc = main(["translate", str(p), str(tmp_path / "in"), str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc != 0 and "Traceback" not in err
    lines = [ln.split("\r")[-1].strip() for ln in err.splitlines() if "srpkd:" in ln]
    lines = [ln[ln.index("srpkd:"):] for ln in lines]
    skipped = [ln for ln in lines if ln.startswith("srpkd: skipped:")]
    errors = [ln for ln in lines if ln.startswith("srpkd: error:")]
    assert len(skipped) == 2 and any("1.png" in ln for ln in skipped) and any("2.png" in ln for ln in skipped), err
    assert len(errors) == 1 and "2 of 3" in errors[0], err
    assert (tmp_path / "out" / "0.png").is_file()
    assert not (tmp_path / "out" / "1.png").exists() and not (tmp_path / "out" / "2.png").exists()
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_mixed_sizes_batch_with_a_resizing_preprocess(tmp_path, capsys, monkeypatch):
    """The documented other half of the mixed-sizes row: resize_and_crop batches any sizes."""
    monkeypatch.chdir(tmp_path)
    distill_world(tmp_path)
    for i in (1, 3, 5):
        write_image(tmp_path / "data" / "train" / f"{i}.png", 128, 64, seed=i)
    write_image(tmp_path / "data" / "test" / "1.png", 96, 48, seed=7)
    assert main(distill(tmp_path, steps=2)) == 0, capsys.readouterr().err


def test_load_generator_refuses_code(tmp_path):
    """The library call, not only the CLI: a pickle with code under any name is refused and not run."""
    marker = tmp_path / "PWNED"
    for name in ("evil.pth", "evil.safetensors", "evil.bin"):
        p = pickle_with_code(tmp_path / name, marker)
        with pytest.raises(SrpkdError, match=name):
            load_generator(p)
        assert not marker.exists()
