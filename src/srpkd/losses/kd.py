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


class FeatureAdapter(nn.Conv2d):
    """FitNets regressor: a learned 1x1 convolution (with bias) from student width to teacher width."""

    def __init__(self, c_student: int, c_teacher: int) -> None:
        super().__init__(c_student, c_teacher, kernel_size=1)


def feature_kd_loss(adapted_student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L_feat = mean (adapter(F_s) - F_t)^2, the FitNets hint loss on already adapted features."""
    _require_same_shape(adapted_student, teacher, "feature_kd_loss", ("adapted student features", "teacher features"))
    with torch.autocast(device_type=teacher.device.type, enabled=False):
        return F.mse_loss(*_upcast(adapted_student, teacher))


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
