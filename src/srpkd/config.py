"""Typed configuration: dataclasses, YAML presets and ``--set key=value`` overrides.

Every hyper-parameter of the method (docs/method.md) is a field here. A config is
built as: defaults <- preset/YAML file <- command-line overrides, then checked
strictly (unknown keys and wrong types are one clear error). The resolved
config is saved in every run folder as ``config.yaml``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import dacite
import yaml

from .errors import SrpkdError, clip, first_line, short_repr
from .files import atomic_path

TASKS = ("teacher_only", "paired", "unpaired")
DATA_MODES = ("builtin", "aligned", "unaligned", "single")
# The data layout a task trains and is scored on; teacher_only takes any layout (the teacher gives the targets).
TASK_DATA_MODE = {"paired": ("aligned", "A|B image pairs"), "unpaired": ("unaligned", "trainA/trainB folders")}


def task_for_data(mode: str) -> str:
    """The task a data layout implies: aligned -> paired, unaligned -> unpaired, any other -> teacher_only."""
    return next((task for task, (need, _) in TASK_DATA_MODE.items() if need == mode), "teacher_only")


def check_task_data(task: str, mode: str) -> None:
    """Stop when ``task`` cannot be trained or scored on data of layout ``mode`` (training and srpkd eval alike)."""
    if task in TASK_DATA_MODE and mode != TASK_DATA_MODE[task][0]:
        need, what = TASK_DATA_MODE[task]
        raise SrpkdError(f"task {task} needs data.mode {need} ({what}), got {mode}")


SCHEDULES = ("linear", "cosine")  # learning-rate policies (srpkd.train.schedule)


@dataclass
class GeneratorConfig:
    arch: str = "resnet_9blocks"
    ngf: int = 16
    norm: str = "instance"
    dropout: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments (e.g. encoder_level)
    init: str | None = None  # srpkd checkpoint to start from; None = N(0, 0.02) init
    derive: str = "none"  # ls: start from the teacher (kept channels, least-squares refit; srpkd.distill.derive)
    derive_images: int = 32  # ... fitted on this many training images, evenly spread over the set


@dataclass
class TeacherConfig:
    # srpkd checkpoint, run folder or "builtin:vintagify"; None = no teacher
    checkpoint: str | None = "builtin:vintagify"
    checkpoint_B: str | None = None  # the B->A teacher of an unpaired (CycleGAN) task


@dataclass
class DiscriminatorConfig:
    arch: str = "patchgan"
    ndf: int = 64
    n_layers: int = 3  # 3 = 70x70 PatchGAN
    norm: str = "instance"


@dataclass
class DataConfig:
    mode: str = "builtin"  # builtin | aligned (pix2pix A|B) | unaligned (CycleGAN trainA/trainB) | single
    root: str | None = None
    direction: str = "AtoB"
    train_split: str = "train"
    test_split: str = "test"
    val_split: str | None = None  # chooses the best checkpoint, kept as the student; the figures stay on test_split
    load_size: int = 143
    crop_size: int = 128
    preprocess: str = "resize_and_crop"  # resize_and_crop | crop | scale_width | scale_width_and_crop | resize | none
    flip: bool = True
    serial: bool = False  # unaligned: pair A[i] with B[i] instead of a random B
    max_images: int | None = None  # builtin: number of crops per epoch (or of fixed crops)
    # builtin only (ignored for folders): a fixed set of training crops, so the teacher cache can be used
    fixed_crops: bool = False
    num_workers: int = 0


@dataclass
class LossConfig:
    gan_mode: str = "lsgan"  # lsgan | vanilla | hinge
    gan: float = 1.0
    gan_start: float = 0.0  # KD-only warm-up: the GAN term (and D's update) starts after this fraction of the steps
    l1: float = 100.0  # pix2pix: L1 to the ground truth
    cycle: float = 10.0  # CycleGAN cycle consistency
    identity: float = 0.5  # CycleGAN identity, as a fraction of the cycle weight
    kd: float = 10.0  # output KD: L1 between student and teacher images
    srp: float = 0.0  # semantic relation loss (set by the presets)
    srp_taps: list[str] = field(default_factory=lambda: ["encoder"])
    srp_method: str = "factorized"  # factorized | dense
    srp_precision: str = "float64"  # float64 | float32 (about 3x faster on a CPU; srpkd.losses.relation)
    srp_both: bool = True  # unpaired: relation loss on both generators (False: on G_A only; KD stays on both)
    feat: float = 0.0  # FitNets-style feature KD through a learned 1x1 adapter
    feat_taps: list[str] = field(default_factory=lambda: ["encoder"])
    feat_method: str = "direct"  # direct | factorized (same loss without the adapted map; srpkd.losses.kd)
    sp: float = 0.0  # similarity-preserving KD (Tung & Mori 2019)
    sp_taps: list[str] = field(default_factory=lambda: ["encoder"])
    at: float = 0.0  # attention transfer (Zagoruyko & Komodakis 2017)
    at_taps: list[str] = field(default_factory=lambda: ["encoder"])
    perc: float = 0.0  # perceptual KD: ST-LPIPS (AlexNet) between student and teacher images
    perc_crop: int = 64  # ... on one random square of this many px per batch (0: the whole image); at least 32
    colour: float = 0.0  # colour KD: L1 between student and teacher images averaged over blocks ...
    colour_pool: int = 8  # ... of this many px (0: the per-channel means of the whole image)


@dataclass
class OptimConfig:
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 1
    steps: int = 0  # total optimisation steps (0: use epochs)
    epochs: int = 0  # total epochs (used when steps is 0)
    decay_fraction: float = 0.5  # schedule linear: constant lr, then linear decay to 0 over this last fraction
    schedule: str = "linear"  # linear (pix2pix/CycleGAN) | cosine (warm-up, then half cosine to 0)
    warmup: float = 0.0  # fraction of the steps with a linear lr warm-up
    time: float = 0.0  # seconds of run time to train for (srpkd distill --time 10m); the steps are planned from it
    progressive_crop: int = 0  # progressive resolution: train on one random square of this many px per batch ...
    progressive_until: float = 0.3  # ... for this fraction of the steps, then on whole crops (0 px: off)


@dataclass
class Config:
    task: str = "teacher_only"  # teacher_only | paired | unpaired
    directions: str = "both"  # unpaired: both | AtoB (the setting that turns one direction off)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0: torch's default)
    out_dir: str = "runs"
    name: str | None = None  # run folder name (default: time stamp)
    log_every: int = 10
    sample_every: int = 0  # 0: only at the end
    ckpt_every: int = 500  # steps between checkpoints (0: only at the end; a crash then loses the run)
    keep_last: int = 3
    eval_every: int = 0  # validation for the "best" checkpoint; 0: only at the end
    eval_images: int = 16
    eval_test: bool = False  # with data.val_split: measure the test split too at every validation (quality curves)
    cache_teacher: bool = True  # reuse teacher outputs/features when the data are deterministic
    # random crops/flips: K augmented draws per item (epoch e uses draw e % K), the teacher's outputs of each
    # kept on disk in float16 after first use (srpkd.distill.draws); 0: a new draw every epoch, no cache
    cache_draws: int = 0
    channels_last: bool = False
    compile: bool = False
    amp: str = "none"  # none | bf16 | auto (bf16 where the device computes it natively: srpkd.devices.native_bf16)
    pool_size: int = 50
    # seconds of wall time for the whole run (0: none); training ends early, normally, when reached
    time_limit: float = 0.0
    # srpkd distill, at the end: batch-1 latency of student and teacher in these runtimes (eager, compile, onnx),
    # written to profile.json / profile_teacher.json for the report ([]: none)
    profile_runtimes: list[str] = field(default_factory=lambda: ["eager", "onnx"])
    student: GeneratorConfig = field(default_factory=GeneratorConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


# ----------------------------------------------------------------------------- loading


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("srpkd.configs").iterdir() if p.name.endswith(".yaml"))


def read_yaml(path_or_preset: str | Path) -> dict[str, Any]:
    """A YAML file, or the name of a preset shipped in srpkd/configs."""
    path = Path(path_or_preset)
    if not path.is_file():
        if str(path_or_preset) in preset_names():
            text = resources.files("srpkd.configs").joinpath(f"{path_or_preset}.yaml").read_text()
        else:
            raise SrpkdError(f"config not found: {path_or_preset} (presets: {', '.join(preset_names())})")
    else:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise SrpkdError(f"cannot read config {path}: {e}") from None
    data = safe_yaml(text, f"config {path_or_preset}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SrpkdError(f"config {path_or_preset} must be a mapping of settings, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``loss.srp=100`` -> (["loss", "srp"], 100); the value is read as YAML."""
    if "=" not in item:
        raise SrpkdError(f"override {short_repr(item)} must look like key.sub=value")
    key, value = item.split("=", 1)
    try:
        parsed = safe_yaml(value, f"--set {key.strip()}") if value else None
    except _NotYaml:
        parsed = value
    return key.strip().split("."), parsed


MAX_YAML_CHARS = 1 << 20  # a config is a few KB; a bigger file is not a config
MAX_YAML_NODES = 100_000  # values after aliases are expanded: a "billion laughs" document stops here
MAX_YAML_DEPTH = 64


class _NotYaml(SrpkdError):
    """Text that is not valid YAML (a ``--set`` value is then taken as a plain string)."""


def safe_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` with bounds: the text's length, its nesting depth and the number of values it holds
    once aliases are expanded (aliases are shared references when loaded, but every later walk, copy or print
    expands them: nine levels of nine aliases are 387 million values)."""
    if len(text) > MAX_YAML_CHARS:
        raise SrpkdError(f"{what} is {len(text):,} characters; a config is at most {MAX_YAML_CHARS:,}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _NotYaml(f"{what} is not valid YAML: {first_line(e)}") from None
    except RecursionError:
        raise SrpkdError(f"{what} is nested too deeply") from None
    _check_expanded_size(data, what)
    return data


def _check_expanded_size(data: Any, what: str) -> None:
    """Walk ``data`` as a tree (aliases expanded), stopping at MAX_YAML_NODES values or MAX_YAML_DEPTH levels."""
    count = 0
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise SrpkdError(f"{what} holds more than {MAX_YAML_NODES:,} values once its aliases are expanded "
                             "(a YAML alias bomb?)")
        if depth > MAX_YAML_DEPTH:
            raise SrpkdError(f"{what} is nested more than {MAX_YAML_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            stack.extend((k, depth + 1) for k in value)
        elif isinstance(value, (list, tuple, set)):
            stack.extend((v, depth + 1) for v in value)


def _merge(base: dict, update: dict, where: str = "") -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "kwargs":
            out[k] = _merge(out[k], v, f"{where}{k}.")
        else:
            out[k] = v
    return out


def _set(d: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise SrpkdError(f"cannot set {'.'.join(keys)}: {k} is not a section")
    d[keys[-1]] = value


def _float(x: Any) -> Any:
    """Accept ints and YAML 1.1's unparsed exponents ("1e3") where a float is expected."""
    if isinstance(x, bool):
        return x  # left for dacite to reject with the field's name
    if isinstance(x, int):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    return x


def _unknown_keys(cls: type, data: dict, prefix: str = "") -> list[str]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = []
    for k, v in data.items():
        if k not in fields:
            unknown.append(f"{prefix}{k}")
            continue
        factory = fields[k].default_factory
        if dataclasses.is_dataclass(factory if factory is not dataclasses.MISSING else None) and isinstance(v, dict):
            unknown += _unknown_keys(factory, v, f"{prefix}{k}.")
    return unknown


def _non_lists(cls: type, data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """List-typed keys given something else: dacite would try to convert a mapping and fail obscurely."""
    hints = typing.get_type_hints(cls)
    bad = []
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if typing.get_origin(hint) is list and not isinstance(value, list):
            bad.append((f"{prefix}{f.name}", value))
        elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
            bad += _non_lists(hint, value, f"{prefix}{f.name}.")
    return bad


def from_dict(data: dict[str, Any]) -> Config:
    unknown = _unknown_keys(Config, data)
    if unknown:
        raise SrpkdError(f"unknown config key(s): {clip(', '.join(unknown))}")

    bad = _non_lists(Config, data)
    if bad:
        key, value = bad[0]
        raise SrpkdError(f"config key {key} must be a list, got {short_repr(value)}")
    try:
        cfg = dacite.from_dict(Config, data, config=dacite.Config(strict=True, type_hooks={float: _float}))
    except dacite.UnexpectedDataError as e:
        raise SrpkdError(f"unknown config key(s): {', '.join(sorted(e.keys))}") from None
    except dacite.WrongTypeError as e:
        raise SrpkdError(f"config key {e.field_path} must be {_type_name(e.field_type)}, "
                         f"got {short_repr(e.value)}") from None
    except (dacite.DaciteError, TypeError, ValueError) as e:
        raise SrpkdError(f"bad config: {first_line(e)[:300]}") from None
    validate(cfg)
    return cfg


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", str(t).replace("typing.", ""))


def load_config(path_or_preset: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """defaults <- file or preset <- ``key=value`` overrides, checked."""
    data = dataclasses.asdict(Config())
    if path_or_preset:
        data = _merge(data, read_yaml(path_or_preset))
    for item in overrides:
        keys, value = parse_override(item)
        _set(data, keys, value)
    return from_dict(data)


def _float_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _float_fields(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            yield f"{prefix}{f.name}", value


def validate(cfg: Config) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise SrpkdError(msg)

    for name, value in _float_fields(cfg):
        need(math.isfinite(value), f"{name} must be a finite number, got {value}")
    need(cfg.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {short_repr(cfg.task)}")
    need(cfg.directions in ("both", "AtoB"), f"directions must be both or AtoB, got {short_repr(cfg.directions)}")
    need(cfg.data.mode in DATA_MODES, f"data.mode unknown: {short_repr(cfg.data.mode)}")
    need(cfg.data.direction in ("AtoB", "BtoA"),
         f"data.direction must be AtoB or BtoA, got {short_repr(cfg.data.direction)}")
    need(cfg.data.mode == "builtin" or bool(cfg.data.root), f"data.root is required for data.mode={cfg.data.mode}")
    for name in ("load_size", "crop_size"):
        need(getattr(cfg.data, name) > 0, f"data.{name} must be positive, got {getattr(cfg.data, name)}")
    need(cfg.optim.batch_size > 0, f"optim.batch_size must be positive, got {cfg.optim.batch_size}")
    need(cfg.optim.steps >= 0 and cfg.optim.epochs >= 0, "optim.steps and optim.epochs must not be negative")
    need(cfg.optim.steps > 0 or cfg.optim.epochs > 0 or cfg.optim.time > 0,
         "set optim.steps, optim.epochs or optim.time to a positive number")
    need(cfg.optim.time >= 0, "optim.time must not be negative")
    need(cfg.optim.progressive_crop >= 0, "optim.progressive_crop must not be negative")
    need(0.0 <= cfg.optim.progressive_until <= 1.0,
         f"optim.progressive_until must be in [0, 1], got {cfg.optim.progressive_until}")
    need(cfg.optim.progressive_crop == 0 or cfg.task != "unpaired",
         "optim.progressive_crop works for the paired and teacher_only tasks, not unpaired (set it to 0)")
    need(cfg.optim.schedule in SCHEDULES, f"optim.schedule must be one of {', '.join(SCHEDULES)}, "
                                         f"got {short_repr(cfg.optim.schedule)}")
    for name, value in (("optim.warmup", cfg.optim.warmup), ("loss.gan_start", cfg.loss.gan_start)):
        need(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value}")
    need(cfg.optim.lr > 0, f"optim.lr must be positive, got {cfg.optim.lr}")
    for name in ("beta1", "beta2"):
        need(0.0 <= getattr(cfg.optim, name) < 1.0, f"optim.{name} must be in [0, 1), got {getattr(cfg.optim, name)}")
    need(0.0 <= cfg.student.dropout < 1.0, f"student.dropout must be in [0, 1), got {cfg.student.dropout}")
    need(0.0 <= cfg.optim.decay_fraction <= 1.0, "optim.decay_fraction must be in [0, 1]")
    need(cfg.student.ngf > 0 and cfg.discriminator.ndf > 0, "student.ngf and discriminator.ndf must be positive")
    need(cfg.amp in ("none", "bf16", "auto"), f"amp must be none, bf16 or auto, got {short_repr(cfg.amp)}")
    need(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
         f"unknown device {short_repr(cfg.device)}")
    need(cfg.loss.srp_method in ("factorized", "dense"), "loss.srp_method must be factorized or dense")
    need(cfg.loss.srp_precision in ("float64", "float32"), "loss.srp_precision must be float64 or float32")
    need(cfg.loss.feat_method in ("direct", "factorized"), "loss.feat_method must be direct or factorized")
    for name in ("gan", "l1", "cycle", "identity", "kd", "srp", "feat", "sp", "at"):
        need(getattr(cfg.loss, name) >= 0, f"loss.{name} must not be negative")
    for name in (
        "log_every", "sample_every", "ckpt_every", "eval_every", "keep_last", "eval_images", "pool_size", "threads",
        "cache_draws",
    ):
        need(getattr(cfg, name) >= 0, f"{name} must not be negative")
    need(cfg.time_limit >= 0, "time_limit must not be negative")
    need(cfg.name is None or is_plain_name(cfg.name),
         f"name {short_repr(cfg.name)} must be a plain folder name (no '/', not '.' or '..'): a run stays in out_dir")
    need(cfg.data.num_workers >= 0, "data.num_workers must not be negative")
    need(cfg.student.derive in ("none", "ls"),
         f"student.derive must be none or ls, got {short_repr(cfg.student.derive)}")
    need(cfg.student.derive_images > 0, "student.derive_images must be positive")
    need(cfg.student.derive == "none" or not cfg.student.init,
         "student.derive and student.init both set the student's start (the main preset derives it): "
         "add --set student.derive=none to start from student.init")
    need(cfg.data.max_images is None or cfg.data.max_images > 0, "data.max_images must be positive")


def is_plain_name(name: str) -> bool:
    """A name that stays inside its folder: one path component, not ``.`` or ``..``, no NUL."""
    seps = {"/", "\\"} | ({os.altsep} if os.altsep else set())
    return bool(name) and name not in (".", "..") and not any(s in name for s in seps) and "\0" not in name


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path, exclusive: bool = False) -> None:
    """Write the resolved config; ``exclusive``: only if ``path`` does not exist (:class:`srpkd.files.FileTaken`)."""
    with atomic_path(path, exclusive=exclusive) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
