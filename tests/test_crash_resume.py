"""Crash and resume, proven: real `srpkd distill` processes killed and resumed.

A tiny paired distillation (ResNet-9 ngf 4 teacher and student, PatchGAN ndf 8,
32 px, CPU, ``--deterministic``, one checkpoint per step) is run once without
interruption (the reference) and then again under fault injection:

* **chain of targeted interruptions**: SIGKILL in the middle of a training
  step (between the generator and the discriminator update), SIGKILL in the
  middle of a checkpoint write (the temporary file half written), SIGTERM,
  SIGKILL during a validation, SIGINT; each followed by ``--resume``;
* **random SIGKILLs**: at random moments after the first step (steps,
  checkpoint writes, validations, the final samples and report), each
  followed by ``--resume``.

After every kill the run folder must hold a loadable ``checkpoints/last.safetensors``
(once the first checkpoint was written). When the resumed run ends, its weights,
optimizer states and RNG states must be ``torch.equal`` to the reference, no
``.*.tmp`` file may be left, and log.jsonl must hold each step exactly once.
SIGTERM/SIGINT must exit with 128+signal after saving a checkpoint at the step reached.

Targeted kills use a probe (a wrapper around ``srpkd.cli.main``) that pauses
the process at the chosen point and tells the test, so the kill lands exactly
there; the probe changes no computation. ``KILLS`` counts every fault injected
(printed at the end of the module, see RELIABILITY.md).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from srpkd import create_generator, save_generator
from srpkd.checkpoint import _TAG, load_generator, load_tensors, save_tensors
from srpkd.config import load_config

from conftest import srpkd_env, write_image

STEPS = 16
KILLS = {"SIGKILL": 0, "SIGTERM": 0, "SIGINT": 0}

PROBE = textwrap.dedent(
    '''
    """Run the srpkd CLI, pausing at one chosen point (SRPKD_PROBE=phase:n) and telling the test."""
    import os, sys, time
    from pathlib import Path

    phase, n = os.environ.get("SRPKD_PROBE", "none:0").split(":")
    n = int(n)
    mark = Path(os.environ.get("SRPKD_PROBE_MARK", "/nonexistent"))
    counts = {}

    def hit(p):
        counts[p] = counts.get(p, 0) + 1
        return p == phase and counts[p] == n

    def pause(p):
        mark.write_text(p)
        time.sleep(3600)  # the test kills us here

    import safetensors.torch as st
    import srpkd.train.loop as loop

    save_file = st.save_file

    def probed_save_file(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        name = os.path.basename(str(filename))
        if name.startswith(".last.safetensors.") and hit("ckpt"):
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])  # half written, as a crash mid-write leaves it
            pause("ckpt")

    st.save_file = probed_save_file

    backward_step = loop.Trainer._backward_step

    def probed_backward_step(self, losses, opt, params, step):
        if opt is self.optD and hit("dstep"):  # the generator was already updated in this step
            pause("dstep")
        return backward_step(self, losses, opt, params, step)

    loop.Trainer._backward_step = probed_backward_step

    evaluate = loop.Trainer.evaluate

    def probed_evaluate(self):
        if hit("eval"):
            pause("eval")
        return evaluate(self)

    loop.Trainer.evaluate = probed_evaluate

    from srpkd.cli.main import main

    sys.exit(main(sys.argv[1:]))
    '''
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    for split, n in (("train", 6), ("test", 2)):
        for i in range(n):
            write_image(root / "data" / split / f"{i}.png", 64, 32, seed=10 + i)
    torch.manual_seed(0)
    save_generator(create_generator("resnet_9blocks", ngf=4), root / "teacher.safetensors")
    (root / "probe.py").write_text(PROBE)
    w = {"root": root}
    # the uninterrupted reference run
    p = launch(w, "ref")
    assert p.wait(timeout=300) == 0, read_err(w, "ref")
    w["ref"] = root / "runs" / "ref"
    yield w
    print(f"\nfaults injected in test_crash_resume: {KILLS} (total {sum(KILLS.values())})")


def args(w, name: str, resume: bool = False) -> list[str]:
    root = w["root"]
    if resume:
        return ["distill", "--resume", str(root / "runs" / name), "--quiet"]
    return [
        "distill", "--teacher", str(root / "teacher.safetensors"), "--data", str(root / "data"), "--mode", "aligned",
        "--task", "paired", "--steps", str(STEPS), "--batch-size", "2", "--size", "32", "--out-dir", str(root / "runs"),
        "--name", name, "--deterministic", "--device", "cpu", "--seed", "0", "--quiet",
        "--set", "student.ngf=4", "--set", "discriminator.ndf=8", "--set", "data.load_size=36",
        "--set", "data.fixed_crops=false", "--set", "data.max_images=null", "--set", "threads=1",
        "--set", "ckpt_every=1", "--set", "eval_every=3", "--set", "log_every=1",
        "--set", "loss.gan=1", "--set", "loss.gan_start=0",  # the probes count discriminator updates from step 1
    ]


def launch(w, name: str, resume: bool = False, probe: str | None = None) -> subprocess.Popen:
    root = w["root"]
    env = srpkd_env(OMP_NUM_THREADS="1")
    mark = root / f"{name}.mark"
    mark.unlink(missing_ok=True)
    if probe:
        env.update(SRPKD_PROBE=probe, SRPKD_PROBE_MARK=str(mark))
        cmd = [sys.executable, str(root / "probe.py"), *args(w, name, resume)]
    else:
        cmd = [sys.executable, "-m", "srpkd", *args(w, name, resume)]
    out = open(root / f"{name}.out", "a")
    err = open(root / f"{name}.err", "w")
    return subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=root)


def read_err(w, name: str) -> str:
    return (w["root"] / f"{name}.err").read_text()


def wait_for(cond, timeout: float = 120.0, proc: subprocess.Popen | None = None, what: str = "") -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return cond()
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def logged_step(run: Path) -> int:
    """The last training step written to log.jsonl (log_every=1)."""
    f = run / "log.jsonl"
    if not f.is_file():
        return 0
    steps = [0]
    for line in f.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "lr" in rec:
            steps.append(rec["step"])
    return max(steps)


def kill(p: subprocess.Popen, sig: int = signal.SIGKILL) -> int:
    os.kill(p.pid, sig)
    KILLS[signal.Signals(sig).name] += 1
    return p.wait(timeout=120)


def check_after_crash(run: Path, must_exist: bool = True) -> int | None:
    """(a): the last checkpoint is loadable and not ahead of the log; returns its step."""
    last = run / "checkpoints" / "last.safetensors"
    if not last.is_file():
        assert not must_exist, f"{last} disappeared"
        return None
    tensors, meta = load_tensors(last)
    assert meta["kind"] == "training"
    assert 1 <= meta["step"] <= STEPS
    g = load_generator(last)
    assert g.arch == load_config(run / "config.yaml").student.arch  # the configured student, rebuilt
    return meta["step"]


def check_finished(w, run: Path) -> None:
    """(b) equal to the uninterrupted run, (c) no temporary files, the log holds each step once."""
    ref = w["ref"]
    a, meta_a = load_tensors(run / "checkpoints" / "last.safetensors")
    b, meta_b = load_tensors(ref / "checkpoints" / "last.safetensors")
    assert meta_a["step"] == meta_b["step"] == STEPS
    assert sorted(a) == sorted(b)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed run differs from the uninterrupted one in {len(differ)} tensors, e.g. {differ[:5]}"
    s_a, _ = load_tensors(run / "student.safetensors")
    s_b, _ = load_tensors(ref / "student.safetensors")
    assert all(torch.equal(s_a[k], s_b[k]) for k in s_b)
    left = [str(p.relative_to(run)) for p in run.rglob(".*.tmp")]
    assert not left, f"temporary files left behind: {left}"
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines() if '"lr"' in line]
    assert steps == list(range(1, STEPS + 1)), steps


@pytest.mark.slow
def test_targeted_interruptions_then_resume(world):
    """SIGKILL mid-step, SIGKILL mid-checkpoint-write, SIGTERM, SIGKILL mid-validation, SIGINT; resumed each time."""
    w, name = world, "chain"
    run = w["root"] / "runs" / name
    mark = w["root"] / f"{name}.mark"

    # 1. SIGKILL during step 3, between the generator and the discriminator update
    p = launch(w, name, probe="dstep:3")
    wait_for(mark.exists, proc=p, what="step 3")
    assert kill(p) == -signal.SIGKILL
    assert check_after_crash(run) == 2

    # 2. SIGKILL while last.safetensors of the third step of this launch is half written
    p = launch(w, name, resume=True, probe="ckpt:3")
    wait_for(mark.exists, proc=p, what="a checkpoint write")
    kill(p)
    assert check_after_crash(run) == 4  # the old file, intact
    assert list((run / "checkpoints").glob(".last.safetensors.*.tmp")), "the probe should have left a half-written temp"

    # 3. SIGTERM: finish the step, save, exit 128 + 15
    p = launch(w, name, resume=True)
    wait_for(lambda: logged_step(run) >= 7, proc=p, what="step 7")
    rc = kill(p, signal.SIGTERM)
    err = read_err(w, name)
    assert rc == 128 + signal.SIGTERM, (rc, err)
    assert "Traceback" not in err, err
    reached = logged_step(run)
    assert f"stopped at step {reached}" in err, err
    assert check_after_crash(run) == reached

    # 4. SIGKILL inside a validation
    p = launch(w, name, resume=True, probe="eval:1")
    wait_for(mark.exists, proc=p, what="a validation")
    kill(p)
    assert check_after_crash(run) is not None

    # 5. SIGINT (Ctrl-C): as SIGTERM, exit 130
    p = launch(w, name, resume=True)
    start = check_after_crash(run)
    wait_for(lambda: logged_step(run) >= min(start + 2, STEPS - 1), proc=p, what="two more steps")
    rc = kill(p, signal.SIGINT)
    err = read_err(w, name)
    assert rc == 128 + signal.SIGINT, (rc, err)
    assert "Traceback" not in err, err
    assert check_after_crash(run) == logged_step(run)

    # 6. run to the end
    p = launch(w, name, resume=True)
    assert p.wait(timeout=300) == 0, read_err(w, name)
    check_finished(w, run)


@pytest.mark.slow
def test_random_sigkills_then_resume(world):
    """SIGKILL at random moments (seeded), resume each time, until the run completes."""
    w, name = world, "random"
    run = w["root"] / "runs" / name
    rng = random.Random(int(os.environ.get("SRPKD_CRASH_SEED", "1234")))
    kills, restarts, launches = 0, 0, 0
    resume = False
    while True:
        launches += 1
        assert launches < 20
        p = launch(w, name, resume=resume)
        if kills < 4:
            # somewhere after the first step: a step, a checkpoint write, a validation, the final save/report
            wait_for(lambda: logged_step(run) >= 1, timeout=180, proc=p, what="the first step")
            time.sleep(rng.uniform(0.0, 3.0))
            if p.poll() is None:
                kill(p)
                kills += 1
                step = check_after_crash(run, must_exist=False)
                if step is None:  # killed before the first checkpoint: nothing to resume, start again
                    shutil.rmtree(run)
                    restarts += 1
                    resume = False
                else:
                    resume = True
                continue
        rc = p.wait(timeout=300)
        assert rc == 0, read_err(w, name)
        break
    print(f"random kills: {kills}, restarts from scratch: {restarts}, launches: {launches}")
    check_finished(w, run)


@pytest.mark.slow
def test_a_second_resume_of_a_running_run_is_refused(world):
    """Two processes in one run folder would write one log and one checkpoint in turn: while a run is in its
    third step, --resume of it stops with one line naming the running process and touches nothing; once that
    process is SIGKILLed (the kernel drops its lock), the same --resume continues the run to the reference."""
    w, name = world, "twice"
    run = w["root"] / "runs" / name
    mark = w["root"] / f"{name}.mark"
    first = launch(w, name, probe="dstep:3")  # pauses in step 3, holding the folder
    wait_for(mark.exists, proc=first, what="step 3")
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    second = launch(w, name, resume=True)
    assert second.wait(timeout=120) == 2  # srpkd's exit status for an error it explains
    err = read_err(w, name).strip().splitlines()
    assert len(err) == 1 and f"run folder {run} is in use by another process (pid {first.pid})" in err[0], err
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    assert first.poll() is None  # the first run is unharmed
    assert kill(first) == -signal.SIGKILL
    p = launch(w, name, resume=True)
    assert p.wait(timeout=300) == 0, read_err(w, name)
    check_finished(w, run)


def test_atomic_write_keeps_umask_permissions(tmp_path):
    """Checkpoints are written through mkstemp (0600); the result gets the usual 0666 & ~umask."""
    save_tensors(tmp_path / "c.safetensors", {"a": torch.zeros(1)}, {})
    old = os.umask(0o022)
    try:
        save_tensors(tmp_path / "d.safetensors", {"a": torch.zeros(1)}, {})
    finally:
        os.umask(old)
    assert (tmp_path / "d.safetensors").stat().st_mode & 0o777 == 0o644


def test_stale_temp_of_a_killed_writer_is_removed(tmp_path):
    """The temp file a SIGKILLed writer leaves is removed by the next atomic write into the folder;
    temps of live processes, other hosts and other programs are kept."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.safetensors.{_TAG}-{dead.pid}.abcd1234.tmp"
    live = tmp_path / f".last.safetensors.{_TAG}-{os.getppid()}.abcd1234.tmp"
    other_host = tmp_path / f".last.safetensors.{_TAG}x-{dead.pid}.abcd1234.tmp"
    foreign = tmp_path / ".something.tmp"
    for p in (stale, live, other_host, foreign):
        p.write_bytes(b"half")
    save_tensors(tmp_path / "best.safetensors", {"a": torch.zeros(1)}, {})
    assert not stale.exists()
    assert live.exists() and other_host.exists() and foreign.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".best")]
