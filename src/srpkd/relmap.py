"""Relation maps: what the student learned about the structure of an image, beside what the teacher knows.

For the features F (C x h x w) of one image at a tap, row i of the semantic
relation matrix (docs/method.md §3.1) is

    R_i = A_i / sqrt(||A_i||^2 + eps),   A_ij = q_i . q_j   for every pixel j,

where q_i is pixel i's activation pattern: how much each pixel of the image
resembles pixel i, as the network encodes it. The relation loss asks the
student's rows to match the teacher's, pixel by pixel:
L_SRP = sum_i ||R_t,i - R_s,i||^2 / (hw)^2. A relation map shows, for a few
query pixels i of one image, the teacher's row R_t,i and the student's row
R_s,i as heat-maps over the image, beside the image with the query pixel
marked; the pixel's term ||R_t,i - R_s,i||^2 (0 = the same row, at most 4)
is printed over the student's map. Both rows are unit vectors, so one colour
scale per query pixel serves both.

``srpkd relmap RUN IMAGE -o out.png`` draws one; ``srpkd report`` draws one on
the run's first held-out image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from .config import Config
from .errors import SrpkdError
from .files import atomic_path
from .plots import figure_png, pyplot
from .train.data import SeededDataset, run_dataset

EPS = 1e-8  # as in srpkd.losses.relation: the row of an all-zero pixel is exactly 0
# query pixels when none are given, as fractions (x, y) of the image: the centre and two off-centre points
DEFAULT_FRACTIONS = ((0.5, 0.5), (0.25, 0.3), (0.75, 0.7))

Pixel = tuple[int, int]  # (x, y): column and row of an image


def default_pixels(width: int, height: int) -> list[Pixel]:
    return [(min(width - 1, int(fx * width)), min(height - 1, int(fy * height))) for fx, fy in DEFAULT_FRACTIONS]


def parse_pixel(text: str) -> Pixel:
    """``"X,Y"`` -> (x, y)."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = (int(p.strip()) for p in parts)
    except ValueError:
        raise SrpkdError(f"--pixels: {text!r} is not X,Y (two whole numbers, e.g. 120,64)") from None
    return x, y


def check_pixels(pixels: Sequence[Pixel], width: int, height: int, source: str) -> None:
    if not pixels:
        raise SrpkdError("no query pixels")
    for x, y in pixels:
        if not (0 <= x < width and 0 <= y < height):
            raise SrpkdError(f"pixel {x},{y} is outside {source} ({width}x{height}; x in 0..{width - 1}, "
                             f"y in 0..{height - 1})")


def fit_size(width: int, height: int, size: int, multiple: int) -> tuple[int, int]:
    """(w, h) with the longer side ``size`` and the aspect ratio kept, each a multiple of ``multiple``."""
    scale = size / max(width, height)
    return tuple(max(multiple, round(v * scale / multiple) * multiple) for v in (width, height))  # type: ignore


def feature_index(pixel: Pixel, image_hw: tuple[int, int], feature_hw: tuple[int, int]) -> int:
    """The flat index of the feature-map pixel that covers image pixel (x, y)."""
    (x, y), (H, W), (h, w) = pixel, image_hw, feature_hw
    return (y * h // H) * w + x * w // W


def relation_rows(features: torch.Tensor, queries: Sequence[int], eps: float = EPS) -> torch.Tensor:
    """Rows ``queries`` (flat pixel indices) of R for features (C, h, w): (k, h, w) float64."""
    c, h, w = features.shape
    q = features.detach().reshape(c, h * w).double()
    a = q[:, list(queries)].T @ q  # (k, hw): A_ij for the query pixels i
    return (a / (a.square().sum(1, keepdim=True) + eps).sqrt()).reshape(len(queries), h, w)


@dataclass
class RelationMaps:
    """Teacher and student relation rows of one image at one tap, for query pixels in image coordinates."""

    image: torch.Tensor  # (3, H, W) in [-1, 1]
    pixels: list[Pixel]
    tap: str
    teacher: torch.Tensor  # (k, h, w) float64
    student: torch.Tensor  # (k, h, w) float64
    labels: list[str] | None = None  # how to name each query pixel (default: its (x, y) in ``image``)

    @property
    def distances(self) -> torch.Tensor:
        """Per query pixel, ||R_t,i - R_s,i||^2: its term of the relation loss (times (hw)^2)."""
        return (self.teacher - self.student).square().flatten(1).sum(1)


@torch.no_grad()
def tap_features(model: nn.Module, x: torch.Tensor, tap: str) -> torch.Tensor:
    """The features of one image (3, H, W) at ``tap``, the model in eval mode (its mode is restored)."""
    was = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        _, feats = model(x[None].to(device), taps=[tap])
    finally:
        model.train(was)
    return feats[tap][0].float().cpu()


def relation_maps(teacher: nn.Module, student: nn.Module, image: torch.Tensor, pixels: Sequence[Pixel],
                  tap: str = "encoder", labels: list[str] | None = None) -> RelationMaps:
    """Relation rows of teacher and student at ``tap`` for the query ``pixels`` (x, y) of ``image`` (3, H, W)."""
    H, W = image.shape[-2:]
    check_pixels(pixels, W, H, "the image")
    ft, fs = tap_features(teacher, image, tap), tap_features(student, image, tap)
    if ft.shape[-2:] != fs.shape[-2:]:
        raise SrpkdError(f"the teacher's {tap!r} features are {ft.shape[-2]}x{ft.shape[-1]} and the student's "
                         f"{fs.shape[-2]}x{fs.shape[-1]}: relation rows need one feature grid (choose another --tap)")
    queries = [feature_index(p, (H, W), tuple(ft.shape[-2:])) for p in pixels]
    return RelationMaps(image, list(pixels), tap, relation_rows(ft, queries), relation_rows(fs, queries), labels)


def held_out_relation_maps(cfg: Config, teacher: nn.Module, student: nn.Module) -> RelationMaps:
    """Relation maps on the first image of a run's test split (preprocessed as its validation does), at the
    default pixels and the run's first relation-loss tap."""
    image = SeededDataset(run_dataset(cfg, cfg.data.test_split, train=False), cfg.seed)[(0, 0)]["A"]
    tap = cfg.loss.srp_taps[0] if cfg.loss.srp_taps else "encoder"
    return relation_maps(teacher, student, image, default_pixels(image.shape[-1], image.shape[-2]), tap)


def render(maps: RelationMaps, title: str | None = None) -> bytes:
    """PNG: one row per query pixel, columns input (pixel marked) | teacher's row | student's row."""
    plt = pyplot()
    H, W = maps.image.shape[-2:]
    picture = ((maps.image.detach().float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
    k = len(maps.pixels)
    cell = 2.8
    fig, axes = plt.subplots(k, 3, figsize=(3 * cell + 0.6, k * cell * H / W + 0.7), squeeze=False,
                             layout="constrained")
    h, w = maps.teacher.shape[-2:]
    for r, ((x, y), t, s, d) in enumerate(zip(maps.pixels, maps.teacher, maps.student, maps.distances)):
        low, high = min(0.0, float(t.min()), float(s.min())), max(float(t.max()), float(s.max()), 1e-12)
        axes[r, 0].imshow(picture, interpolation="lanczos")
        label = maps.labels[r] if maps.labels else f"({x}, {y})"
        axes[r, 0].set_title(f"query pixel {r + 1}: {label}", fontsize=9)
        for ax, row in ((axes[r, 1], t), (axes[r, 2], s)):
            shown = ax.imshow(row.numpy(), cmap="inferno", vmin=low, vmax=high, extent=(0, W, H, 0),
                              interpolation="nearest")
        axes[r, 1].set_title("teacher", fontsize=9)
        axes[r, 2].set_title(f"student  (||Rt-Rs||² = {float(d):.3f})", fontsize=9)
        fig.colorbar(shown, ax=list(axes[r, 1:]), fraction=0.03, pad=0.02)
        for ax in axes[r]:
            ax.plot([x + 0.5], [y + 0.5], marker="o", markersize=9, markerfacecolor="none", markeredgecolor="#00e5ff",
                    markeredgewidth=2)
            ax.plot([x + 0.5], [y + 0.5], marker="+", markersize=9, color="#00e5ff", markeredgewidth=1.5)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title or f"relation rows at tap '{maps.tap}' ({h}x{w} features)", fontsize=10)
    return figure_png(fig, dpi=100)


def write_png(data: bytes, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise SrpkdError(f"{path}: a relation map is a PNG file; name it .png")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
