"""srpkd: semantic relation preserving knowledge distillation for image-to-image GANs."""
from .checkpoint import load_generator, save_generator
from .errors import SrpkdError
from .inference import translate
from .models import create_discriminator, create_generator, list_models

__version__ = "0.1.0"

__all__ = [
    "SrpkdError",
    "__version__",
    "create_discriminator",
    "create_generator",
    "list_models",
    "load_generator",
    "save_generator",
    "translate",
]
