"""``srpkd train`` and ``srpkd distill``: one training loop, with or without a frozen teacher.

``srpkd distill`` with no arguments runs the main job (preset ``main``): the
pretrained vintagify CycleGAN teacher distilled into a ResNet-9 ngf 16 student
on the built-in photos at 128 px. ``srpkd train`` trains a generator with no
teacher (a pix2pix / CycleGAN teacher, or the scratch-student baseline).

Multi-process: ``torchrun --nproc_per_node=N -m srpkd.cli.main distill ...``.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from ..report import write_report

log = logging.getLogger("srpkd.train")


def _add_common(p) -> None:
    p.add_argument("--config", metavar="NAME_OR_PATH", help="a preset name (see srpkd/configs) or a YAML file (default: main)")
    p.add_argument("--teacher", metavar="CKPT", help="teacher checkpoint or builtin:vintagify (teacher.checkpoint)")
    p.add_argument("--teacher-b", metavar="CKPT", help="B->A teacher of an unpaired task (teacher.checkpoint_B)")
    p.add_argument("--data", metavar="DIR", help="dataset root (data.root)")
    p.add_argument("--mode", choices=["builtin", "aligned", "unaligned", "single"], help="dataset layout (data.mode)")
    p.add_argument("--task", choices=["teacher_only", "paired", "unpaired"], help="training task (task)")
    p.add_argument("--direction", choices=["AtoB", "BtoA"], help="data.direction")
    p.add_argument("--steps", type=int, help="optimisation steps (optim.steps)")
    p.add_argument("--epochs", type=int, help="epochs, used when steps is 0 (optim.epochs)")
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
        ("optim.steps", args.steps), ("optim.epochs", args.epochs), ("optim.batch_size", args.batch_size),
        ("data.crop_size", args.size), ("name", args.name), ("out_dir", args.out_dir),
        ("deterministic", args.deterministic), ("seed", args.seed), ("device", args.device),
    ]
    out = []
    for key, value in pairs:
        if value is not None:
            out.append(f"{key}={value}" if not isinstance(value, str) else f"{key}={_quote(value)}")
    return out + list(args.overrides)


def _quote(s: str) -> str:
    import json

    return json.dumps(s)  # valid YAML: a path with ':' or spaces stays a string


def resolve_run_dir(args, cfg) -> tuple[Path, bool]:
    from ..errors import SrpkdError

    if args.resume:
        p = Path(args.resume)
        if not p.is_dir():
            p = Path(args.out_dir or "runs") / args.resume
        if not (p / "checkpoints" / "last.safetensors").is_file():
            if (p / "config.yaml").is_file():  # stopped before its first checkpoint: start it again
                return p, False
            raise SrpkdError(f"cannot resume {args.resume}: no checkpoints/last.safetensors in {p}")
        return p, True
    return Path(cfg.out_dir) / cfg.name, False


def _fmt_count(n: int, unit: str = "") -> str:
    return f"{n / 1e9:.2f} G{unit}" if n >= 1e9 else f"{n / 1e6:.2f} M{unit}"


def summary_table(trainer) -> list[str]:
    from ..models import count_macs, count_params

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
    ev = getattr(trainer, "last_eval", None) or trainer.evaluate()
    n = len(trainer.eval_batch["A"])
    if "val/psnr_to_teacher" in ev:
        lines.append(
            f"fidelity to the teacher on {n} held-out images: PSNR {ev['val/psnr_to_teacher']:.2f} dB, "
            f"L1 {ev['val/l1_to_teacher']:.4f}"
        )
    if "val/psnr_to_target" in ev:
        lines.append(f"held-out ground truth ({n} images): PSNR {ev['val/psnr_to_target']:.2f} dB, "
                     f"L1 {ev['val/l1_to_target']:.4f}")
    if "val/cycle_l1" in ev:
        lines.append(f"held-out cycle L1 A->B->A ({n} images): {ev['val/cycle_l1']:.4f}")
    return lines


def run(args) -> int:
    import torch

    from ..config import load_config
    from ..errors import SrpkdError
    from ..train import dist
    from ..train.loop import Trainer, default_run_name, resolve_device

    overrides = flag_overrides(args)
    if args.resume:
        run_dir, _ = resolve_run_dir(args, None)
        if args.config:
            raise SrpkdError("--resume continues a run with its own config.yaml; drop --config (use --set to change keys)")
        cfg = load_config(run_dir / "config.yaml", [o for o in overrides if not o.startswith(("name=", "out_dir="))])
    else:
        cfg = load_config(args.config or "main", overrides)
    if not args.distill:
        cfg.teacher.checkpoint = None
        cfg.teacher.checkpoint_B = None

    device = resolve_device(cfg.device)
    dist.init(device)
    if not args.resume:
        if not cfg.name:
            stamp = torch.tensor([int(default_run_name().replace("-", ""))], dtype=torch.long)
            if dist.is_dist():
                torch.distributed.broadcast(stamp, 0)
            s = str(int(stamp))
            cfg.name = f"{s[:8]}-{s[8:]}"
        run_dir, resume = resolve_run_dir(args, cfg)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise SrpkdError(f"run folder {run_dir} exists and is not empty; choose another --name or --resume {run_dir}")
    else:
        run_dir, resume = resolve_run_dir(args, cfg)
        if not resume and dist.is_main():
            print(f"srpkd: {run_dir} stopped before its first checkpoint; starting it again from step 0", flush=True)
            (run_dir / "log.jsonl").unlink(missing_ok=True)
    dist.barrier()

    try:
        trainer = Trainer(cfg, distill=args.distill, run_dir=run_dir, resume=resume, quiet=args.quiet)
        if dist.is_main():
            what = "distilling" if args.distill else "training"
            print(f"srpkd: {what} {cfg.task} -> {run_dir} ({trainer.total_steps} steps, batch "
                  f"{cfg.optim.batch_size} x {dist.world_size()} process(es), {cfg.data.crop_size} px, device {trainer.device})",
                  flush=True)
            if resume:
                print(f"srpkd: resuming at step {trainer.step}", flush=True)
        try:
            result = trainer.run()
        except RuntimeError as e:  # gloo/nccl: another rank died or hung past the timeout
            if not dist.is_dist():
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SrpkdError(f"rank {dist.rank()}: lost contact with another process ({first}); the job stops") from None
        if not dist.is_main():
            return _exit_code(result)
        if result["status"] == "stopped":
            print(f"srpkd: stopped at step {result['step']}; last checkpoint {run_dir / 'checkpoints' / 'last.safetensors'}"
                  f" (continue with: srpkd {'distill' if args.distill else 'train'} --resume {run_dir})", file=sys.stderr)
            return _exit_code(result)
        cut = (f" (time_limit {cfg.time_limit:g} s reached: {trainer.time_limited} planned)"
               if trainer.time_limited else "")
        print(f"srpkd: finished {result['step']} steps{cut} in {result['elapsed']:.0f} s; {trainer.cache_line}")
        print(f"run folder: {run_dir}")
        for line in summary_table(trainer):
            print(line)
        if args.distill:
            path = write_report(run_dir)
            print(f"report: {path}")
        return 0
    finally:
        dist.shutdown()


def _exit_code(result) -> int:
    import signal

    if result["status"] != "stopped":
        return 0
    return 128 + int(result.get("signal") or signal.SIGTERM)
