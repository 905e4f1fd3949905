"""Datasets and image I/O (Pillow + numpy; no torchvision)."""
from .builtin import BuiltinPhotos
from .datasets import AlignedDataset, SingleDataset, UnalignedDataset, build_dataset, check_same_size, image_size
from .images import is_image_file, list_images, load_image, save_image, to_image, to_rgb, to_tensor, to_uint8
from .transforms import PREPROCESS, Transform

__all__ = [
    "PREPROCESS",
    "AlignedDataset",
    "BuiltinPhotos",
    "SingleDataset",
    "Transform",
    "UnalignedDataset",
    "build_dataset",
    "check_same_size",
    "image_size",
    "is_image_file",
    "list_images",
    "load_image",
    "save_image",
    "to_image",
    "to_rgb",
    "to_tensor",
    "to_uint8",
]
