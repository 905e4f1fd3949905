"""Ordinary distillation losses: output KD, FitNets feature KD and two relational baselines.

Every loss computes in at least float32 with autocast off, so it behaves the
same inside a bfloat16/float16 autocast region (see :func:`result_dtype`).
Argument order follows each function's signature: the output and feature KD
losses take the student first, the relational baselines take the teacher first.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SrpkdError
from .relation import result_dtype


def _require_same_shape(a: torch.Tensor, b: torch.Tensor, what: str, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise SrpkdError(
            f"{what}: {names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same shape"
        )


def _upcast(*tensors: torch.Tensor) -> list[torch.Tensor]:
    dtype = result_dtype(*tensors)
    return [t.to(dtype) for t in tensors]


def output_kd_loss(student_out: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """L_KD = mean |G_s(x) - G_t(x)|, the L1 distance between student and teacher images."""
    _require_same_shape(student_out, teacher_out, "output_kd_loss", ("student output", "teacher output"))
    with torch.autocast(device_type=student_out.device.type, enabled=False):
        return F.l1_loss(*_upcast(student_out, teacher_out))


def colour_kd_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, pool: int = 8) -> torch.Tensor:
    """L_colour = mean |P(G_s(x)) - P(G_t(x))|, output KD on the images' local mean colours.

    P is adaptive average pooling to ceil(H / pool) x ceil(W / pool) cells: the means of the ``pool`` x
    ``pool`` blocks when ``pool`` divides the size (about that size otherwise), or with ``pool`` 0 the
    per-channel means of the whole image. A colour cast counts in full here, where output KD mixes it with
    the per-pixel errors of texture and edges, whose signs a cast does not share."""
    _require_same_shape(student_out, teacher_out, "colour_kd_loss", ("student output", "teacher output"))
    if pool < 0:
        raise SrpkdError(f"colour_kd_loss: pool must be 0 (whole image) or positive, got {pool}")
    h, w = student_out.shape[-2:]
    size = (1, 1) if pool == 0 else (-(-h // pool), -(-w // pool))
    with torch.autocast(device_type=student_out.device.type, enabled=False):
        s, t = (F.adaptive_avg_pool2d(x, size) for x in _upcast(student_out, teacher_out))
        return F.l1_loss(s, t)


def random_corner(h: int, w: int, sh: int, sw: int, align: int = 1) -> tuple[int, int]:
    """A random top-left corner of an ``sh`` x ``sw`` window inside ``h`` x ``w``, at multiples of ``align``, drawn
    from torch's global generator (top first, so that a resumed run draws the same)."""
    top = align * int(torch.randint(0, (h - sh) // align + 1, ()))
    left = align * int(torch.randint(0, (w - sw) // align + 1, ()))
    return top, left


def random_square(a: torch.Tensor, b: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size`` x ``size`` square of two (N, C, H, W) batches, drawn from torch's global generator
    (so a resumed run draws the same squares); the whole images when ``size`` is 0 or not smaller than them."""
    h, w = a.shape[-2:]
    if size <= 0 or (size >= h and size >= w):
        return a, b
    sh, sw = min(size, h), min(size, w)
    top, left = random_corner(h, w, sh, sw)
    return a[..., top:top + sh, left:left + sw], b[..., top:top + sh, left:left + sw]


def perceptual_kd_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, metric: nn.Module,
                       crop: int = 0) -> torch.Tensor:
    """L_perc = mean_n metric(G_s(x)_n, G_t(x)_n) on one random ``crop`` square of the batch (0: whole images);
    ``metric`` maps two (N, 3, H, W) batches in [-1, 1] to (N,) distances (ST-LPIPS in srpkd)."""
    _require_same_shape(student_out, teacher_out, "perceptual_kd_loss", ("student output", "teacher output"))
    s, t = random_square(student_out, teacher_out, crop)
    with torch.autocast(device_type=student_out.device.type, enabled=False):
        return metric(*_upcast(s, t)).mean()


class FeatureAdapter(nn.Conv2d):
    """FitNets regressor: a learned 1x1 convolution (with bias) from student width to teacher width."""

    def __init__(self, c_student: int, c_teacher: int) -> None:
        super().__init__(c_student, c_teacher, kernel_size=1)


def feature_kd_loss(adapted_student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L_feat = mean (adapter(F_s) - F_t)^2, the FitNets hint loss on already adapted features."""
    _require_same_shape(adapted_student, teacher, "feature_kd_loss", ("adapted student features", "teacher features"))
    with torch.autocast(device_type=teacher.device.type, enabled=False):
        return F.mse_loss(*_upcast(adapted_student, teacher))


def feature_kd_loss_factorized(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor,
                               bias: torch.Tensor | None = None) -> torch.Tensor:
    """The FitNets hint loss mean (W F_s + b - F_t)^2 of a 1x1 adapter (W, b), without the adapted map.

    With s_p, t_p the student and teacher feature vectors at pixel p (all images),
    G = sum_p s_p s_p^T (C_s x C_s) and X = sum_p s_p t_p^T (C_s x C_t), the sum of
    squares expands to

        tr(W G W^T) - 2 tr(W X) + sum_p ||t_p||^2 + 2 b^T W sum_p s_p - 2 b^T sum_p t_p + n ||b||^2

    so the C_t-channel adapted map is never formed: two batched matmuls read the
    features once, and the backward pass works in the student's (narrower) channels.
    Equal to :func:`feature_kd_loss` of the adapter's output up to float32 rounding, in
    value and gradients (tests/test_losses.py). The terms cancel, so in float32 the
    relative rounding grows as the loss falls below the teacher's mean square m:
    loss at 0.8 m: 6e-8 (gradients 2e-6); at 5e-2 m: 3e-6 (2e-5); at 1e-2 m: 1e-5
    (5e-5); at 5e-4 m: 2e-4 (direct form: 5e-6). Float64 inputs compute in float64.
    Computed with autocast off, as the direct form; about 2-3x faster than it on a
    CPU for a 16 -> 64 channel adapter at 128 px (BENCHMARKS.md section 2.1).
    """
    if (weight.dim() != 4 or weight.shape[2:] != (1, 1) or student.dim() != 4 or teacher.dim() != 4
            or student.shape[1] != weight.shape[1] or teacher.shape[1] != weight.shape[0]
            or student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]):
        raise SrpkdError(
            f"feature_kd_loss_factorized: student features {tuple(student.shape)}, teacher features "
            f"{tuple(teacher.shape)} and adapter weight {tuple(weight.shape)} do not match (a 1x1 adapter from "
            "student to teacher channels, same batch and spatial size)"
        )
    with torch.autocast(device_type=teacher.device.type, enabled=False):
        s, t, w = _upcast(student.flatten(2), teacher.flatten(2), weight.flatten(1))
        gram = torch.bmm(s, s.mT).sum(0)  # C_s x C_s
        cross = torch.bmm(s, t.mT).sum(0)  # C_s x C_t
        total = (w @ gram * w).sum() - 2 * (w * cross.T).sum() + t.square().sum()
        if bias is not None:
            b = bias.to(w.dtype)
            n = s.shape[0] * s.shape[2]
            total = total + 2 * b @ (w @ s.sum((0, 2))) - 2 * b @ t.sum((0, 2)) + n * b.square().sum()
        return total / t.numel()


def similarity_preserving_loss(f_t: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori, ICCV 2019), for one layer pair.

    With Q = features flattened per sample (b x CHW), G = Q Q^T (b x b) with
    each row L2-normalised: L = ||G_t - G_s||_F^2 / b^2. Only the batch size
    must agree; channels and spatial size may differ.
    """
    if f_t.dim() < 2 or f_s.dim() < 2 or f_t.shape[0] != f_s.shape[0]:
        raise SrpkdError(
            f"similarity_preserving_loss: teacher features {tuple(f_t.shape)} and student features "
            f"{tuple(f_s.shape)} must have the same batch size"
        )
    b = f_t.shape[0]
    with torch.autocast(device_type=f_s.device.type, enabled=False):
        qt, qs = (q.flatten(1) for q in _upcast(f_t, f_s))
        gt = F.normalize(qt @ qt.T, dim=1)
        gs = F.normalize(qs @ qs.T, dim=1)
        return (gt - gs).square().sum() / b**2


def attention_map(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of Zagoruyko & Komodakis: mean over channels of |f|^p, flattened, L2-normalised per sample."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_transfer_loss(f_t: torch.Tensor, f_s: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017), for one layer pair.

    L = mean over samples and positions of (a_s - a_t)^2 with a = :func:`attention_map`.
    This is the authors' released formulation; the paper writes the per-sample
    ||a_s - a_t||_2 (not squared) scaled by beta / 2, which differs only by a
    monotone transform and a constant. Batch and spatial size must agree,
    channels may differ.
    """
    if p <= 0:
        raise SrpkdError(f"attention_transfer_loss: p must be positive, got {p}")
    if f_t.dim() != 4 or f_s.dim() != 4 or f_t.shape[0] != f_s.shape[0] or f_t.shape[2:] != f_s.shape[2:]:
        raise SrpkdError(
            f"attention_transfer_loss: teacher features {tuple(f_t.shape)} and student features "
            f"{tuple(f_s.shape)} must both be (batch, channels, height, width) with the same batch, height and width"
        )
    with torch.autocast(device_type=f_s.device.type, enabled=False):
        at, as_ = (attention_map(f, p) for f in _upcast(f_t, f_s))
        return (as_ - at).square().mean()
