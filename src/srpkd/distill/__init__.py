"""Distillation pieces: the frozen teacher (with output/feature caching) and the KD terms."""
from .kd import KDTerms, TapMismatch
from .teacher import Teacher, TeacherOutput

__all__ = ["KDTerms", "TapMismatch", "Teacher", "TeacherOutput"]
