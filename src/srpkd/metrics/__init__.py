"""Evaluation metrics: per-image fidelity, Inception-feature distances (FID/KID),
shift-tolerant LPIPS, evaluation protocols and latency profiling."""
from .image import l1, psnr, ssim

__all__ = ["l1", "psnr", "ssim"]
