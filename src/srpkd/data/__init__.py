"""Datasets and image I/O (Pillow + numpy; no torchvision)."""
from .images import is_image_file, list_images, load_image, save_image, to_image, to_rgb, to_tensor, to_uint8

__all__ = ["is_image_file", "list_images", "load_image", "save_image", "to_image", "to_rgb", "to_tensor", "to_uint8"]
