"""Per-image fidelity metrics on batches of generator-range images.

Every function takes two tensors ``a`` and ``b`` of shape (N, C, H, W) (or a
single (C, H, W) image) with values in [-1, 1], the range of the generators,
computes the metric for each image pair and returns the mean over the batch
as a Python float. ``reduction="none"`` returns the per-image values instead.

Conventions (documented in docs/metrics.md):

* ``psnr`` and ``ssim`` are computed on the 8-bit scale: both images are
  mapped to [0, 255] and rounded exactly as :func:`srpkd.data.images.to_uint8`
  saves them, so the value equals what a tool reading the saved PNGs reports.
  ``quantize=False`` skips the rounding (floats on [0, 255]).
  PSNR = 10 log10(255^2 / MSE) per image; identical images have MSE 0 and
  their PSNR is capped at ``max_db`` (100 dB) so that averages stay finite.
* ``ssim`` is the Gaussian-window SSIM of Wang et al. (2004): window 11,
  sigma 1.5, K1 0.01, K2 0.03, data range 255, averaged over channels and
  positions (torchmetrics' implementation). For images smaller than 11 px
  the window shrinks to the largest odd size that fits.
* ``l1`` is the mean absolute difference on the [-1, 1] floats, without
  quantisation: the same quantity as the output-distillation loss.
"""
from __future__ import annotations

import torch

from ..data.images import to_255

__all__ = ["psnr", "ssim", "l1", "to_255"]

PSNR_MAX_DB = 100.0


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() == 3:
        a = a.unsqueeze(0)
    if b.dim() == 3:
        b = b.unsqueeze(0)
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(
            f"expected two image batches of the same shape (N, C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a.detach().float(), b.detach().float()


def _reduce(values: torch.Tensor, reduction: str):
    if reduction == "mean":
        return float(values.mean())
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', not {reduction!r}")


def psnr(a: torch.Tensor, b: torch.Tensor, quantize: bool = True, max_db: float = PSNR_MAX_DB, reduction: str = "mean"):
    """Peak signal-to-noise ratio in dB on the 8-bit scale (higher is better)."""
    a, b = _pair(a, b)
    x, y = to_255(a, quantize).double(), to_255(b, quantize).double()
    mse = (x - y).pow(2).flatten(1).mean(1)
    db = 10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-30))
    db = db.clamp(max=max_db).float()
    return _reduce(db, reduction)


def ssim(a: torch.Tensor, b: torch.Tensor, quantize: bool = True, reduction: str = "mean"):
    """Structural similarity on the 8-bit scale, in [-1, 1] (higher is better; 1 = identical)."""
    # lazy: torchmetrics takes over 1 s to import; training imports this module for psnr only
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _pair(a, b)
    side = min(a.shape[-2], a.shape[-1])
    kernel = min(11, side if side % 2 == 1 else side - 1)
    if kernel < 1:
        raise ValueError("images too small for SSIM")
    values = structural_similarity_index_measure(
        to_255(a, quantize), to_255(b, quantize), gaussian_kernel=True, sigma=1.5,
        kernel_size=kernel, data_range=255.0, k1=0.01, k2=0.03, reduction="none",
    )
    return _reduce(values.float().reshape(-1), reduction)


def l1(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean"):
    """Mean absolute difference on [-1, 1] floats, in [0, 2] (lower is better)."""
    a, b = _pair(a, b)
    return _reduce((a - b).abs().flatten(1).mean(1), reduction)
