"""srpkd: semantic relation preserving knowledge distillation for image-to-image GANs."""
import os

# OpenMP threads that spin while they wait make PyTorch on a busy CPU many times
# slower: a main-job distillation step ran 6-7x slower at load 4 on 2 cores
# (BENCHMARKS.md); sleeping threads cost little on an idle machine. It must be set
# before torch loads OpenMP; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__
from .checkpoint import load_generator, save_generator
from .errors import SrpkdError
from .inference import translate
from .models import create_discriminator, create_generator, list_models

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
