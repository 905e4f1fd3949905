"""FID and KID from feature sets, and an on-disk cache of real-set features.

The distances are torchmetrics' own formulas, applied to features that srpkd
extracts once per image set:

* FID (Heusel et al. 2017): Fréchet distance between Gaussians fitted to the
  two feature sets, ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), computed
  in float64 by ``torchmetrics.image.fid._compute_fid`` (eigenvalues of
  S1 S2, no explicit matrix square root); covariances unbiased (N - 1).
* KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
  kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets
  (``torchmetrics.image.kid.poly_mmd``); subset size min(1000, n_real,
  n_fake), 100 subsets, a fixed seed so that the value is reproducible.

Why not the ``FrechetInceptionDistance`` / ``KernelInceptionDistance``
modules themselves: they take images and keep running sums (FID) or feature
lists (KID) in private states, so the features of a real image set could not
be computed once, cached on disk and shared by both metrics and by later
runs. The functional pieces used here are the same code those modules run.
"""
from __future__ import annotations

import hashlib
import logging
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from safetensors.torch import load_file, save_file

from ..data.images import to_255
from ..errors import SrpkdError, first_line
from ..files import atomic_path

log = logging.getLogger("srpkd.metrics")

KID_SUBSETS = 100
KID_MAX_SUBSET = 1000


# ----------------------------------------------------------------------------- distances


def feature_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (float64) of an (N, D) feature matrix."""
    f = feats.double()
    if f.dim() != 2 or f.shape[0] < 2:
        raise SrpkdError(f"FID needs at least 2 images per set, got {f.shape[0] if f.dim() == 2 else 0}")
    mu = f.mean(0)
    d = f - mu
    return mu, d.T @ d / (f.shape[0] - 1)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), >= 0."""
    # lazy: torchmetrics takes over 1 s to import, and most srpkd commands never compute a FID
    from torchmetrics.image.fid import _compute_fid

    value = float(_compute_fid(mu1.double(), sigma1.double(), mu2.double(), sigma2.double()))
    return max(value, 0.0)  # round-off can leave -1e-12 for identical sets


def fid_from_features(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def kid_from_features(
    a: torch.Tensor, b: torch.Tensor, subset_size: int | None = None, subsets: int = KID_SUBSETS, seed: int = 0
) -> tuple[float, float, int]:
    """KID mean and standard deviation over subsets, and the subset size used.

    With ``subset_size`` equal to both set sizes every subset is the whole
    set, so one evaluation is made (standard deviation 0).
    """
    # lazy: torchmetrics takes over 1 s to import, and most srpkd commands never compute a KID
    from torchmetrics.image.kid import poly_mmd

    a, b = a.double(), b.double()
    n_a, n_b = a.shape[0], b.shape[0]
    m = min(KID_MAX_SUBSET, n_a, n_b) if subset_size is None else int(subset_size)
    if m < 2 or m > min(n_a, n_b):
        raise SrpkdError(f"KID needs a subset size between 2 and the smaller set size ({min(n_a, n_b)}), got {m}")
    if m == n_a == n_b:
        return float(poly_mmd(a, b)), 0.0, m
    g = torch.Generator().manual_seed(seed)
    values = torch.stack([
        poly_mmd(a[torch.randperm(n_a, generator=g)[:m]], b[torch.randperm(n_b, generator=g)[:m]])
        for _ in range(subsets)
    ])
    return float(values.mean()), float(values.std(unbiased=False)), m


# ----------------------------------------------------------------------------- features


@torch.no_grad()
def extract_features(
    extractor: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Features of batches of [-1, 1] images (rounded to 8 bits first, as saved images are)."""
    out = [extractor(to_255(x).to(device)).float().cpu() for x in batches]
    if not out:
        raise SrpkdError("no images to extract features from")
    return torch.cat(out)


def cache_dir() -> Path:
    return Path(os.environ.get("SRPKD_CACHE") or Path.home() / ".cache" / "srpkd")


def content_key(files: Sequence[str | os.PathLike], extractor_id: str, preprocessing: str = "") -> str:
    """sha256 over the extractor id, the preprocessing and every file's bytes, in order."""
    h = hashlib.sha256()
    h.update(f"srpkd-features-1\n{extractor_id}\n{preprocessing}\n{len(files)}\n".encode())
    for path in files:
        fh = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    fh.update(block)
        except OSError as e:
            raise SrpkdError(f"cannot read {path}: {e.strerror or e}") from None
        h.update(fh.digest())
    return h.hexdigest()


def _tensor_problem(t, shape: tuple[int | None, ...], min_rows: int = 1) -> str | None:
    """Why a cached tensor cannot be one of ``shape`` (None: any size on that axis) with at least ``min_rows`` on
    its first axis; None when it can."""
    if not isinstance(t, torch.Tensor) or t.dim() != len(shape) or not t.is_floating_point():
        return f"expected a {len(shape)}-D float tensor, got {getattr(t, 'dtype', type(t).__name__)} " \
               f"of shape {tuple(getattr(t, 'shape', ()))}"
    if any(want is not None and have != want for have, want in zip(t.shape, shape)) or 0 in t.shape \
            or t.shape[0] < min_rows:
        return f"shape {tuple(t.shape)}, expected {tuple('*' if d is None else d for d in shape)}" \
               f"{f' with at least {min_rows} rows' if min_rows > 1 else ''}"
    if not bool(torch.isfinite(t).all()):
        return "values that are not finite"
    return None


class FeatureCache:
    """Features of image sets (and, for the teacher of an evaluation, its outputs), one safetensors file of
    named tensors per content key, written atomically."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = Path(root) if root else cache_dir() / "features"
        self.enabled = enabled

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get_tensors(
        self, key: str, shapes: dict[str, tuple[int | None, ...]], min_rows: int = 1
    ) -> dict[str, torch.Tensor] | None:
        """The cached tensors of ``key``, each of its shape in ``shapes`` (and at least ``min_rows`` rows), or None;
        a damaged entry (unreadable, or a valid file with a missing tensor or one of the wrong shape, dtype or
        values) is reported on the log and treated as missing."""
        if not self.enabled:
            return None
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            stored = load_file(str(path))
            problem = next((f"{name}: {p}" for name, shape in shapes.items()
                            if (p := _tensor_problem(stored.get(name), shape, min_rows))), None)
        except Exception as e:  # noqa: BLE001 - a damaged cache entry is recomputed, never fatal
            problem = first_line(e)
        if problem:
            log.warning(f"srpkd: ignoring the damaged feature cache entry {path} ({problem}); recomputing")
            return None
        return {name: stored[name] for name in shapes}

    def put_tensors(self, key: str, tensors: dict[str, torch.Tensor], info: dict | None = None) -> None:
        if not self.enabled:
            return
        try:
            with atomic_path(self.path(key)) as tmp:
                save_file({name: t.float().contiguous() for name, t in tensors.items()}, str(tmp),
                          metadata={"info": json.dumps(info or {})})
        except SrpkdError as e:  # an unwritable cache only costs time
            log.warning(f"srpkd: feature cache not written ({e})")

    def get(self, key: str, rows: int | None = None) -> torch.Tensor | None:
        """The cached features of ``key`` (``rows`` of them when given, at least 2), or None (see get_tensors)."""
        hit = self.get_tensors(key, {"features": (rows, None)}, min_rows=2)
        return None if hit is None else hit["features"]

    def put(self, key: str, feats: torch.Tensor, info: dict | None = None) -> None:
        self.put_tensors(key, {"features": feats}, info)

    def features(
        self, key: str, compute: Callable[[], torch.Tensor], info: dict | None = None
    ) -> tuple[torch.Tensor, bool]:
        """Cached features for ``key`` or ``compute()`` them and store; returns (features, was_cached)."""
        count = (info or {}).get("count")
        hit = self.get(key, count if isinstance(count, int) else None)
        if hit is not None:
            return hit, True
        feats = compute()
        self.put(key, feats, info)
        return feats, False
