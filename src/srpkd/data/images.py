"""Reading and writing images with Pillow and numpy: the only image I/O in srpkd.

Images become float tensors in [-1, 1], channels first (the generators' range).
Grayscale, palette and RGBA images are converted to RGB (RGBA over white).
Images are shown the way every viewer shows them: the EXIF orientation a
camera writes is applied (and sizes read from headers account for it), and
16-bit images are scaled by their bit depth (65535 is white), not by their own
brightest pixel. Folders hidden by convention (``.git``, ``.ipynb_checkpoints``,
``__MACOSX``) are skipped like hidden files. Anything unreadable raises one
:class:`SrpkdError` naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

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
    files = sorted(p for p in folder.glob(pattern)
                   if is_image_file(p) and not is_hidden(p.relative_to(folder)) and p.is_file())
    if not files:
        raise SrpkdError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


HIDDEN_FOLDERS = ("__MACOSX",)  # besides every name that starts with "."


def is_hidden(relative: Path) -> bool:
    """A file that is hidden, or inside a hidden folder (``.git``, ``.ipynb_checkpoints``, ``__MACOSX``)."""
    return any(part.startswith(".") or part in HIDDEN_FOLDERS for part in relative.parts)


ORIENTATION = 0x0112  # the EXIF tag
TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 (as stored) when there is none or it is unreadable."""
    try:
        value = img.getexif().get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not make the pixels unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says (what every image viewer shows)."""
    if orientation(img) == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - as above: keep the stored pixels
        return img


def shown_size(img: Image.Image) -> tuple[int, int]:
    """(w, h) as shown, from the header only: swapped for orientations 5 to 8."""
    w, h = img.size
    return (h, w) if orientation(img) in TRANSPOSED else (w, h)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode.startswith("I;16") or img.mode == "I":
        # by the bit depth, as a viewer does: 16-bit sources (Pillow opens 16-bit PNG and TIFF as I;16, older
        # Pillows as I), 32-bit integer TIFFs when values go beyond 16 bits
        arr = np.asarray(img, dtype=np.float64)
        full = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) <= 65535 else 2.0**31 - 1
        arr = np.clip(np.rint(arr / full * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image fully (so truncated files fail here, not later) and return it as RGB."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(upright(img))
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
