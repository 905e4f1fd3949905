"""FCN-score: how well a segmentation network recognises generated photos (pix2pix, Isola et al. CVPR 2017).

A label -> photo generator is scored by running a segmenter the user provides
on its outputs and comparing the predicted classes with the label map that was
its input: pixel accuracy, mean class accuracy and mean IoU, computed from one
confusion matrix over the whole test split exactly as pix2pix's
``scripts/eval_cityscapes`` (and GAN Compression's mIoU) do: a class absent
from the ground truth has no accuracy and no IoU unless it was predicted (NaN
values are left out of the means).

Label maps are colour images; a :class:`Palette` turns them into class ids by
the nearest colour in RGB, since label maps are often JPEG-compressed (the
facades maps here are). A pixel farther than ``tolerance`` from every colour of
the palette, or nearest to one of its ``void`` colours, gets :data:`IGNORE`
and counts for nothing.

The segmenter is an ONNX file (run by ONNX Runtime) or a TorchScript file
(``torch.jit.load``); neither format runs pickled Python. It takes float32
``(N, 3, H, W)`` RGB images (range: :data:`INPUTS`) and returns class scores
``(N, C, h, w)`` with one channel per palette class, or class ids ``(N, h, w)``;
outputs of another size are resized to the label map's (scores bilinearly,
ids by nearest neighbour). Predicted ids outside the palette count as wrong.
"""
from __future__ import annotations

import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import to_255
from ..errors import SrpkdError, first_line
from ..runtime import onnx_session

IGNORE = 255  # the label of pixels that are scored by nothing
# RGB distance beyond which a pixel matches no class. JPEG's chroma subsampling smears colours across class
# borders: on the facades test maps 16% of pixels are farther than 60 from every colour, 7% farther than 100.
DEFAULT_TOLERANCE = 100.0
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# how the segmenter wants its input: srpkd's generator range, [0, 1], or [0, 1] normalised by ImageNet statistics
INPUTS = ("minus1", "unit", "imagenet")


@dataclass(frozen=True)
class Palette:
    """Class names and their label-map colours (RGB, 0-255); ``void`` colours are ignored pixels."""

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    void: tuple[tuple[int, int, int], ...] = field(default=())
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self):
        if not self.classes or len(self.classes) != len(self.colors):
            raise SrpkdError(f"palette {self.name}: {len(self.classes)} class names for {len(self.colors)} colours")
        if len(self.classes) >= IGNORE:
            raise SrpkdError(f"palette {self.name}: at most {IGNORE - 1} classes, got {len(self.classes)}")
        for c in self.colors + self.void:
            if len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c):
                raise SrpkdError(f"palette {self.name}: colour {c!r} is not three integers in 0..255")
        if not (isinstance(self.tolerance, (int, float)) and self.tolerance > 0):
            raise SrpkdError(f"palette {self.name}: tolerance must be a positive number, got {self.tolerance!r}")


# CMP Facade Database (Tylecek & Sara, GCPR 2013) as rendered in the pix2pix facades set: 12 classes in the
# dataset's label order, each drawn in a colour of a jet-like map. The colours are those measured on the
# flat regions of ../shared/data/facades/train (JPEG noise aside, every label pixel is one of them).
FACADES = Palette(
    name="facades",
    classes=("background", "facade", "window", "door", "cornice", "sill", "balcony", "blind", "deco",
             "molding", "pillar", "shop"),
    colors=((0, 0, 222), (0, 48, 255), (0, 128, 255), (0, 208, 255), (33, 255, 225), (112, 255, 142),
            (192, 255, 63), (255, 240, 0), (255, 160, 0), (255, 80, 0), (255, 0, 0), (174, 0, 0)),
)

# Cityscapes (Cordts et al. CVPR 2016): the 19 evaluated classes with their cityscapesScripts colours, in train-id
# order; the colours of the classes it does not evaluate are void. (License plates share the car's colour and are
# scored as car; pole groups share the pole's.)
CITYSCAPES = Palette(
    name="cityscapes",
    classes=("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
             "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
             "bicycle"),
    colors=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
            (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
            (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    void=((0, 0, 0), (111, 74, 0), (81, 0, 81), (250, 170, 160), (230, 150, 140), (180, 165, 180),
          (150, 100, 100), (150, 120, 90), (0, 0, 90), (0, 0, 110)),
)

PALETTES = {p.name: p for p in (FACADES, CITYSCAPES)}


def load_palette(spec: str) -> Palette:
    """A palette by name (:data:`PALETTES`) or from a JSON file.

    The file holds ``{"classes": [{"name": "road", "color": [128, 64, 128]}, ...], "void": [[0, 0, 0]],
    "tolerance": 30}`` (``void`` and ``tolerance`` optional).
    """
    if spec in PALETTES:
        return PALETTES[spec]
    path = Path(spec)
    if not path.is_file():
        raise SrpkdError(f"unknown palette {spec!r}: give one of {', '.join(PALETTES)} or a JSON file")
    try:
        data = json.loads(path.read_text())
        classes = data["classes"]
        palette = Palette(
            name=path.stem,
            classes=tuple(str(c["name"]) for c in classes),
            colors=tuple(tuple(c["color"]) for c in classes),
            void=tuple(tuple(c) for c in data.get("void", [])),
            tolerance=data.get("tolerance", DEFAULT_TOLERANCE),
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise SrpkdError(f"palette file {path} is not a palette ({type(e).__name__}: {first_line(e)}); see "
                         "docs/metrics.md, FCN-score") from None
    return palette


def infer_palette(root: str | os.PathLike | None) -> Palette:
    """The palette named by the dataset folder (``.../facades``, ``.../cityscapes``), else an error."""
    name = Path(str(root or "")).name.lower()
    found = [p for key, p in PALETTES.items() if key in name]
    if len(found) != 1:
        raise SrpkdError(f"cannot tell the label maps' palette from the data folder {root!r}: "
                         f"give --palette ({', '.join(PALETTES)} or a JSON file)")
    return found[0]


# ----------------------------------------------------------------------------- label maps


def label_ids(images: torch.Tensor, palette: Palette) -> torch.Tensor:
    """Class ids ``(N, H, W)`` (int64) of colour label maps ``(N, 3, H, W)`` in [-1, 1]: the nearest colour of
    the palette, :data:`IGNORE` where that is a void colour or farther than the palette's tolerance."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise SrpkdError(f"label maps must be (N, 3, H, W) RGB images, got {tuple(images.shape)}")
    colors = torch.tensor(palette.colors + palette.void, dtype=torch.float32)
    out = []
    for image in images.detach().cpu():  # one image at a time: the distances are (H*W, colours)
        rgb = to_255(image).permute(1, 2, 0).reshape(-1, 3)
        nearest_dist, nearest = torch.cdist(rgb, colors).min(1)
        valid = (nearest < len(palette.colors)) & (nearest_dist <= palette.tolerance)
        out.append(torch.where(valid, nearest, torch.full_like(nearest, IGNORE)).reshape(image.shape[-2:]))
    return torch.stack(out)


def check_label_maps(ids: torch.Tensor, palette: Palette, what: str, minimum: float = 0.5) -> float:
    """The fraction of ignored pixels; an error when too few pixels are palette colours (not label maps)."""
    ignored = float((ids == IGNORE).float().mean())
    if 1 - ignored < minimum:
        raise SrpkdError(
            f"{what} do not look like {palette.name} label maps: only {1 - ignored:.0%} of their pixels are within "
            f"{palette.tolerance:g} of a palette colour (FCN-score needs a label -> photo direction and the "
            "palette of its label maps)"
        )
    return ignored


# ----------------------------------------------------------------------------- scores


def confusion(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(n, n + 1)`` counts: rows the true class, columns the predicted one (the last: outside the palette).

    Pixels whose target is :data:`IGNORE` are left out."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    keep = target != IGNORE
    t, p = target[keep].long(), pred[keep].long()
    p = torch.where((p >= 0) & (p < n_classes), p, torch.full_like(p, n_classes))
    return torch.bincount(t * (n_classes + 1) + p, minlength=n_classes * (n_classes + 1)).reshape(
        n_classes, n_classes + 1)


def _nan_mean(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else None


def _value(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def fcn_scores(conf: torch.Tensor, classes: tuple[str, ...] | list[str]) -> dict:
    """Pixel accuracy, mean class accuracy, mean IoU and per-class figures of a :func:`confusion` matrix."""
    c = conf.double().numpy()
    n = len(classes)
    diag = np.diag(c[:, :n])
    true = c.sum(1)  # pixels of each class in the label maps
    predicted = c[:, :n].sum(0)  # pixels predicted as each class
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = diag / true
        iou = diag / (true + predicted - diag)
    total = c.sum()
    return {
        "pixel_acc": float(diag.sum() / total) if total else None,
        "mean_class_acc": _nan_mean(acc),
        "mean_iou": _nan_mean(iou),
        "per_class": {name: {"acc": _value(acc[i]), "iou": _value(iou[i]), "pixels": int(true[i])}
                      for i, name in enumerate(classes)},
    }


# ----------------------------------------------------------------------------- the segmenter


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


class Segmenter:
    """A segmentation network from an ONNX or TorchScript file: ``(N, 3, H, W)`` images in [-1, 1] ->
    ``(N, H, W)`` class ids.

    TorchScript files are zip archives and are read by ``torch.jit.load``; anything else is given to ONNX
    Runtime. ``inputs`` says how the network wants its pixels (:data:`INPUTS`).
    """

    def __init__(self, path: str | os.PathLike, inputs: str = "minus1", threads: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        if inputs not in INPUTS:
            raise SrpkdError(f"unknown segmenter input {inputs!r}; choose one of: {', '.join(INPUTS)}")
        self.inputs = inputs
        self.device = torch.device(device)
        if not self.path.is_file():
            raise SrpkdError(f"segmenter not found: {self.path}")
        self.module = self.session = None
        if _is_zip(self.path):
            self.runtime = "torchscript"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch.jit.load is deprecated in favour of torch.export
                    self.module = torch.jit.load(io.BytesIO(self.path.read_bytes()), map_location=self.device)
            except (RuntimeError, OSError, ValueError) as e:
                why = first_line(e)
                raise SrpkdError(f"segmenter {self.path} is not a readable TorchScript file ({why})") from None
            self.module.eval()
        else:
            self.runtime = "onnx"
            self.session = onnx_session(self.path, threads=threads, device=self.device)
            self.input_name = self.session.get_inputs()[0].name

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.inputs == "minus1":
            return x
        x = (x + 1) / 2
        if self.inputs == "unit":
            return x
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        try:
            if self.module is not None:
                with torch.inference_mode():
                    out = self.module(x.to(self.device))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                if isinstance(out, dict):
                    out = out.get("out", next(iter(out.values())))
                return out.cpu()
            return torch.from_numpy(self.session.run(None, {self.input_name: x.cpu().numpy()})[0])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime and TorchScript raise their own types
            raise SrpkdError(f"segmenter {self.path} failed on a {'x'.join(map(str, x.shape))} batch "
                             f"({type(e).__name__}: {first_line(e)[:300]})") from None

    def __call__(self, images: torch.Tensor, n_classes: int) -> torch.Tensor:
        """Class ids ``(N, H, W)`` of ``images`` (N, 3, H, W) in [-1, 1], at the images' size."""
        size = tuple(images.shape[-2:])
        out = self._run(self._prepare(images))
        if out.dim() == 4 and out.shape[1] == 1 and not out.is_floating_point():
            out = out[:, 0]
        if out.dim() == 3 and not out.is_floating_point():  # class ids
            ids = out.long()
            if tuple(ids.shape[-2:]) != size:
                ids = F.interpolate(ids[:, None].float(), size=size, mode="nearest")[:, 0].long()
            return ids
        if out.dim() != 4 or out.shape[0] != images.shape[0] or not out.is_floating_point():
            raise SrpkdError(f"segmenter {self.path} returned {out.dtype} {tuple(out.shape)}; expected class scores "
                             "(N, C, h, w) or integer class ids (N, h, w)")
        if out.shape[1] != n_classes:
            raise SrpkdError(f"segmenter {self.path} scores {out.shape[1]} classes; the palette has {n_classes}")
        if tuple(out.shape[-2:]) != size:
            out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
        return out.argmax(1)

    def describe(self) -> str:
        return f"{self.path} ({self.runtime}, input {self.inputs})"


@dataclass
class FcnScorer:
    """A segmenter and the palette of the label maps it is scored against (None: :func:`infer_palette` of the
    data folder, filled in by :func:`srpkd.metrics.evaluate.evaluate_run`)."""

    segmenter: Segmenter
    palette: Palette | None
    batch: int = 8

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        n = len(self.palette.classes)
        return torch.cat([self.segmenter(chunk, n) for chunk in images.split(self.batch)])

    def score(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """FCN-scores of ``images`` (N, 3, H, W) in [-1, 1] against class ids ``labels`` (N, H, W)."""
        pred = self.predict(images)
        return fcn_scores(confusion(pred, labels, len(self.palette.classes)), self.palette.classes)

    def describe(self) -> dict:
        return {"segmenter": str(self.segmenter.path), "runtime": self.segmenter.runtime,
                "input": self.segmenter.inputs, "palette": self.palette.name, "classes": list(self.palette.classes),
                "ignore_label": IGNORE, "tolerance": self.palette.tolerance}
