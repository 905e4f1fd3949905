"""Distillation pieces: the frozen teacher (with output/feature caching), the KD terms, a student derived from
its teacher."""
from .derive import check_derivable, derive_student
from .kd import KDTerms, TapMismatch
from .teacher import Teacher, TeacherOutput

__all__ = ["KDTerms", "TapMismatch", "Teacher", "TeacherOutput", "check_derivable", "derive_student"]
