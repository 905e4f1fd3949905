"""Networks: generators with named distillation taps, discriminators, a registry."""
from . import patchgan, resnet, unet  # noqa: F401  (registers the architectures)
from .base import Generator, init_weights, norm_layer
from .complexity import count_macs, count_params
from .registry import create_discriminator, create_generator, list_models, register

__all__ = [
    "Generator",
    "count_macs",
    "count_params",
    "create_discriminator",
    "create_generator",
    "init_weights",
    "list_models",
    "norm_layer",
    "register",
]
