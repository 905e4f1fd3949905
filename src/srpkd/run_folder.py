"""The run folder: the names of the files a run holds, defined once for every command that writes or reads them.

::

    runs/<name>/
        config.yaml                    the resolved config             srpkd train / distill
        log.jsonl                      one JSON record per logged step and per validation
        tb/                            TensorBoard events
        samples.png                    input | teacher | student | target, fixed held-out images, labelled
        student.safetensors            the trained generator (A->B), written when training ends
        student_B.safetensors          unpaired task, both directions: the B->A generator
        checkpoints/last.safetensors   the training state to resume from (srpkd.train.state)
        checkpoints/best.safetensors   the state at the best validation metric
        checkpoints/step_0000500.safetensors   periodic states, the newest keep_last kept
        teacher_cache/A.rank0/         cache_draws: the teacher's outputs of K draws per item (srpkd.distill.draws)
        metrics.json                   srpkd eval
        profile.json                   latency of the student (end of srpkd distill, or srpkd profile -o);
        profile_teacher.json           and of its teacher
        report.html                    srpkd report
        .lock                          held by the srpkd train / distill process running in the folder

Names are relative to the run folder: ``run_dir / LAST`` is a path.
"""
from __future__ import annotations

CONFIG = "config.yaml"
LOG = "log.jsonl"
TENSORBOARD = "tb"
SAMPLES = "samples.png"
STUDENT = "student.safetensors"
STUDENT_B = "student_B.safetensors"
CHECKPOINTS = "checkpoints"
LAST = f"{CHECKPOINTS}/last.safetensors"
BEST = f"{CHECKPOINTS}/best.safetensors"
STEP_GLOB = "step_*.safetensors"  # periodic checkpoints, inside CHECKPOINTS
METRICS = "metrics.json"
PROFILE = "profile.json"
PROFILE_TEACHER = "profile_teacher.json"
REPORT = "report.html"
TEACHER_CACHE = "teacher_cache"
LOCK = ".lock"


def step_checkpoint(step: int) -> str:
    """The periodic checkpoint of ``step``; zero-padded so that names sort by step."""
    return f"{CHECKPOINTS}/step_{step:07d}.safetensors"
