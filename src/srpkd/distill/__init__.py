"""Distillation pieces: the frozen teacher (with output/feature caching) and the KD terms."""
from .kd import KDTerms, TapMismatch
from .teacher import Teacher, load_teacher

__all__ = ["KDTerms", "TapMismatch", "Teacher", "load_teacher"]
