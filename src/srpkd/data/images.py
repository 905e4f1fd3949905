"""Reading and writing images with Pillow and numpy: the only image I/O in srpkd.

Images become float tensors in [-1, 1], channels first (the generators' range).
Grayscale, palette and RGBA images are converted to RGB (RGBA over white).
Anything unreadable raises one :class:`SrpkdError` naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import SrpkdError
from ..files import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def max_pixels() -> int:
    """The largest image srpkd makes or reads, in pixels: Pillow's decompression-bomb limit (about 89 million)."""
    return int(Image.MAX_IMAGE_PIXELS or 89_478_485)


def check_pixels(height: int, width: int, what: str = "--size") -> None:
    """One line for a size that is not positive, or too large to hold: more pixels than an image srpkd reads
    may have (``--size 200000`` would otherwise try to allocate 120 GB, or take minutes to fail)."""
    if height <= 0 or width <= 0:
        raise SrpkdError(f"{what} must be positive, got {height}x{width}")
    if height * width > max_pixels():
        raise SrpkdError(f"{what} {height}x{width} is {height * width:,} pixels, more than the "
                         f"{max_pixels():,} that srpkd handles")


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder``; a clear error if it is missing or holds none."""
    folder = Path(folder)
    if not folder.exists():
        raise SrpkdError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise SrpkdError(f"not a folder: {folder}")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_file(p) and not p.name.startswith("."))
    if not files:
        raise SrpkdError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = (arr / max(arr.max(), 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image fully (so truncated files fail here, not later) and return it as RGB."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise SrpkdError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        if path.is_file() and path.stat().st_size == 0:
            reason = "empty file"
        else:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SrpkdError(f"cannot read image {path}: {reason}") from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [-1, 1]."""
    arr = np.asarray(to_rgb(img), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


def to_255(x: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """[-1, 1] -> float [0, 255] (clamped, on x's device), rounded like saved 8-bit images when ``quantize``.

    The one place the generator range meets pixel values: saved images, PSNR/SSIM and the
    Inception input all go through it, so a metric sees exactly what a saved PNG holds.
    """
    y = (x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return y.round() if quantize else y


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """Tensor (3, H, W) in [-1, 1] -> uint8 array (H, W, 3), rounded as pix2pix saves images."""
    return to_255(t.cpu()).to(torch.uint8).permute(1, 2, 0).numpy()


def to_image(t: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(t), "RGB")


def save_image(t_or_img, path: str | os.PathLike) -> None:
    """Save atomically (PNG or JPEG by extension)."""
    img = t_or_img if isinstance(t_or_img, Image.Image) else to_image(t_or_img)
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
