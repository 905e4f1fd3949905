"""Training for ``srpkd train`` and ``srpkd distill``. Start at loop.py, then tasks.py.

============== ==================================================================
loop.py        :class:`Trainer`: what every task shares (data order, schedule,
               logging, validation, checkpoints, signals, time limit)
tasks.py       the tasks, each building its networks and optimisers and running
               one step: Pix2PixTask, CycleGANTask, TeacherOnlyTask
direction.py   :class:`Direction`: one translation direction's generator,
               discriminator, teacher, KD terms and image pool
state.py       the checkpoint: what it holds, saving and restoring it
data.py        reproducible data order and augmentation; the run's datasets
caches.py      the teachers' caches: filled before training, or K draws on disk
validation.py  held-out metrics and the sample grid
runlog.py      log.jsonl, TensorBoard and the progress bar
schedule.py    the learning-rate schedules (linear, cosine with warm-up)
budget.py      a time budget: the steps planned from the measured step time
dist.py        multi-process helpers (torchrun)
============== ==================================================================
"""
