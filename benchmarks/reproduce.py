"""Reproduce the paper's comparison: every KD variant, same budget, several seeds, one table.

    python benchmarks/reproduce.py TASK [--recipe pix2pix|main] [--seeds 0 1 2] [--variants ...] [--students ...]
        [--datasets ...] [--steps N] [--size S] [--batch B] [--train-images N] [--test-images N]
        [--teacher-steps N] [--quick] [--out runs/bench]

TASK is one of:

* ``real_teacher``: the pretrained vintagify CycleGAN generator (``builtin:vintagify``,
  ResNet-9 ngf 64) is the frozen teacher (task ``teacher_only``). Inputs: photos of
  ``facades_unpaired/trainA`` and the left (photo) halves of ``edges2shoes_subset/train``;
  held out: ``facades_unpaired/testA`` and the left halves of ``edges2shoes_subset/val``.
  Metrics: FID, KID, PSNR, L1 and ST-LPIPS of the student's outputs against the teacher's.
* ``paired``: pix2pix label -> photo on ``facades`` (B -> A) and edges -> photo on
  ``edges2shoes_subset`` (B -> A, split ``val`` held out). The teacher (ResNet-9 ngf 64 for
  students r32 / r16 / m16, U-Net ngf 64 for u16) is trained first by ``srpkd train`` and
  kept under the out folder. Metrics: FID, KID, PSNR, SSIM to the ground truth.
* ``unpaired``: CycleGAN facades photo <-> label (``facades_unpaired``), both directions;
  teacher pair trained by ``srpkd train``; variant ``kd_srp_one`` keeps output KD on both
  generators and puts the relation term on G_A only (``loss.srp_both=false``). Metrics:
  FID, KID per direction against the real target domain (train + test), and PSNR to the
  teacher's outputs per direction.

Variants (identical budget: steps, batch, lr, discriminator, data, seeds):

=========  =====================================================================
scratch    no KD term. paired/unpaired: ``srpkd train`` (the task's own losses).
           real_teacher has no target images, so "scratch" there is the GAN term only,
           with the teacher's outputs as the discriminator's real images (``srpkd
           distill`` with every KD weight 0): no pixel-wise supervision at all.
kd         output KD (L1 to the teacher's image)
kd_srp     output KD + relation loss (SRP-KD)
feat       output KD + FitNets feature KD (1x1 adapter, MSE) at the encoder output
feat_srp   output KD + feature KD + relation loss
sp         output KD + similarity-preserving KD (Tung & Mori) at the encoder output
at         output KD + attention transfer (Zagoruyko & Komodakis) at the encoder output
kd_srp_one unpaired only: kd on both generators, relation loss on G_A only (loss.srp_both=false)
=========  =====================================================================

Recipes (``--recipe``):

* ``pix2pix`` (default): the GAN recipe of pytorch-CycleGAN-and-pix2pix (Adam 2e-4, beta1 0.5, linear
  decay over the second half, the GAN term throughout), every KD tap at the encoder, ``WEIGHTS``.
* ``main`` (real_teacher only): the recipe of the ``main`` preset (issue 13): Adam 1e-3 / beta1 0.9,
  warm-up and cosine decay, the GAN term from half-way (``scratch``: from the start), bf16 where the CPU
  has it, the best checkpoint chosen on 40 val photos; feature KD at four taps (encoder, body, up1, up2),
  ``MAIN_WEIGHTS``. Data: 128 px centre squares of the real photos, 192 facades + 192 shoes to train
  (``--train-images``), held out: the rest of facades testA and edges2shoes val and the 24 Kodak photos
  (``benchmarks/real_photos.py``, the same photos as ``time_to_quality.py real_teacher``). ``--calibrate``
  prints the gradient norms that set the weights of ``sp`` and ``at`` and starts no run.

Loss weights (``pix2pix``): ``kd`` 10 (the presets'). Every other term's weight makes the norm of its
gradient on the student's parameters about equal to the output-KD term's (kd 10) at
initialisation: measured once on the vintagify teacher, 4 facade photos at 96 px,
ResNet-9 ngf 16 student at N(0, 0.02) init (|g_kd| 1.59, |g_srp| 2.8e-3, |g_feat| 0.51,
|g_sp| 2.1e-2, |g_at| 9.2e-3 for unit weights) -> srp 5600, feat 30, sp 750, at 1700.
This is this benchmark's rule (the paper's weights are unknown); override with --set.

Every run goes through the real entry points: ``srpkd train`` / ``srpkd distill`` and
``srpkd eval`` are called as ``srpkd.cli.main.main([...])`` in this process, and the
per-run and side-by-side HTML reports come from ``srpkd.report``. Two shortcuts keep the
frozen teacher from being re-run for every variant and seed, without changing any number:

* the teacher cache of a run (its outputs and the features of the taps the run's KD terms
  read, on the deterministic training set; ``Teacher.build_cache``) is stored in
  ``OUT/TASK/teacher_cache/``, keyed by the teacher's weights, the cache's settings (taps)
  and every training input tensor, and loaded by later runs with the same key;
* in ``srpkd eval`` the teacher's outputs and the Inception features of any image batch
  already scored are memoised in memory (keyed by the bytes of the batch).

Resumable: a run whose ``metrics.json`` exists is skipped; a run with a checkpoint but no
``student.safetensors`` is resumed (``--resume``); teachers with ``student.safetensors``
are reused. Results: ``OUT/TASK/results.json`` and ``results.md`` (mean +- sample std over
seeds), ``OUT/TASK/report_<dataset>_<student>_seed<S>.html`` (variants side by side).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

# on a shared CPU, spin-waiting OpenMP threads make every small op slow (benchmarks/relation_loss.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from PIL import Image  # noqa: E402
import kept as kept_runs  # noqa: E402
from real_photos import SHARED, TRAIN_PHOTOS, data_overrides  # noqa: E402
from real_photos import prepare_real_teacher_data as prepare_photo_squares  # noqa: E402

import srpkd.assets as assets  # noqa: E402  (memoised_eval swaps assets.resolve_teacher)
from srpkd.cli.main import main as srpkd_main  # noqa: E402
from srpkd.config import load_config, parse_override  # noqa: E402
from srpkd.data.images import list_images  # noqa: E402
from srpkd.distill.kd import KDTerms  # noqa: E402
from srpkd.distill.teacher import Teacher  # noqa: E402
from srpkd.files import write_json  # noqa: E402
from srpkd.metrics.evaluate import Scorer, evaluate_generator  # noqa: E402
from srpkd.models import create_generator, init_weights  # noqa: E402
from srpkd.report import write_comparison, write_report  # noqa: E402
from srpkd.train.data import SeededDataset, run_dataset  # noqa: E402

WEIGHTS = {"kd": 10.0, "srp": 5600.0, "feat": 30.0, "sp": 750.0, "at": 1700.0}
# --recipe main: the main preset's weights and taps for its own terms (srp 8000, feat 10 at four taps;
# src/srpkd/configs/main.yaml); sp and at by this benchmark's rule, measured at 128 px on the r16 student with
# `python benchmarks/reproduce.py real_teacher --recipe main --calibrate --students r16` (3 inits x 3 batches of 4):
# |g| at unit weight kd 1.58, srp 3.4e-3, feat 3.2, sp 0.175, at 9.3e-3 -> matched weights srp 4720, feat 4.9,
# sp 91, at 1690
MAIN_WEIGHTS = {"kd": 10.0, "srp": 8000.0, "feat": 10.0, "sp": 90.0, "at": 1700.0}
MAIN_TAPS = {"srp": ["encoder"], "feat": ["encoder", "body", "up1", "up2"], "sp": ["encoder"], "at": ["encoder"]}
RECIPES = ("pix2pix", "main")
VARIANTS = {
    "scratch": {},
    "kd": {"kd": WEIGHTS["kd"]},
    "kd_srp": {"kd": WEIGHTS["kd"], "srp": WEIGHTS["srp"]},
    "feat": {"kd": WEIGHTS["kd"], "feat": WEIGHTS["feat"]},
    "feat_srp": {"kd": WEIGHTS["kd"], "feat": WEIGHTS["feat"], "srp": WEIGHTS["srp"]},
    "sp": {"kd": WEIGHTS["kd"], "sp": WEIGHTS["sp"]},
    "at": {"kd": WEIGHTS["kd"], "at": WEIGHTS["at"]},
    "kd_srp_one": {"kd": WEIGHTS["kd"], "srp": WEIGHTS["srp"], "srp_both": False},
}
BASE_VARIANTS = ["scratch", "kd", "kd_srp", "feat", "feat_srp", "sp", "at"]

# students: (generator overrides, teacher key)
STUDENTS = {
    "r32": ({"student.arch": "resnet_9blocks", "student.ngf": 32}, "resnet"),
    "r16": ({"student.arch": "resnet_9blocks", "student.ngf": 16}, "resnet"),
    "m16": ({"student.arch": "mobile_resnet_9blocks", "student.ngf": 16}, "resnet"),
    "u16": ({"student.arch": "unet_128", "student.ngf": 16, "student.kwargs": {"encoder_level": 3}}, "unet"),
}
TEACHER_ARCH = {
    "resnet": {"student.arch": "resnet_9blocks", "student.ngf": 64},
    "unet": {"student.arch": "unet_128", "student.ngf": 64, "student.kwargs": {"encoder_level": 3}},
}

TASKS = {
    "real_teacher": {
        "task": "teacher_only",
        "datasets": {"photos": None},  # prepared under OUT/data (see prepare_real_teacher_data)
        "variants": BASE_VARIANTS,
        "students": ["r16", "r32", "m16"],
        "metrics": [("fidelity", "fid"), ("fidelity", "kid"), ("fidelity", "psnr"), ("fidelity", "st_lpips"),
                    ("fidelity", "l1")],
    },
    "paired": {
        "task": "paired",
        "datasets": {
            "facades": {"data.root": str(SHARED / "facades"), "data.direction": "BtoA", "data.test_split": "test"},
            "edges2shoes": {"data.root": str(SHARED / "edges2shoes_subset"), "data.direction": "BtoA",
                            "data.test_split": "val"},
        },
        "variants": BASE_VARIANTS,
        "students": ["r32", "r16", "u16"],
        "metrics": [("student", "fid"), ("student", "kid"), ("student", "psnr"), ("student", "ssim"),
                    ("fidelity", "psnr")],
    },
    "unpaired": {
        "task": "unpaired",
        "datasets": {"facades": {"data.root": str(SHARED / "facades_unpaired"), "data.direction": "AtoB"}},
        "variants": BASE_VARIANTS + ["kd_srp_one"],
        "students": ["r16", "r32", "m16"],
        "metrics": [("student", "fid"), ("student", "kid"), ("student_BtoA", "fid"), ("student_BtoA", "kid"),
                    ("fidelity", "psnr"), ("fidelity_BtoA", "psnr")],
    },
}
LOWER_BETTER = {"fid", "kid", "l1", "st_lpips"}


# ----------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(argv: list[str]) -> None:
    """Run one ``srpkd`` command in this process; a non-zero status stops the benchmark."""
    rc = srpkd_main(argv)
    if rc != 0:
        raise SystemExit(f"srpkd {' '.join(argv[:2])} ... failed with status {rc}")


def sets(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["--set", f"{k}={json.dumps(v)}"]
    return out


def budget_overrides(args, task: str) -> dict:
    """The settings every run of a task shares (students and teachers alike)."""
    o = {
        "task": task, "optim.steps": args.steps, "optim.epochs": 0, "optim.batch_size": args.batch,
        "optim.lr": 2e-4, "optim.decay_fraction": 0.5,
        "data.load_size": args.size, "data.crop_size": args.size, "data.preprocess": "resize", "data.flip": False,
        "data.max_images": args.train_images, "data.serial": True, "data.fixed_crops": False,
        "discriminator.arch": "patchgan", "discriminator.ndf": args.ndf, "discriminator.n_layers": 3,
        "discriminator.norm": "instance", "student.norm": "instance", "student.dropout": 0.0,
        "loss.gan": 1.0, "loss.gan_mode": "lsgan",
        "log_every": 10, "eval_every": 0, "ckpt_every": max(args.steps // 2, 1), "keep_last": 1,
        "eval_images": 8, "cache_teacher": True, "threads": args.threads, "time_limit": 0,
        "device": "cpu", "sample_every": 0,
        "student.derive": "none",  # every student starts from random weights (the main preset derives it)
    }
    if task == "paired":
        o.update({"data.mode": "aligned", "loss.l1": 100.0})
    elif task == "unpaired":
        o.update({"data.mode": "unaligned", "loss.cycle": 10.0, "loss.identity": 0.5, "directions": "both"})
    else:
        o.update({"data.mode": "unaligned"})
    return o


def variant_overrides(name: str, recipe: str = "pix2pix") -> dict:
    """The loss settings of a variant. ``pix2pix``: the terms' WEIGHTS, every tap at the encoder.
    ``main``: MAIN_WEIGHTS / MAIN_TAPS on top of the main preset, whose GAN term starts half-way; ``scratch``
    (nothing but the GAN term) has it from the first step."""
    w = VARIANTS[name]
    if recipe == "main":
        o = {f"loss.{t}": MAIN_WEIGHTS[t] if t in w else 0.0 for t in ("kd", "srp", "feat", "sp", "at")}
        o["loss.perc"] = 0.0  # the paper's terms only: perceptual KD stays out of the comparison
        o.update({f"loss.{t}_taps": taps for t, taps in MAIN_TAPS.items()})
        o.update({"loss.gan": 1.0, "loss.gan_start": 0.0 if name == "scratch" else 0.5})
        return o
    o = {f"loss.{t}": float(w.get(t, 0.0)) for t in ("kd", "srp", "feat", "sp", "at")}
    o["loss.perc"] = 0.0
    o.update({"loss.srp_taps": ["encoder"], "loss.feat_taps": ["encoder"], "loss.sp_taps": ["encoder"],
              "loss.at_taps": ["encoder"], "loss.srp_method": "factorized", "loss.srp_both": w.get("srp_both", True)})
    return o


def main_recipe_overrides(args, root: Path) -> dict:
    """--recipe main: the settings every run shares on top of the ``main`` preset (its optimiser, schedule,
    numerics, discriminator and best-checkpoint choice on the val photos), with a step budget instead of a time."""
    return {**data_overrides(root, args.size), "task": "teacher_only", "optim.steps": args.steps, "optim.epochs": 0,
            "optim.time": 0.0, "optim.batch_size": args.batch, "time_limit": 0.0, "discriminator.ndf": args.ndf,
            "log_every": 50, "ckpt_every": 500, "keep_last": 1, "threads": args.threads, "device": "cpu"}


def calibrate(args, student: str, inits: int = 3, batches: int = 3) -> dict:
    """Each KD term's gradient norm over the student's parameters at initialisation (unit weight, the main recipe's
    taps), averaged over ``inits`` initialisations x ``batches`` training batches, and the weight that makes it equal
    to output KD's at weight 10: the rule by which MAIN_WEIGHTS sets sp and at."""
    root = prepare_photo_squares(Path(args.out) / "data", args.size, (args.train_images or 2 * TRAIN_PHOTOS) // 2)
    o = {**data_overrides(root, args.size), **STUDENTS[student][0], "task": "teacher_only"}
    cfg = load_config("main", [f"{k}={json.dumps(v)}" for k, v in o.items()])
    data = SeededDataset(run_dataset(cfg, "train", train=True), cfg.seed)
    step = max(len(data) // (batches * args.batch), 1)  # batches spread over both sources
    teacher = assets.resolve_teacher(cfg.teacher.checkpoint).eval()
    terms = ("kd", "srp", "feat", "sp", "at")
    all_taps = list(dict.fromkeys(t for taps in MAIN_TAPS.values() for t in taps))
    xs = [torch.stack([data[(b * args.batch + i) * step]["A"] for i in range(args.batch)]) for b in range(batches)]
    with torch.no_grad():
        targets = [teacher(x, taps=all_taps) for x in xs]
    norms: dict[str, list[float]] = {t: [] for t in terms}
    for init in range(inits):
        torch.manual_seed(init)
        g = init_weights(create_generator(cfg.student.arch, ngf=cfg.student.ngf, norm=cfg.student.norm,
                                          dropout=cfg.student.dropout, **cfg.student.kwargs)).train()
        params = list(g.parameters())
        for x, (t_out, t_feats) in zip(xs, targets):
            for term in terms:
                only = {t: (1.0 if t == term else 0.0) for t in terms}
                kd = KDTerms(dataclasses.replace(cfg.loss, **only, perc=0.0,
                                                 **{f"{t}_taps": MAIN_TAPS[t] for t in MAIN_TAPS}), teacher, g)
                s_out, s_feats = g(x, taps=all_taps)
                loss = sum(kd(s_out, s_feats, t_out, t_feats).values())
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                norms[term].append(float(torch.sqrt(sum((gr.float() ** 2).sum() for gr in grads if gr is not None))))
    mean = {t: statistics.fmean(v) for t, v in norms.items()}
    return {"student": student, "size": args.size, "batch": args.batch, "inits": inits, "batches": batches,
            "grad_norm_unit_weight": mean,
            "matched_weight": {t: MAIN_WEIGHTS["kd"] * mean["kd"] / mean[t] for t in terms},
            "command": "python benchmarks/reproduce.py " + " ".join(sys.argv[1:])}


# ----------------------------------------------------------------------------- data


def prepare_real_teacher_data(out: Path, n_train: int, n_test: int) -> Path:
    """A CycleGAN-layout folder of real photos: half facades photos, half edges2shoes photo halves.

    trainA: the first n_train/2 of facades_unpaired/trainA (links) and the left halves of the
    first n_train/2 of edges2shoes_subset/train (saved as PNG); testA likewise from testA / val.
    trainB and testB link to trainA and testA (teacher_only reads only A; the layout needs B).
    """
    root = out / "data" / f"real_teacher_{n_train}_{n_test}"
    done = root / ".done"
    if done.is_file():
        return root
    if root.exists():
        shutil.rmtree(root)
    for split, n, fac, shoes in (("train", n_train, "trainA", "train"), ("test", n_test, "testA", "val")):
        d = root / f"{split}A"
        d.mkdir(parents=True)
        n_fac = n // 2
        for p in list_images(SHARED / "facades_unpaired" / fac)[:n_fac]:
            (d / f"facades_{p.name}").symlink_to(p.resolve())
        for p in list_images(SHARED / "edges2shoes_subset" / shoes)[: n - n_fac]:
            img = Image.open(p).convert("RGB")
            w, h = img.size
            img.crop((0, 0, w // 2, h)).save(d / f"shoes_{p.stem}.png")
        (root / f"{split}B").symlink_to(f"{split}A")
    done.write_text("ok\n")
    return root


def check_shared(task: str) -> None:
    need = {"real_teacher": ["facades_unpaired", "edges2shoes_subset"], "paired": ["facades", "edges2shoes_subset"],
            "unpaired": ["facades_unpaired"]}[task]
    missing = [n for n in need if not (SHARED / n).is_dir()]
    if missing:
        raise SystemExit(f"data not found: {', '.join(str(SHARED / n) for n in missing)} (set SRPKD_SHARED_DATA)")


# ----------------------------------------------------------------------------- teacher cache on disk


class DiskTeacherCache:
    """Wrap ``Teacher.build_cache``: compute the teacher's outputs + encoder features once, store them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.hits = self.misses = 0

    @contextmanager
    def active(self):
        original = Teacher.build_cache
        cache = self

        def build_cache(teacher, dataset, chunk: int = 8, desc: str = "teacher cache"):
            # the key: the teacher's weights, what the cache holds (taps...), every input tensor in order
            h = hashlib.sha256()
            for p in teacher.model.state_dict().values():
                h.update(p.detach().cpu().contiguous().numpy().tobytes())
            what = {k: v for k, v in vars(teacher).items() if isinstance(v, (str, int, float, bool, list, tuple))}
            h.update(json.dumps([sorted(what.items(), key=str), chunk], default=str).encode())
            for i in range(len(dataset)):
                h.update(dataset[i]["A"].numpy().tobytes())
            path = cache.folder / f"{h.hexdigest()[:24]}.pt"
            if path.is_file():
                teacher.cache = {k: v.to(teacher.device)
                                 for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
                teacher.cache_mib = sum(t.numel() * t.element_size() for t in teacher.cache.values()) / 2**20
                cache.hits += 1
                return
            original(teacher, dataset, chunk=chunk, desc=desc)
            cache.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({k: v.cpu() for k, v in teacher.cache.items()}, tmp)
            os.replace(tmp, path)
            cache.misses += 1

        Teacher.build_cache = build_cache
        try:
            yield
        finally:
            Teacher.build_cache = original


# ----------------------------------------------------------------------------- memoised evaluation


class _Memo:
    def __init__(self):
        self.teachers: dict[str, object] = {}
        self.features: dict[str, object] = {}


_MEMO = _Memo()


def _tensor_key(x) -> str:
    return hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest() + str(tuple(x.shape))


@contextmanager
def memoised_eval():
    """Inside: ``srpkd eval`` reuses teacher outputs and Inception features of batches it has seen."""
    class MemoTeacher(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.size_multiple = getattr(inner, "size_multiple", 4)
            self.arch = getattr(inner, "arch", None)
            self.arch_kwargs = getattr(inner, "arch_kwargs", None)
            self.outs: dict[str, object] = {}

        def forward(self, x):
            k = _tensor_key(x)
            if k not in self.outs:
                self.outs[k] = self.inner(x).detach()
            return self.outs[k]

    orig_resolve, orig_features = assets.resolve_teacher, Scorer.features

    def resolve_teacher(spec):
        spec = str(spec)
        key = spec if spec.startswith("builtin:") else f"{Path(spec).resolve()}:{Path(spec).stat().st_mtime_ns}"
        if key not in _MEMO.teachers:
            _MEMO.teachers[key] = MemoTeacher(orig_resolve(spec)).eval()
        return _MEMO.teachers[key]

    def features(self, images, desc="features"):
        k = self.extractor_id + _tensor_key(images)
        if k not in _MEMO.features:
            _MEMO.features[k] = orig_features(self, images, desc)
        return _MEMO.features[k]

    assets.resolve_teacher, Scorer.features = resolve_teacher, features
    try:
        yield
    finally:
        assets.resolve_teacher, Scorer.features = orig_resolve, orig_features


# ----------------------------------------------------------------------------- runs


def train_run(command: str, run_dir: Path, overrides: dict, teacher: dict | None, config: str = "default") -> float:
    """``srpkd train|distill`` into run_dir, resuming a stopped run; returns the wall time spent now."""
    t0 = time.time()
    if (run_dir / "student.safetensors").is_file():
        return 0.0
    argv = [command, "--quiet"]
    if (run_dir / "checkpoints" / "last.safetensors").is_file():
        argv += ["--resume", str(run_dir)]
        log(f"resume {run_dir}")
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        argv += ["--config", config, "--name", run_dir.name, "--out-dir", str(run_dir.parent)]
        o = dict(overrides)
        if teacher:
            o.update(teacher)
        argv += sets(o)
    cli(argv)
    return time.time() - t0


def eval_run(run_dir: Path, test_images: int | None) -> float:
    t0 = time.time()
    if (run_dir / "metrics.json").is_file():
        return 0.0
    argv = ["eval", str(run_dir), "-q", "--device", "cpu", "--batch", "16"]
    if test_images:
        argv += ["--max-images", str(test_images)]
    with memoised_eval():
        cli(argv)
    write_report(run_dir)  # again, now with metrics.json
    return time.time() - t0


def teacher_for(args, task: str, tdir: Path, ds_over: dict, arch_key: str) -> dict:
    """Train (or reuse) the task's teacher with ``srpkd train``; returns the teacher overrides."""
    if task == "teacher_only":
        return {"teacher.checkpoint": "builtin:vintagify", "teacher.checkpoint_B": None}
    run_dir = tdir / f"teacher_{arch_key}"
    o = budget_overrides(args, task)
    o.update(ds_over)
    o.update(TEACHER_ARCH[arch_key])
    if arch_key == "resnet":
        o["student.ngf"] = args.teacher_ngf
    o.update(variant_overrides("scratch"))
    o.update({"optim.steps": args.teacher_steps, "ckpt_every": max(args.teacher_steps // 4, 1), "seed": 1234})
    if not (run_dir / "student.safetensors").is_file():
        log(f"teacher {run_dir}: srpkd train, {args.teacher_steps} steps")
        dt = train_run("train", run_dir, o, None)
        log(f"teacher trained in {dt:.0f} s")
    if not (run_dir / "metrics.json").is_file():
        eval_run(run_dir, args.test_images)
    t = {"teacher.checkpoint": str(run_dir / "student.safetensors"), "teacher.checkpoint_B": None}
    if task == "unpaired":
        t["teacher.checkpoint_B"] = str(run_dir / "student_B.safetensors")
    return t


# ----------------------------------------------------------------------------- results


def get_metric(metrics: dict, section: str, key: str):
    dirs = metrics["directions"]
    if section.endswith("_BtoA"):
        d = dirs.get("BtoA")
        section = section[: -len("_BtoA")]
    else:
        d = dirs[metrics["primary"]]
    if d is None:
        return None
    v = d.get(section, {}).get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def summarise(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals),
            "values": vals}


def fmt(key: str, s: dict) -> str:
    if s.get("mean") is None:
        return "-"
    d = 4 if key in ("kid", "l1", "st_lpips", "ssim") else 2
    return f"{s['mean']:.{d}f} ± {s['std']:.{d}f}"


def write_results(tdir: Path, spec: dict, rows: list[dict], teachers: dict, meta: dict) -> None:
    # ties: a variant's difference to kd (the reference) at most the larger seed std of the two
    by = {(r["dataset"], r["student"], r["variant"]): r for r in rows}
    for r in rows:
        ref = by.get((r["dataset"], r["student"], "kd"))
        r["vs_kd"] = {}
        if ref is None or r["variant"] == "kd":
            continue
        for sec, key in spec["metrics"]:
            name = f"{sec}.{key}"
            a, b = r["metrics"].get(name, {}), ref["metrics"].get(name, {})
            if a.get("mean") is None or b.get("mean") is None:
                continue
            diff = a["mean"] - b["mean"]
            spread = max(a["std"] or 0.0, b["std"] or 0.0)
            better = diff < 0 if key in LOWER_BETTER else diff > 0
            if min(a["n"], b["n"]) < 2:
                verdict = "n/a (1 seed)"
            else:
                verdict = "tie" if abs(diff) <= spread else ("better" if better else "worse")
            r["vs_kd"][name] = {"diff": diff, "verdict": verdict}
    data = {"meta": meta, "teachers": teachers, "rows": rows}
    write_json(tdir / "results.json", data)

    lines = [f"# {meta['task']}: results (mean ± sample std over seeds {meta['seeds']})", ""]
    lines.append(f"Command: `{meta['command']}`  ")
    lines.append(f"Machine: {meta['machine']}; wall time {meta['wall_s'] / 60:.1f} min (this invocation, which "
                 f"skipped {meta['skipped_runs']} runs finished earlier).  ")
    lines.append(f"Budget per run: {meta['budget']}")
    lines.append("")
    for name, t in teachers.items():
        lines.append(f"Teacher `{name}`: {t}")
    lines.append("")
    cols = [f"{sec}.{key}" for sec, key in spec["metrics"]]
    one_section = len({c.split(".")[0] for c in cols}) == 1

    def short(c: str) -> str:
        return c.split(".")[1] if one_section else c

    arrows = [("↓" if k.split(".")[1] in LOWER_BETTER else "↑") for k in cols]
    for (ds, st) in dict.fromkeys((r["dataset"], r["student"]) for r in rows):
        lines.append(f"## {ds}, student {st}")
        lines.append("")
        header = " | ".join(f"{short(c)} {a}" for c, a in zip(cols, arrows))
        lines.append(f"| variant | n | {header} | vs kd (ties = within seed std) |")
        lines.append("|---|---|" + "---|" * len(cols) + "---|")
        for r in rows:
            if (r["dataset"], r["student"]) != (ds, st):
                continue
            n = max((m.get("n", 0) for m in r["metrics"].values()), default=0)
            verdict = ", ".join(f"{short(k)}: {v['verdict']}" for k, v in r["vs_kd"].items())
            if r["variant"] == "kd":
                verdict = "(reference)"
            cells = " | ".join(fmt(c.split(".")[1], r["metrics"].get(c, {})) for c in cols)
            lines.append(f"| {r['variant']} | {n} | {cells} | {verdict} |")
        lines.append("")
    (tdir / "results.md").write_text("\n".join(lines) + "\n")


def teacher_figures(tdir: Path, spec: dict, teacher_dirs: dict) -> dict:
    out = {}
    for name, d in teacher_dirs.items():
        m = d / "metrics.json"
        if m.is_file():
            metrics = json.loads(m.read_text())
            parts = []
            for sec, key in spec["metrics"]:
                if sec.startswith("fidelity"):
                    continue
                v = get_metric(metrics, sec, key)
                if v is not None:
                    parts.append(f"{sec}.{key} {v:.4g}")
            out[name] = ", ".join(parts) or "no metrics"
    return out


def identity_reference(tdir: Path, data_root: Path, size: int, test_images: int | None) -> dict:
    """real_teacher: how far the teacher's outputs are from its inputs (a student that copies its input)."""
    path = tdir / "identity_metrics.json"
    if path.is_file():
        return json.loads(path.read_text())
    with memoised_eval():
        r = evaluate_generator(nn.Identity(), task="teacher_only", mode="unaligned", root=data_root, size=size,
                               teacher=assets.resolve_teacher("builtin:vintagify"), max_images=test_images,
                               scorer=Scorer(progress=False))
    write_json(path, r)
    return r


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", help=f"default: every variant of the task ({', '.join(VARIANTS)})")
    p.add_argument("--students", nargs="+", help=f"subset of {', '.join(STUDENTS)} (default: the task's)")
    p.add_argument("--datasets", nargs="+", help="subset of the task's datasets (paired: facades edges2shoes)")
    p.add_argument("--recipe", choices=RECIPES, default="pix2pix",
                   help="pix2pix (default): Adam 2e-4 / beta1 0.5, linear decay, the GAN term throughout, every tap at "
                        "the encoder; main (real_teacher only): the main preset's recipe (issue 13) on 128 px squares "
                        "of the real photos, held out: their test photos and the 24 Kodak photos")
    p.add_argument("--calibrate", action="store_true",
                   help="print each term's gradient norm at initialisation (unit weight) and the weight that matches "
                        "output KD's (kd 10); start no run")
    p.add_argument("--steps", type=int, default=2000, help="optimisation steps per student run (default 2000)")
    p.add_argument("--teacher-steps", type=int, default=4000, help="paired/unpaired: teacher steps (default 4000)")
    p.add_argument("--teacher-ngf", type=int, default=64,
                   help="paired/unpaired: width of the trained ResNet teacher (default 64, docs/method.md's pairs)")
    p.add_argument("--size", type=int, default=128, help="image size in px, train and test (default 128)")
    p.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    p.add_argument("--ndf", type=int, default=32, help="discriminator width, all runs (default 32)")
    p.add_argument("--train-images", type=int,
                   help="use at most N training images (real_teacher: default 200; --recipe main: 2 x 192, half "
                        "facades, half shoes)")
    p.add_argument("--test-images", type=int, help="score at most N held-out images (default: all; real_teacher: 100)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0: torch's default)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every student run, e.g. loss.srp=8000")
    p.add_argument("--report-only", action="store_true",
                   help="tabulate the finished runs of the given variants, students and seeds; start none (a run "
                        "in progress elsewhere is left out)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 2 seeds, variants scratch kd kd_srp, one student, 2 steps, 32 px, 8/4 images")
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    p.add_argument("--keep", type=Path,
                   help="a folder (committed, e.g. benchmarks/results/real_teacher_main/runs) that holds a copy of "
                        "each finished run's metrics.json as DATASET/STUDENT/VARIANT/seedS.json: a run is copied "
                        "there as soon as it is scored, and a run found there counts as finished in a new --out "
                        "(a fresh checkout), so the runs outlive the output folder")
    args = p.parse_args(argv)

    spec = TASKS[args.task]
    check_shared(args.task)
    if args.quick:
        args.seeds = args.seeds if "--seeds" in (argv if argv is not None else sys.argv[1:]) else [0, 1]
        args.variants = args.variants or ["scratch", "kd", "kd_srp"]
        args.students = args.students or spec["students"][:1]
        args.datasets = args.datasets or list(spec["datasets"])[:1]
        args.steps, args.teacher_steps, args.size, args.batch = 2, 2, 32, 2
        args.train_images, args.test_images = 8, 4
        args.ndf = 8
    variants = args.variants or spec["variants"]
    students = args.students or spec["students"]
    datasets = args.datasets or list(spec["datasets"])
    for v in variants:
        if v not in VARIANTS or (v == "kd_srp_one" and args.task != "unpaired"):
            raise SystemExit(f"unknown variant {v!r} for task {args.task}")
    for s in students:
        if s not in STUDENTS:
            raise SystemExit(f"unknown student {s!r}; choose from {', '.join(STUDENTS)}")
        if s == "u16" and args.size % 128:
            raise SystemExit("student u16 (unet_128) needs --size a multiple of 128")
    if args.recipe == "main" and args.task != "real_teacher":
        raise SystemExit("--recipe main is for the real_teacher task (the main preset distils a pretrained teacher)")
    if args.recipe == "main" and (args.train_images or 2 * TRAIN_PHOTOS) % 2:
        raise SystemExit("--recipe main: --train-images must be even (half facades, half shoes)")
    if args.calibrate:
        if args.recipe != "main":
            raise SystemExit("--calibrate measures the main recipe's terms: add --recipe main")
        print(json.dumps(calibrate(args, students[0]), indent=1))
        return 0
    if args.recipe == "main":  # real_teacher only (checked above)
        args.train_images = args.train_images or 2 * TRAIN_PHOTOS
    elif args.task == "real_teacher":
        args.train_images = args.train_images or 200
        args.test_images = args.test_images or 100

    out = Path(args.out)
    tdir = out / args.task
    tdir.mkdir(parents=True, exist_ok=True)
    task = spec["task"]
    t_start = time.time()
    disk_cache = DiskTeacherCache(tdir / "teacher_cache")
    teacher_dirs: dict[str, Path] = {}
    rows = []
    skipped = 0
    if args.recipe == "main":
        budget = (f"{args.steps} steps, batch {args.batch}, the main preset's recipe (Adam 1e-3 / beta1 0.9, warm-up "
                  f"and cosine decay; the GAN term from half-way, PatchGAN ndf {args.ndf}; bf16 where the CPU has it; "
                  f"the best checkpoint on 40 val photos), {args.size} px squares, {args.train_images} training "
                  f"photos, {args.test_images or 'all'} held-out photos (the test photos of both sources and Kodak)")
    else:
        budget = (f"{args.steps} steps, batch {args.batch}, Adam lr 2e-4 (beta1 0.5; linear decay over the last "
                  f"half), {args.size} px (resize, no crop, no flip), PatchGAN ndf {args.ndf}, LSGAN, "
                  f"{args.train_images or 'all'} training images, {args.test_images or 'all'} held-out images")
    stamp = {"steps": args.steps, "teacher_steps": args.teacher_steps, "size": args.size, "batch": args.batch,
             "ndf": args.ndf, "train_images": args.train_images, "test_images": args.test_images, "extra": args.extra,
             "weights": WEIGHTS}
    if args.teacher_ngf != 64:  # only when set, so folders made before the option stay valid
        stamp["teacher_ngf"] = args.teacher_ngf
    if args.recipe != "pix2pix":  # likewise
        stamp.update(recipe=args.recipe, weights=MAIN_WEIGHTS)
    stamp_file = tdir / "budget.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) != stamp:
        raise SystemExit(f"{tdir} holds runs of another budget ({stamp_file}); choose another --out to keep both")
    stamp_file.write_text(json.dumps(stamp, indent=1) + "\n")
    log(f"{args.task}: datasets {datasets}, students {students}, variants {variants}, seeds {args.seeds}; {budget}")

    for ds in datasets:
        ds_over = dict(spec["datasets"][ds] or {})
        if args.recipe == "main":
            root = prepare_photo_squares(out / "data", args.size, args.train_images // 2)
            ds_over = {"data.root": str(root)}
        elif args.task == "real_teacher":
            root = prepare_real_teacher_data(out, args.train_images, args.test_images)
            ds_over = {"data.root": str(root), "data.direction": "AtoB", "data.test_split": "test"}
        ddir = tdir / ds
        teachers = {}
        for st in students:
            s_over, t_key = STUDENTS[st]
            if t_key not in teachers and not args.report_only:
                with disk_cache.active():
                    teachers[t_key] = teacher_for(args, task, ddir, ds_over, t_key)
            if task != "teacher_only":
                teacher_dirs[f"{ds}/{t_key}"] = ddir / f"teacher_{t_key}"
            for var in variants:
                per_seed, seeds_done = [], []
                for seed in args.seeds:
                    run_dir = ddir / st / var / f"seed{seed}"
                    o = main_recipe_overrides(args, root) if args.recipe == "main" else budget_overrides(args, task)
                    o.update(ds_over)
                    o.update(s_over)
                    o.update(variant_overrides(var, args.recipe))
                    o["seed"] = seed
                    command = "train" if (var == "scratch" and task != "teacher_only") else "distill"
                    kept = args.keep / ds / st / var / f"seed{seed}.json" if args.keep else None
                    if kept_runs.restore(kept, run_dir / "metrics.json"):
                        log(f"restored {run_dir}/metrics.json from {kept}")
                    if (run_dir / "metrics.json").is_file():
                        log(f"skip {run_dir} (metrics.json exists)")
                        skipped += 1
                    elif args.report_only:
                        continue
                    else:
                        log(f"run {run_dir}: srpkd {command}")
                        extra = {}
                        for item in args.extra:
                            keys, value = parse_override(item)
                            extra[".".join(keys)] = value
                        with disk_cache.active():
                            teacher = teachers[t_key] if command == "distill" else None
                            dt = train_run(command, run_dir, {**o, **extra}, teacher,
                                           config="main" if args.recipe == "main" else "default")
                        de = eval_run(run_dir, args.test_images)
                        log(f"done {run_dir}: train {dt:.0f} s, eval {de:.0f} s")
                    kept_runs.keep(run_dir / "metrics.json", kept)
                    per_seed.append(json.loads((run_dir / "metrics.json").read_text()))
                    seeds_done.append(seed)
                if not per_seed:
                    continue
                metrics = {f"{sec}.{key}": summarise([get_metric(m, sec, key) for m in per_seed])
                           for sec, key in spec["metrics"]}
                rows.append({"dataset": ds, "student": st, "variant": var, "metrics": metrics,
                             "runs": [str(ddir / st / var / f"seed{s}") for s in seeds_done]})
            # side-by-side report of the variants, first seed
            runs = [ddir / st / v / f"seed{args.seeds[0]}" for v in variants]
            runs = [r for r in runs if (r / "student.safetensors").is_file() and (r / "metrics.json").is_file()]
            if runs:
                write_comparison(runs, tdir / f"report_{ds}_{st}_seed{args.seeds[0]}.html")

    tfig = teacher_figures(tdir, spec, teacher_dirs)
    if args.task == "real_teacher":
        ident = identity_reference(tdir, Path(ds_over["data.root"]), args.size, args.test_images)
        f = ident["fidelity"]
        tfig["builtin:vintagify"] = ("ResNet-9 ngf 64, pretrained (vintagify G_A2B_epoch33); copying the input "
                                     f"instead of translating scores FID {f['fid']:.2f}, KID {f['kid']:.4f}, "
                                     f"PSNR {f['psnr']:.2f} dB, ST-LPIPS {f.get('st_lpips') or float('nan'):.4f} "
                                     "against the teacher")
    meta = {
        "task": args.task, "seeds": args.seeds, "variants": variants, "students": students, "datasets": datasets,
        "budget": budget, "recipe": args.recipe, "weights": MAIN_WEIGHTS if args.recipe == "main" else WEIGHTS,
        "command": "python benchmarks/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU, "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
                   f"{os.environ.get('OMP_WAIT_POLICY')}",
        "wall_s": time.time() - t_start, "skipped_runs": skipped,
        "teacher_cache": {"hits": disk_cache.hits, "misses": disk_cache.misses},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_results(tdir, spec, rows, tfig, meta)
    log(f"wrote {tdir / 'results.md'} and results.json ({meta['wall_s'] / 60:.1f} min)")
    print((tdir / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
