"""``srpkd eval``: FID, KID and fidelity metrics of a run, a checkpoint or a folder of images."""
from __future__ import annotations

import json

from ..devices import resolve_device
from ..errors import SrpkdError
from ..files import refuse_to_replace, write_json
from ..metrics.evaluate import Scorer, default_output, evaluate_run, score_folders
from ..metrics.fid import FeatureCache
from ..metrics.segmentation import INPUTS, FcnScorer, Segmenter, load_palette
from .translate import add_train_mode_arguments


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="FID/KID, PSNR/SSIM and teacher fidelity of a run or checkpoint (writes metrics.json)",
        description=(
            "Translate the test split with a run's student (or a checkpoint) and score it: paired tasks against "
            "the ground truth (FID, KID, PSNR, SSIM), unpaired tasks against the real target domain train+test "
            "(FID, KID), and against the teacher's outputs whenever a teacher is known (FID, KID, PSNR, L1, "
            "ST-LPIPS). With --images, score a folder of generated images against --real DIR or --data DIR. "
            "With --segmenter, a label -> photo run also gets its FCN-score (pixel accuracy, mean class accuracy, "
            "mean IoU, per class) against the label maps it was given."
        ),
    )
    p.add_argument("target", nargs="?", help="run folder or srpkd .safetensors generator")
    p.add_argument("--images", help="score this folder of already generated images instead of translating")
    p.add_argument("--real", help="with --images: folder of real images")
    p.add_argument("--data", help="dataset root (overrides the run's data.root)")
    p.add_argument("--mode", choices=["aligned", "unaligned", "single", "builtin"],
                   help="dataset layout (overrides the run's)")
    p.add_argument("--direction", choices=["AtoB", "BtoA"], help="translation direction (overrides the run's)")
    p.add_argument("--split", default="test", help="with --images --data: the split of the real images (default test)")
    p.add_argument("--teacher", help="teacher checkpoint or builtin:vintagify for fidelity metrics ('none' to skip)")
    p.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--size", type=int, help="resize test images to SIZE x SIZE (default: the run's crop size, 256)")
    p.add_argument("--max-images", type=int, help="use at most N test images")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-perceptual", action="store_true", help="skip ST-LPIPS")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write cached real-image features and teacher outputs")
    p.add_argument("--segmenter", metavar="MODEL",
                   help="FCN-score: a segmentation network (ONNX or TorchScript) mapping photos to the classes of "
                        "the label maps")
    p.add_argument("--palette", metavar="NAME_OR_JSON",
                   help="with --segmenter: the label maps' colours, facades, cityscapes or a JSON file "
                        "(default: from the data folder's name)")
    p.add_argument("--segmenter-input", choices=INPUTS, default="minus1",
                   help="with --segmenter: the pixel range it expects: minus1 [-1, 1] (default), unit [0, 1], "
                        "imagenet ([0, 1] normalised by ImageNet mean and std)")
    p.add_argument("-o", "--out", help="metrics JSON path (default: RUN/metrics.json or CKPT.metrics.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_train_mode_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.batch <= 0:
        raise SrpkdError("--batch must be positive")
    if args.max_images is not None and args.max_images < 2:
        raise SrpkdError("--max-images must be at least 2 (FID needs two images)")
    if args.real and not args.images:
        raise SrpkdError("--real goes with --images")
    if args.images and args.target:
        raise SrpkdError("give a run/checkpoint or --images DIR, not both")
    if args.images and args.train_mode:
        raise SrpkdError("--train-mode runs a generator; --images scores images already generated")
    if not args.images and not args.target:
        raise SrpkdError("give a run folder or checkpoint, or --images DIR with --real DIR or --data DIR")
    if args.out:
        refuse_to_replace(args.out, args.overwrite)
    if args.images and args.segmenter:
        raise SrpkdError("--segmenter scores a run or checkpoint (it needs the label maps the generator was given)")
    if args.palette and not args.segmenter:
        raise SrpkdError("--palette goes with --segmenter")
    device = resolve_device(args.device)
    scorer = Scorer(device=device, batch=args.batch, progress=not args.quiet, perceptual=not args.no_perceptual,
                    cache=FeatureCache(enabled=not args.no_cache))
    if args.images:
        result = score_folders(args.images, real=args.real, data=args.data, mode=args.mode or "aligned",
                               direction=args.direction or "AtoB", split=args.split, size=args.size,
                               max_images=args.max_images, scorer=scorer)
        out = args.out
    else:
        teacher = args.teacher
        if teacher is not None and teacher.lower() == "none":
            teacher = ""
        result = evaluate_run(args.target, data=args.data, mode=args.mode, direction=args.direction, teacher=teacher,
                              size=args.size, max_images=args.max_images, scorer=scorer,
                              network_mode="train" if args.train_mode else "eval", seed=args.seed,
                              fcn=_fcn_scorer(args, device))
        out = args.out or default_output(args.target)
    if out:
        path = write_json(out, result)
        result_path = str(path)
    else:
        result_path = None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        if result_path:
            print(f"wrote {result_path}")
    return 0


def _fcn_scorer(args, device) -> FcnScorer | None:
    """The segmenter and palette of --segmenter, or None."""
    if not args.segmenter:
        return None
    palette = load_palette(args.palette) if args.palette else None  # None: from the data folder's name
    return FcnScorer(Segmenter(args.segmenter, inputs=args.segmenter_input, device=device), palette, args.batch)


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("kid", "kid_std"):
        return f"{value:.4f}"
    if key in ("ssim", "l1", "st_lpips"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


METRIC_ORDER = ["fid", "kid", "kid_std", "psnr", "ssim", "l1", "st_lpips"]


FCN_ROWS = [("pixel_acc", "pixel acc"), ("mean_class_acc", "class acc"), ("mean_iou", "mean IoU")]


def fcn_table(fcn: dict) -> list[str]:
    """The FCN-score lines of one direction: student, teacher and real photos side by side."""
    cols = [c for c in ("student", "teacher", "real") if c in fcn]
    lines = [f"  FCN-score ({fcn['segmenter']}, palette {fcn['palette']}, "
             f"{fcn['ignored_fraction']:.1%} of label pixels ignored)",
             f"  {'':<10}" + "".join(f"{c + (' photos' if c == 'real' else ''):>22}" for c in cols)]
    for key, label in FCN_ROWS:
        lines.append(f"  {label:<10}" + "".join(f"{_fmt('ssim', fcn[c][key]):>22}" for c in cols))
    return lines


def format_table(result: dict) -> str:
    lines = []
    if result.get("kind") == "folders":
        lines.append(f"{result['images']} ({result['n_images']} images) "
                     f"vs {result['real']} ({result['n_real']} images)")
        for k in METRIC_ORDER + ["kid_subset_size", "matched_pairs"]:
            if k in result:
                lines.append(f"  {k:<16}{_fmt(k, result[k])}")
        lines.append(f"  {'time':<16}{result['time_s']:.1f} s")
        return "\n".join(lines)
    lines.append(f"{result['source']}: task {result['task']}, "
                 f"{result['data']['mode']} data, {result['data']['size']} px")
    for direction, r in result["directions"].items():
        cols = [c for c in ("student", "teacher", "fidelity") if c in r]
        ref = r.get("reference")
        reference = ""
        if ref:
            cached = ", cached" if ref.get("cached") else ""
            reference = f"; reference: {ref['name']} ({ref['count']} images{cached})"
        mode = ", networks in train mode (pix2pix test.py without --eval)" if r.get("network_mode") == "train" else ""
        lines.append(f"{direction}: {r['n_images']} test images{reference}{mode}")
        header = f"  {'metric':<10}" + "".join(f"{c + (' vs teacher' if c == 'fidelity' else ''):>22}" for c in cols)
        lines.append(header)
        for k in METRIC_ORDER:
            if any(k in r[c] for c in cols):
                lines.append(f"  {k:<10}" + "".join(f"{_fmt(k, r[c].get(k)) if k in r[c] else '':>22}" for c in cols))
        if "copy" in r:
            copy = ", ".join(f"{k} {_fmt(k, r['copy'][k])}" for k in METRIC_ORDER if k in r["copy"])
            lines.append(f"  a copy of the input vs the teacher: {copy}")
        if "fcn" in r:
            lines.extend(fcn_table(r["fcn"]))
    lines.append(f"time {result['time_s']:.1f} s")
    return "\n".join(lines)
