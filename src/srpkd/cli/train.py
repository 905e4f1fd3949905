"""``srpkd train`` and ``srpkd distill``: one training loop, with or without a frozen teacher.

``srpkd distill`` with no arguments runs the main job (preset ``main``): the
pretrained vintagify CycleGAN teacher distilled into a ResNet-9 ngf 16 student
on the built-in photos at 128 px. ``srpkd train`` trains a generator with no
teacher (a pix2pix / CycleGAN teacher, or the scratch-student baseline).

Multi-process: ``torchrun --nproc_per_node=N -m srpkd.cli.main distill ...``.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import torch

from .. import run_folder
from ..config import Config, load_config, save_config
from ..errors import SrpkdError
from ..files import FileTaken, hold_lock, read_json_object
from ..metrics.latency import median_ms, where
from ..models import count_macs, count_params
from ..report import write_report
from ..train import dist
from ..train.budget import parse_duration
from ..train.loop import Trainer, default_run_name, resolve_device


def _add_common(p) -> None:
    p.add_argument("--config", metavar="NAME_OR_PATH",
                   help="a preset name (see srpkd/configs) or a YAML file (default: main)")
    p.add_argument("--teacher", metavar="CKPT", help="teacher checkpoint or builtin:vintagify (teacher.checkpoint)")
    p.add_argument("--teacher-b", metavar="CKPT", help="B->A teacher of an unpaired task (teacher.checkpoint_B)")
    p.add_argument("--data", metavar="DIR", help="dataset root (data.root)")
    p.add_argument("--mode", choices=["builtin", "aligned", "unaligned", "single"], help="dataset layout (data.mode)")
    p.add_argument("--task", choices=["teacher_only", "paired", "unpaired"], help="training task (task)")
    p.add_argument("--direction", choices=["AtoB", "BtoA"], help="data.direction")
    p.add_argument("--steps", type=int, help="optimisation steps (optim.steps)")
    p.add_argument("--epochs", type=int, help="epochs, used when steps is 0 (optim.epochs)")
    p.add_argument("--time", metavar="DURATION", help="train for this long (90s, 10m, 1.5h; optim.time): the steps, "
                                                      "warm-up and decay are planned from the measured step time")
    p.add_argument("--batch-size", type=int, help="optim.batch_size (per process)")
    p.add_argument("--size", type=int, help="training crop size in px (data.crop_size)")
    p.add_argument("--name", help="run folder name (default: a time stamp)")
    p.add_argument("--out-dir", help="folder of run folders (default: runs)")
    p.add_argument("--resume", metavar="RUN", help="continue a run folder (a path, or a name under --out-dir)")
    p.add_argument("--deterministic", action="store_true", default=None, help="deterministic algorithms, fixed seeds")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set loss.srp=2000 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    for name, distill in (("distill", True), ("train", False)):
        help_ = (
            "distil a frozen teacher into a small student (no arguments: the main job)"
            if distill
            else "train a generator without a teacher (pix2pix/CycleGAN, or the scratch-student baseline)"
        )
        p = sub.add_parser(name, help=help_, description=help_)
        _add_common(p)
        p.set_defaults(func=run, distill=distill)


def flag_overrides(args) -> list[str]:
    """The convenience flags as ``key=value`` overrides (applied before ``--set``)."""
    pairs = [
        ("teacher.checkpoint", args.teacher), ("teacher.checkpoint_B", args.teacher_b), ("data.root", args.data),
        ("data.mode", args.mode), ("task", args.task), ("data.direction", args.direction),
        ("optim.steps", args.steps), ("optim.epochs", args.epochs),
        ("optim.time", parse_duration(args.time) if args.time is not None else None),
        ("optim.batch_size", args.batch_size),
        ("data.crop_size", args.size), ("name", args.name), ("out_dir", args.out_dir),
        ("deterministic", args.deterministic), ("seed", args.seed), ("device", args.device),
    ]
    if args.time is None and (args.steps is not None or args.epochs is not None):
        pairs.append(("optim.time", 0))  # a step or epoch count given on the command line beats a preset's time
    if args.time is not None:
        pairs.append(("time_limit", 0))  # the budget given ends training; a preset's guard for its own budget does not
    out = []
    for key, value in pairs:
        if value is not None:
            out.append(f"{key}={value}" if not isinstance(value, str) else f"{key}={_quote(value)}")
    return out + list(args.overrides)


def _quote(s: str) -> str:
    return json.dumps(s)  # valid YAML: a path with ':' or spaces stays a string


def resolve_run_dir(args, cfg) -> tuple[Path, bool]:
    if args.resume:
        p = Path(args.resume)
        if not p.is_dir():
            p = Path(args.out_dir or "runs") / args.resume
        if not (p / run_folder.LAST).is_file():
            if (p / run_folder.CONFIG).is_file():  # stopped before its first checkpoint: start it again
                return p, False
            raise SrpkdError(f"cannot resume {args.resume}: no {run_folder.LAST} in {p}")
        return p, True
    return Path(cfg.out_dir) / cfg.name, False


def _fmt_count(n: int, unit: str = "") -> str:
    return f"{n / 1e9:.2f} G{unit}" if n >= 1e9 else f"{n / 1e6:.2f} M{unit}"


def summary_table(trainer) -> list[str]:
    size = trainer.cfg.data.crop_size
    rows = []
    s_params, s_macs = count_params(trainer.G), count_macs(trainer.G, size)
    lines = [f"{'':10s}{'params':>12s}{f'MACs@{size}px':>14s}"]
    if trainer.teacher is not None:
        t = trainer.teacher.generator
        t_params, t_macs = count_params(t), count_macs(t, size)
        lines.append(f"{'teacher':10s}{_fmt_count(t_params):>12s}{_fmt_count(t_macs):>14s}")
        rows.append((t_params, t_macs))
    lines.append(f"{'student':10s}{_fmt_count(s_params):>12s}{_fmt_count(s_macs):>14s}")
    if rows:
        t_params, t_macs = rows[0]
        lines.append(f"{'reduction':10s}{1 - s_params / t_params:>11.1%} {1 - s_macs / t_macs:>13.1%}")
    # the test split's figures when a val split chose the student, else the last validation (on the test split)
    ev = trainer.final_eval or trainer.last_eval or trainer.evaluate()
    ev = {k.split("/", 1)[1]: v for k, v in ev.items() if "/" in k}
    n = len(trainer.eval_batch["A"])
    if "psnr_to_teacher" in ev:
        lines.append(
            f"fidelity to the teacher on {n} held-out images: PSNR {ev['psnr_to_teacher']:.2f} dB "
            f"(copy of the input: {ev['copy_psnr_to_teacher']:.2f} dB), "
            f"L1 {ev['l1_to_teacher']:.4f} (copy {ev['copy_l1_to_teacher']:.4f})"
        )
    if "st_lpips_to_teacher" in ev:
        copy = f" (copy {ev['copy_st_lpips_to_teacher']:.4f})" if "copy_st_lpips_to_teacher" in ev else ""
        lines.append(f"ST-LPIPS to the teacher (lower is better): {ev['st_lpips_to_teacher']:.4f}{copy}")
    lines.extend(latency_lines(trainer.run_dir))
    if "psnr_to_target" in ev:
        lines.append(f"held-out ground truth ({n} images): PSNR {ev['psnr_to_target']:.2f} dB, "
                     f"L1 {ev['l1_to_target']:.4f}")
    if "cycle_l1" in ev:
        lines.append(f"held-out cycle L1 A->B->A ({n} images): {ev['cycle_l1']:.4f}")
    return lines


def latency_lines(run_dir: Path) -> list[str]:
    """One line per profiled network of a finished run (profile_teacher.json, profile.json)."""
    lines = []
    for who, name in (("teacher", run_folder.PROFILE_TEACHER), ("student", run_folder.PROFILE)):
        profile = read_json_object(run_dir / name)
        times = median_ms(profile)
        if times:
            cols = ", ".join(f"{runtime} {ms:.1f} ms" for runtime, ms in times.items())
            lines.append(f"latency of the {who} ({where(profile)}): {cols}")
    return lines


def run(args) -> int:
    cfg, run_dir = _load_config(args)
    device = resolve_device(cfg.device)
    dist.init(device)
    lock = None
    try:
        if args.resume:  # before anything reads or rewrites the folder: not while another process runs in it
            lock = _lock_run_dir(run_dir, device)
        run_dir, resume = _prepare_run_dir(args, cfg, run_dir)
        dist.barrier()
        trainer = Trainer(cfg, distill=args.distill, run_dir=run_dir, resume=resume, quiet=args.quiet)
        if not args.resume:  # every check has passed: now take the folder, atomically
            trainer.set_run_dir(_claim_run_dir(cfg, run_dir, unique=not args.name_given, device=trainer.device))
            run_dir = trainer.run_dir
            lock = _lock_run_dir(run_dir, trainer.device)
        if dist.is_main():
            what = "distilling" if args.distill else "training"
            print(f"srpkd: {what} {cfg.task} -> {run_dir} ({trainer.total_steps} steps, batch "
                  f"{cfg.optim.batch_size} x {dist.world_size()} process(es), {cfg.data.crop_size} px, "
                  f"device {trainer.device})", flush=True)
            if resume:
                print(f"srpkd: resuming at step {trainer.step}", flush=True)
            if cfg.task != "teacher_only" and cfg.loss.gan == 0:
                print(f"srpkd: note: loss.gan is 0, so this {cfg.task} run has no adversarial term (the main "
                      f"preset's setting); add --set loss.gan=1, or use a pair preset", flush=True)
        result = _run_trainer(trainer)
        if dist.is_main():
            _print_result(args, trainer, result)
        return _exit_code(result)
    finally:
        if lock is not None:
            lock.close()
        dist.shutdown()


def _lock_run_dir(run_dir: Path, device):
    """Rank 0 holds the run folder's lock for the whole run; every rank stops when another process holds it."""
    lock, err = None, None
    if dist.is_main():
        try:
            lock = hold_lock(run_dir / run_folder.LOCK, f"run folder {run_dir}")
        except SrpkdError as e:
            err = e
    if dist.broadcast_int(int(err is None), device) == 0:
        raise err or SrpkdError(f"rank {dist.rank()}: rank 0 could not lock the run folder {run_dir}; the job stops")
    return lock


def _load_config(args) -> tuple[Config, Path | None]:
    """The run's config: a resumed run's own config.yaml (+ --set), else the preset (+ flags); and its folder."""
    overrides = flag_overrides(args)
    run_dir = None
    if args.resume:
        run_dir, _ = resolve_run_dir(args, None)
        if args.config:
            raise SrpkdError(f"--resume continues a run with its own {run_folder.CONFIG}; drop --config "
                             "(use --set to change keys)")
        kept = [o for o in overrides if not o.startswith(("name=", "out_dir="))]  # a resumed run keeps its folder
        cfg = load_config(run_dir / run_folder.CONFIG, kept)
    else:
        cfg = load_config(args.config or "main", overrides)
    if not args.distill:
        cfg.teacher.checkpoint = None
        cfg.teacher.checkpoint_B = None
        cfg.student.derive = "none"  # nothing to derive from: the main preset's derived start needs a teacher
    return cfg, run_dir


def _prepare_run_dir(args, cfg: Config, run_dir: Path | None) -> tuple[Path, bool]:
    """A new run: name it (rank 0's time stamp) and refuse a non-empty folder. A resumed one: checkpoint or restart."""
    if not args.resume:
        args.name_given = bool(cfg.name)
        if not cfg.name:
            stamp = torch.tensor([int(default_run_name().replace("-", ""))], dtype=torch.long)
            if dist.is_dist():
                torch.distributed.broadcast(stamp, 0)
            s = str(int(stamp))
            cfg.name = f"{s[:8]}-{s[8:]}"
        run_dir, resume = resolve_run_dir(args, cfg)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise SrpkdError(f"run folder {run_dir} exists and is not empty; "
                             f"choose another --name or --resume {run_dir}")
        return run_dir, resume
    run_dir, resume = resolve_run_dir(args, cfg)
    if not resume and dist.is_main():
        print(f"srpkd: {run_dir} stopped before its first checkpoint; starting it again from step 0", flush=True)
        (run_dir / run_folder.LOG).unlink(missing_ok=True)
    return run_dir, resume


def _claim_run_dir(cfg: Config, run_dir: Path, unique: bool, device) -> Path:
    """Take ``run_dir`` for this run by writing its config.yaml exclusively (rank 0; the others follow).

    Two runs started with one name cannot both pass: of two exclusive writes of
    one file exactly one succeeds. The loser refuses when the name was given;
    with the default name (a time stamp, equal for runs started in one second)
    it takes the next free ``NAME-2``, ``NAME-3``, ... instead.
    """
    base, out_dir = run_dir.name, run_dir.parent
    suffix = 1
    if dist.is_main():
        while True:
            name = base if suffix == 1 else f"{base}-{suffix}"
            candidate = out_dir / name
            busy = candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir()))
            if not busy:
                cfg.name = name
                try:
                    save_config(cfg, candidate / run_folder.CONFIG, exclusive=True)
                    break
                except FileTaken:
                    pass
            if not unique:
                raise SrpkdError(f"run folder {candidate} exists and is not empty (another run took it); "
                                 f"choose another --name or --resume {candidate}")
            suffix += 1
            if suffix > 1000:
                raise SrpkdError(f"no free run folder name {base}-N in {out_dir}")
    suffix = dist.broadcast_int(suffix, device)
    cfg.name = base if suffix == 1 else f"{base}-{suffix}"
    return out_dir / cfg.name


def _run_trainer(trainer: Trainer) -> dict:
    try:
        return trainer.run()
    except RuntimeError as e:  # gloo/nccl: another rank died or hung past the timeout
        if not dist.is_dist():
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SrpkdError(f"rank {dist.rank()}: lost contact with another process ({first}); the job stops") from None


def _print_result(args, trainer: Trainer, result: dict) -> None:
    """Rank 0: how to continue a stopped run, or the summary (and report) of a finished one."""
    cfg, run_dir = trainer.cfg, trainer.run_dir
    if result["status"] == "stopped":
        print(f"srpkd: stopped at step {result['step']}; last checkpoint {run_dir / run_folder.LAST}"
              f" (continue with: srpkd {'distill' if args.distill else 'train'} --resume {run_dir})", file=sys.stderr)
        return
    cut = (f" (time_limit {cfg.time_limit:g} s reached: {trainer.time_limited} planned)"
           if trainer.time_limited else "")
    print(f"srpkd: finished {result['step']} steps{cut} in {result['elapsed']:.0f} s; {trainer.cache_line}")
    print(f"run folder: {run_dir}")
    for line in summary_table(trainer):
        print(line)
    if args.distill:
        print(f"report: {write_report(run_dir)}")


def _exit_code(result) -> int:
    if result["status"] != "stopped":
        return 0
    return 128 + int(result.get("signal") or signal.SIGTERM)
