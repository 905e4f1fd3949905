"""Evaluation protocols: translate a test split and score it; score folders of images.

Protocols (see docs/metrics.md):

* paired (pix2pix): generated test images vs the real test targets: FID, KID,
  and PSNR / SSIM to the ground truth of each input;
* unpaired (CycleGAN): generated test images vs real images of the target
  domain, train + test (the GAN Compression convention): FID, KID;
* teacher fidelity (whenever a teacher is known, and the only protocol of a
  ``teacher_only`` task): student outputs vs teacher outputs on the same
  inputs: FID, KID, PSNR, L1 and shift-tolerant LPIPS.

When a teacher is known, the teacher's own outputs are scored with the same
protocol, so that teacher and student sit side by side, and a copy of the
input is scored against the teacher as the baseline a student must beat
(``copy``: PSNR, L1, ST-LPIPS; only where input and output have one shape).

With a segmenter (``srpkd eval --segmenter``), a label -> photo direction also
gets its FCN-score (:mod:`.segmentation`): the outputs of student and teacher,
and the real photos where the data has them, segmented and compared with the
label maps that were the inputs.

Test images are resized to ``size`` x ``size`` (bicubic, no crop, no flip)
before translation; the real reference images go through the same
preprocessing, so both sides of FID have the same resolution before the
Inception resize. Features of real sets are cached by content hash.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from .. import run_folder
from ..assets import resolve_teacher
from ..checkpoint import load_generator
from ..config import check_task_data, load_config, task_for_data
from ..data.datasets import build_dataset, check_same_size
from ..data.images import check_pixels
from ..errors import SrpkdError
from ..models.modes import forward
from ..models.sizes import check_min_size
from . import image as image_metrics
from .fid import FeatureCache, content_key, extract_features, fid_from_features, kid_from_features
from .inception import inception
from .perceptual import stlpips
from .segmentation import FcnScorer, check_label_maps, infer_palette, label_ids

FORMAT = 1
OTHER = {"AtoB": "BtoA", "BtoA": "AtoB"}


# ----------------------------------------------------------------------------- helpers


def _progress(iterable, desc: str, enabled: bool, total: int | None = None):
    if not enabled:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit="batch", leave=False, dynamic_ncols=True)


def _finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


@dataclass
class Scorer:
    """What every protocol needs: a feature extractor, its cache, and run settings.

    ``extractor`` is any module mapping (N, 3, H, W) floats in [0, 255] to
    (N, D) features with an ``extractor_id`` string; by default the
    TF-Inception network. ``perceptual`` toggles ST-LPIPS.
    """

    extractor: Any = None
    cache: FeatureCache | None = None
    device: torch.device = torch.device("cpu")
    batch: int = 8
    progress: bool = True
    perceptual: bool = True

    def __post_init__(self):
        if self.cache is None:
            self.cache = FeatureCache()

    def network(self) -> Any:
        """The feature extractor, the TF-Inception network loaded on first use: a wrong path or a bad
        checkpoint is reported before a missing network file, and costs no network load."""
        if self.extractor is None:
            self.extractor = inception(self.device)
        return self.extractor

    @property
    def extractor_id(self) -> str:
        net = self.network()
        return getattr(net, "extractor_id", type(net).__name__)

    def features(self, images: torch.Tensor, desc: str = "features") -> torch.Tensor:
        """Features of an (N, 3, H, W) tensor of [-1, 1] images."""
        chunks = images.split(self.batch)
        return extract_features(self.network(), _progress(chunks, desc, self.progress, len(chunks)), self.device)

    def dataset_features(
        self, dataset: Dataset, key: str, files: Sequence[Path], desc: str, info: dict
    ) -> tuple[torch.Tensor, bool]:
        """Features of the ``key`` images of a dataset, cached by the files' content."""
        ckey = content_key(files, self.extractor_id, desc)

        def compute() -> torch.Tensor:
            batches = (b[key] for b in _loader(dataset, self.batch))
            n = math.ceil(len(dataset) / self.batch)
            label = f"real {info.get('name', '')}".strip()
            return extract_features(self.network(), _progress(batches, label, self.progress, n), self.device)

        return self.cache.features(ckey, compute, {**info, "preprocessing": desc, "extractor": self.extractor_id})


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over a network's architecture record and every tensor of its state (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    record = {"arch": getattr(model, "arch", type(model).__name__), "kwargs": getattr(model, "arch_kwargs", None)}
    h.update(json.dumps(record, sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"\n{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def teacher_key(teacher: torch.nn.Module, files: Sequence[Path], desc: str, scorer: Scorer,
                network_mode: str, seed: int) -> str:
    """The cache key of a teacher's outputs and features on a test set: the teacher's weights, the input files'
    bytes and preprocessing, and everything that could change an output bit (mode, seed, device, batch)."""
    run = f"teacher-outputs-1:{model_fingerprint(teacher)}:{network_mode}:{seed}:{scorer.device.type}:{scorer.batch}"
    return content_key(files, scorer.extractor_id, f"{desc}\n{run}")


def _loader(dataset: Dataset, batch: int) -> DataLoader:
    try:
        check_same_size(dataset)
    except SrpkdError:
        batch = 1  # sizes differ: one image per batch
    return DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)


def distribution_metrics(fake: torch.Tensor, real: torch.Tensor) -> dict:
    """FID and KID between two feature sets."""
    kid, kid_std, m = kid_from_features(fake, real)
    return {"fid": fid_from_features(fake, real), "kid": kid, "kid_std": kid_std, "kid_subset_size": m}


def paired_metrics(output: torch.Tensor, target: torch.Tensor) -> dict:
    return {"psnr": _finite(image_metrics.psnr(output, target)), "ssim": image_metrics.ssim(output, target)}


def fidelity_metrics(student: torch.Tensor, teacher: torch.Tensor, scorer: Scorer,
                     f_student: torch.Tensor, f_teacher: torch.Tensor) -> dict:
    out = distribution_metrics(f_student, f_teacher)
    out["psnr"] = _finite(image_metrics.psnr(student, teacher))
    out["l1"] = image_metrics.l1(student, teacher)
    if scorer.perceptual:
        out["st_lpips"] = perceptual_mean(student, teacher, scorer)
    return out


def copy_metrics(inputs: torch.Tensor, teacher: torch.Tensor, scorer: Scorer) -> dict | None:
    """PSNR, L1 and ST-LPIPS of a copy of the input to the teacher's outputs; None when the shapes differ."""
    if inputs.shape != teacher.shape:
        return None
    out = {"psnr": _finite(image_metrics.psnr(inputs, teacher)), "l1": image_metrics.l1(inputs, teacher)}
    if scorer.perceptual:
        out["st_lpips"] = perceptual_mean(inputs, teacher, scorer)
    return out


def fcn_metrics(out: dict[str, torch.Tensor], names: list[str], fcn: FcnScorer) -> dict:
    """FCN-scores of each model's outputs (and of the real photos, ``real``, when the data has them) against
    the label maps that were the inputs."""
    labels = label_ids(out["input"], fcn.palette)
    result: dict[str, Any] = {**fcn.describe(),
                              "ignored_fraction": check_label_maps(labels, fcn.palette, "the test inputs")}
    for name in names:
        result[name] = fcn.score(out[name], labels)
    if "target" in out:
        result["real"] = fcn.score(out["target"], labels)
    return result


@torch.no_grad()
def perceptual_mean(a: torch.Tensor, b: torch.Tensor, scorer: Scorer) -> float | None:
    if min(a.shape[-2:]) < 32:
        return None
    model = stlpips(scorer.device)
    values = [
        model(x.to(scorer.device), y.to(scorer.device)).cpu()
        for x, y in zip(a.split(scorer.batch), b.split(scorer.batch))
    ]
    return float(torch.cat(values).mean())


@torch.no_grad()
def translate(
    models: dict[str, torch.nn.Module], dataset: Dataset, scorer: Scorer, keep_target: bool,
    network_mode: str = "eval", seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Run every model on every test input (batched); returns CPU tensors in [-1, 1].

    ``network_mode="train"``: as pix2pix's test.py without ``--eval`` (:mod:`srpkd.models.modes`)."""
    outs: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    outs["input"], outs["target"] = [], []
    loader = _loader(dataset, scorer.batch)
    for batch in _progress(loader, "translate", scorer.progress, len(loader)):
        x = batch["A"].to(scorer.device)
        outs["input"].append(batch["A"])
        if keep_target:
            outs["target"].append(batch["B"])
        for name, model in models.items():
            y = forward(model, x, network_mode, seed)
            outs[name].append(y.float().clamp(-1, 1).cpu())
    return {k: torch.cat(v) for k, v in outs.items() if v}


# ----------------------------------------------------------------------------- datasets of a protocol


def _data_desc(mode: str, side: str, size: int) -> str:
    return f"{mode}:{side}:resize-bicubic:{size}"


def _test_data(
    mode: str, root, direction: str, test_split: str, train_split: str, size: int, max_images: int | None, task: str
):
    """(inputs dataset, target present, real reference (dataset, files, desc, info) or None)."""
    common = dict(load_size=size, crop_size=size, preprocess="resize", flip=False)
    if mode == "builtin":
        ds = build_dataset("builtin", None, split="test", crop_size=size, flip=False, max_images=max_images)
        return ds, False, None
    if mode == "aligned":
        ds = build_dataset("aligned", root, split=test_split, direction=direction, max_images=max_images, **common)
        side = direction[-1]  # target half: B for AtoB, A for BtoA
        info = {"name": f"{test_split} {side} halves", "count": len(ds)}
        ref = (ds, "B", ds.files, _data_desc("aligned-half", side, size), info) if task == "paired" else None
        return ds, task == "paired", ref
    if mode == "unaligned":
        src, tgt = direction[0], direction[-1]
        root = Path(root)
        ds = build_dataset("single", root / f"{test_split}{src}", max_images=max_images, **common)
        ref = None
        if task == "unpaired":
            parts = [
                build_dataset("single", root / f"{split}{tgt}", **common)
                for split in dict.fromkeys((train_split, test_split))
            ]
            files = [f for p in parts for f in p.files]
            info = {"name": f"{' + '.join(dict.fromkeys((train_split, test_split)))} {tgt}", "count": len(files)}
            ref = (ConcatDataset(parts), "A", files, _data_desc("single", tgt, size), info)
        return ds, False, ref
    if mode == "single":
        if root in (None, ""):
            raise SrpkdError("mode 'single' needs --data FOLDER of input images")
        return build_dataset("single", root, max_images=max_images, **common), False, None
    raise SrpkdError(f"unknown data mode {mode!r}")


# ----------------------------------------------------------------------------- protocols


def evaluate_generator(
    student: torch.nn.Module,
    *,
    task: str,
    mode: str,
    root=None,
    direction: str = "AtoB",
    test_split: str = "test",
    train_split: str = "train",
    size: int = 256,
    teacher: torch.nn.Module | None = None,
    max_images: int | None = None,
    scorer: Scorer | None = None,
    network_mode: str = "eval",
    seed: int = 0,
    fcn: FcnScorer | None = None,
) -> dict:
    """Score one direction of a generator (and its teacher, when given) on a test split.

    ``network_mode="train"`` runs student and teacher as pytorch-CycleGAN-and-pix2pix's test.py does
    without ``--eval`` (docs/metrics.md, "Train-mode evaluation"); ``seed`` seeds their dropout.
    ``fcn``: add the FCN-score of a label -> photo direction."""
    scorer = scorer or Scorer()
    teacher_multiple = getattr(teacher, "size_multiple", 4) if teacher is not None else 1
    multiple = max(getattr(student, "size_multiple", 4), teacher_multiple)
    if size <= 0 or size % multiple:
        raise SrpkdError(f"--size must be a positive multiple of {multiple}, got {size}")
    check_pixels(size, size)
    check_min_size(student, size, size)
    if teacher is not None:
        check_min_size(teacher, size, size, role="the teacher")
    if task == "teacher_only" and teacher is None:
        raise SrpkdError("a teacher_only evaluation needs a teacher (--teacher CKPT or builtin:vintagify)")
    check_task_data(task, mode)
    t0 = time.perf_counter()
    dataset, has_target, ref = _test_data(mode, root, direction, test_split, train_split, size, max_images, task)
    if len(dataset) < 2:
        raise SrpkdError(f"the test split has {len(dataset)} image(s); FID and KID need at least 2")
    models = {"student": student.to(scorer.device).eval()}
    # the teacher's outputs and features on a test set are the same for every student scored against it: cached
    # with the real-set features, keyed by the teacher's weights and the input files (docs/metrics.md)
    input_files = getattr(dataset, "files", None)
    tkey = None
    cached_teacher = None
    if teacher is not None:
        teacher = teacher.to(scorer.device).eval()
        if input_files and scorer.cache.enabled:
            tkey = teacher_key(teacher, input_files, _data_desc(mode, direction[0], size), scorer, network_mode, seed)
            n = len(dataset)
            cached_teacher = scorer.cache.get_tensors(tkey, {"outputs": (n, None, None, None), "features": (n, None)})
        if cached_teacher is None:
            models["teacher"] = teacher
    keep_target = has_target or (fcn is not None and mode == "aligned")  # FCN-scores the real photos too
    out = translate(models, dataset, scorer, keep_target=keep_target, network_mode=network_mode, seed=seed)
    if cached_teacher is not None:
        out["teacher"] = cached_teacher["outputs"]
    names = ["student"] + (["teacher"] if teacher is not None else [])  # computed now or read from the cache
    fcn_result = fcn_metrics(out, names, fcn) if fcn is not None else None  # before FID: fails fast
    feats = {name: scorer.features(out[name], f"features {name}") for name in models}
    if cached_teacher is not None:
        feats["teacher"] = cached_teacher["features"]
    elif tkey is not None:
        scorer.cache.put_tensors(tkey, {"outputs": out["teacher"], "features": feats["teacher"]},
                                 {"teacher_outputs": len(input_files), "size": size, "network_mode": network_mode})

    result: dict[str, Any] = {"n_images": len(dataset), "direction": direction, "size": size,
                              "network_mode": network_mode}
    if network_mode == "train":
        result["seed"] = seed
    if teacher is not None:
        result["teacher_cached"] = cached_teacher is not None
    if ref is not None:
        ref_ds, key, files, desc, info = ref
        real, cached = scorer.dataset_features(ref_ds, key, files, desc, info)
        result["reference"] = {**info, "cached": cached}
        if real.shape[0] < 2:
            raise SrpkdError(f"the real reference set has {real.shape[0]} image(s); FID needs at least 2")
        for name in names:
            result[name] = distribution_metrics(feats[name], real)
            if has_target:
                result[name].update(paired_metrics(out[name], out["target"]))
    if teacher is not None:
        result["fidelity"] = fidelity_metrics(
            out["student"], out["teacher"], scorer, feats["student"], feats["teacher"]
        )
        copy = copy_metrics(out["input"], out["teacher"], scorer)
        if copy is not None:
            result["copy"] = copy
    if fcn_result is not None:
        result["fcn"] = fcn_result
    result["time_s"] = round(time.perf_counter() - t0, 3)
    return result


def evaluate_run(
    target: str | os.PathLike,
    *,
    data: str | None = None,
    mode: str | None = None,
    direction: str | None = None,
    teacher: str | None = None,
    size: int | None = None,
    max_images: int | None = None,
    scorer: Scorer | None = None,
    network_mode: str = "eval",
    seed: int = 0,
    fcn: FcnScorer | None = None,
) -> dict:
    """Evaluate a run folder (its config gives data, task and teachers) or a bare checkpoint.

    Flags override the run's config. For an unpaired run with
    ``student_B.safetensors`` both directions are scored.
    """
    target = Path(target)
    if not target.exists():
        raise SrpkdError(f"not found: {target}")
    cfg = None
    if target.is_dir() and (target / run_folder.CONFIG).is_file():
        cfg = load_config(target / run_folder.CONFIG)
    student = load_generator(target)
    mode = mode or (cfg.data.mode if cfg else ("aligned" if data else "builtin"))
    root = data if data is not None else (cfg.data.root if cfg else None)
    direction = direction or (cfg.data.direction if cfg else "AtoB")
    if direction not in OTHER:
        raise SrpkdError(f"--direction must be AtoB or BtoA, got {direction!r}")
    size = size or (cfg.data.crop_size if cfg else 256)
    test_split = cfg.data.test_split if cfg else "test"
    train_split = cfg.data.train_split if cfg else "train"
    teacher_spec = teacher if teacher is not None else (cfg.teacher.checkpoint if cfg else None)
    if cfg:
        task = cfg.task
        if data is not None or mode != cfg.data.mode:  # the user points the run at other data
            task = task_for_data(mode) if cfg.task != "teacher_only" else "teacher_only"
    else:
        task = task_for_data(mode)
    if mode in ("aligned", "unaligned", "single") and not root:
        raise SrpkdError(f"data mode {mode!r} needs a data folder (--data DIR)")
    if fcn is not None and fcn.palette is None:
        fcn = dataclasses.replace(fcn, palette=infer_palette(root))
    scorer = scorer or Scorer()

    teacher_model = resolve_teacher(teacher_spec) if teacher_spec else None
    t0 = time.perf_counter()
    directions = {direction: evaluate_generator(
        student, task=task, mode=mode, root=root, direction=direction, test_split=test_split, train_split=train_split,
        size=size, teacher=teacher_model, max_images=max_images, scorer=scorer, network_mode=network_mode, seed=seed,
        fcn=fcn)}
    student_b = target / run_folder.STUDENT_B if target.is_dir() else None
    if task == "unpaired" and student_b is not None and student_b.is_file():
        teacher_b = cfg.teacher.checkpoint_B if cfg else None
        directions[OTHER[direction]] = evaluate_generator(
            load_generator(student_b), task=task, mode=mode, root=root, direction=OTHER[direction],
            test_split=test_split, train_split=train_split, size=size,
            teacher=resolve_teacher(teacher_b) if teacher_b else None, max_images=max_images, scorer=scorer,
            network_mode=network_mode, seed=seed)
    return {
        "format": FORMAT,
        "kind": "generator",
        "source": str(target),
        "task": task,
        "primary": direction,
        "data": {"mode": mode, "root": str(root) if root else None, "test_split": test_split, "size": size},
        "teacher": teacher_spec,
        "student_arch": {"arch": getattr(student, "arch", None), "kwargs": getattr(student, "arch_kwargs", None)},
        "extractor": scorer.extractor_id,
        "directions": directions,
        "time_s": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def default_output(target: str | os.PathLike) -> Path:
    """metrics.json in a run folder, or ``<checkpoint stem>.metrics.json`` beside a checkpoint."""
    target = Path(target)
    return target / run_folder.METRICS if target.is_dir() else target.with_name(f"{target.stem}.metrics.json")


# ----------------------------------------------------------------------------- folders of images


def _folder_dataset(folder, size: int | None, max_images: int | None):
    preprocess = "resize" if size else "none"
    s = size or 256
    return build_dataset(
        "single", folder, load_size=s, crop_size=s, preprocess=preprocess, flip=False, max_images=max_images
    )


def score_folders(
    images: str | os.PathLike,
    *,
    real: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    mode: str = "aligned",
    direction: str = "AtoB",
    split: str = "test",
    size: int | None = None,
    max_images: int | None = None,
    scorer: Scorer | None = None,
) -> dict:
    """FID / KID of a folder of generated images against real images.

    The real images are a folder (``real``) or the target side of a dataset
    (``data``: the target halves of an aligned split; for unaligned data the
    target domain's train + test, as in the unpaired protocol). Images keep
    their size (rounded to a multiple of 4) unless ``size`` is given. When
    every generated file has a real counterpart with the same file stem and
    size, PSNR and SSIM to it are reported too.
    """
    scorer = scorer or Scorer()
    t0 = time.perf_counter()
    if (real is None) == (data is None):
        raise SrpkdError("give the real images as --real DIR or --data DIR, one of them")
    fake_ds = _folder_dataset(images, size, max_images)
    s = size or 256
    pre = "resize" if size else "none"
    if real is not None:
        real_parts = [_folder_dataset(real, size, None)]
        files = list(real_parts[0].files)
        key, name = "A", str(real)
    elif mode == "aligned":
        ds = build_dataset(
            "aligned", data, split=split, direction=direction, load_size=s, crop_size=s, preprocess=pre, flip=False
        )
        real_parts, files, key, name = [ds], list(ds.files), "B", f"{data} {split} {direction[-1]} halves"
    elif mode == "unaligned":
        tgt = direction[-1]
        splits = list(dict.fromkeys(("train", split)))
        real_parts = [
            build_dataset("single", Path(data) / f"{sp}{tgt}", load_size=s, crop_size=s, preprocess=pre, flip=False)
            for sp in splits
        ]
        files = [f for p in real_parts for f in p.files]
        key, name = "A", f"{data} {' + '.join(splits)} {tgt}"
    else:
        raise SrpkdError(f"--mode must be aligned or unaligned with --data, got {mode!r}")
    real_ds = real_parts[0] if len(real_parts) == 1 else ConcatDataset(real_parts)
    layout, side = ("aligned-half", direction[-1]) if key == "B" else ("single", "")
    desc = f"{layout}:{side}:{pre}:{size or 'native'}"
    real_feats, cached = scorer.dataset_features(real_ds, key, files, desc, {"name": name, "count": len(files)})
    fake_feats = _dataset_features(fake_ds, scorer)
    if len(fake_ds) < 2 or real_feats.shape[0] < 2:
        raise SrpkdError("FID and KID need at least 2 images on each side")
    result: dict[str, Any] = {
        "format": FORMAT,
        "kind": "folders",
        "images": str(images),
        "real": name,
        "n_images": len(fake_ds),
        "n_real": int(real_feats.shape[0]),
        "reference_cached": cached,
        "extractor": scorer.extractor_id,
        **distribution_metrics(fake_feats, real_feats),
    }
    if real is not None:
        result.update(_matched_pairs(fake_ds, real_parts[0]))
    result["time_s"] = round(time.perf_counter() - t0, 3)
    return result


def _dataset_features(dataset: Dataset, scorer: Scorer) -> torch.Tensor:
    loader = _loader(dataset, scorer.batch)
    batches = _progress((b["A"] for b in loader), "features", scorer.progress, len(loader))
    return extract_features(scorer.network(), batches, scorer.device)


def _matched_pairs(fake_ds, real_ds) -> dict:
    """PSNR / SSIM when every generated image has a same-stem, same-size real image."""
    real_by_stem = {Path(p).stem: i for i, p in enumerate(real_ds.files)}
    pairs = [(i, real_by_stem.get(Path(p).stem)) for i, p in enumerate(fake_ds.files)]
    if any(j is None for _, j in pairs):
        return {}
    psnrs, ssims = [], []
    for i, j in pairs:
        a, b = fake_ds[i]["A"], real_ds[j]["A"]
        if a.shape != b.shape:
            return {}
        psnrs.append(image_metrics.psnr(a, b))
        ssims.append(image_metrics.ssim(a, b))
    return {"psnr": _finite(sum(psnrs) / len(psnrs)), "ssim": sum(ssims) / len(ssims), "matched_pairs": len(pairs)}
