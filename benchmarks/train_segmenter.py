"""Train the small facades segmenter that `srpkd eval --segmenter` scores label -> photo generators with (FCN-score).

A fully-convolutional U-Net (3 poolings, width ``--width``) learns photo -> class ids
on the facades train split (400 photos; class ids from the label maps by the
``facades`` palette of :mod:`srpkd.metrics.segmentation`), at ``--size`` px, for
``--time`` seconds of CPU. It is exported to ONNX (dynamic batch, height and
width; checked against PyTorch) and then scored through ``srpkd.metrics.
segmentation.Segmenter``, the path ``srpkd eval --segmenter`` takes, on the
106 test photos against their label maps:

* ``real``: the real photos: the segmenter's ceiling;
* ``blurred``: the same photos after a Gaussian blur (sigma ``--blur`` px);
* ``shuffled``: each real photo against another facade's label map.

A segmenter worth using scores real photos far above both. The test images go
through the same preprocessing as ``srpkd eval`` (aligned halves, bicubic resize
to ``--size``), so the figures compare with a generator's.

    python benchmarks/train_segmenter.py [--data ../shared/data] [--size 128] [--time 240] \
        [--steps N] [--out runs/segmenter] [--threads 1] [--json] [--quick]

Writes OUT/facades_segmenter.onnx and OUT/results.json; prints one JSON line per
scored set with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from srpkd.data.datasets import build_dataset
from srpkd.files import write_json
from srpkd.metrics.segmentation import FACADES, IGNORE, FcnScorer, Segmenter, label_ids

ROOT = Path(__file__).resolve().parents[1]


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallUNet(nn.Module):
    """Three poolings (inputs: multiples of 8 px), skip connections, ``classes`` score maps at the input size."""

    def __init__(self, classes: int, width: int = 24):
        super().__init__()
        w = width
        self.enc = nn.ModuleList([block(3, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 4 * w)])
        self.dec = nn.ModuleList([block(8 * w, 2 * w), block(4 * w, w), block(2 * w, w)])
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.enc):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for dec, skip in zip(self.dec, reversed(skips[:-1])):
            x = dec(torch.cat([F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False), skip], 1))
        return self.head(x)


def load_split(facades: Path, split: str, size: int, max_images: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(photos (N, 3, size, size) in [-1, 1], class ids (N, size, size)) as srpkd eval sees a label -> photo split."""
    ds = build_dataset("aligned", facades, split=split, direction="BtoA", load_size=size, crop_size=size,
                       preprocess="resize", flip=False, max_images=max_images)
    items = [ds[i] for i in range(len(ds))]
    labels = torch.stack([it["A"] for it in items])  # BtoA: the input A is the label map
    photos = torch.stack([it["B"] for it in items])
    return photos, label_ids(labels, FACADES)


def train(model: nn.Module, photos: torch.Tensor, ids: torch.Tensor, seconds: float, batch: int, seed: int,
          max_steps: int = 0) -> dict:
    """Adam, cross-entropy (ignore label left out), random horizontal flips, for ``seconds`` of wall time
    (or ``max_steps`` steps when given: reproducible)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    t0, steps, losses = time.time(), 0, []
    while (steps < max_steps) if max_steps else (time.time() - t0 < seconds):
        idx = torch.randint(len(photos), (batch,), generator=g)
        x, y = photos[idx], ids[idx]
        if torch.rand(1, generator=g) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = F.cross_entropy(model(x), y, ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        losses.append(float(loss.detach()))
    model.eval()
    return {"steps": steps, "train_s": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-20:]))}


def export(model: nn.Module, size: int, path: Path) -> float:
    """ONNX with dynamic batch, height and width; returns the largest difference to PyTorch on a test batch."""
    x = torch.randn(2, 3, size, size)
    dyn = torch.export.Dim.DYNAMIC
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("torch.onnx", "onnxscript", "onnx_ir"):  # the exporter's notices and optimizer passes
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["input"], output_names=["scores"],
                          dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},), verbose=False)
    seg = Segmenter(path)
    with torch.no_grad():
        ref = model(x)
    got = torch.from_numpy(seg.session.run(None, {seg.input_name: x.numpy()})[0])
    return float((got - ref).abs().max())


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--size", type=int, default=128, help="train and test size in px (a multiple of 8)")
    ap.add_argument("--width", type=int, default=24, help="channels of the first level")
    ap.add_argument("--time", type=float, default=240.0, help="seconds of training")
    ap.add_argument("--steps", type=int, default=0, help="train for this many steps instead (reproducible)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--blur", type=float, default=3.0, help="sigma in px of the blurred test set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/segmenter"))
    ap.add_argument("--quick", action="store_true", help="smoke test: 64 px, 100 train / 24 test images, 150 steps")
    ap.add_argument("--json", action="store_true", help="one JSON line per scored set")
    args = ap.parse_args()
    if args.quick:
        args.size, args.steps, n_train, n_test = 64, 150, 100, 24
    else:
        n_train = n_test = None
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    facades = args.data / "facades"
    t0 = time.time()
    photos, ids = load_split(facades, "train", args.size, n_train)
    test_photos, test_ids = load_split(facades, "test", args.size, n_test)
    model = SmallUNet(len(FACADES.classes), args.width)
    fit = train(model, photos, ids, args.time, args.batch, args.seed, args.steps)
    path = args.out / "facades_segmenter.onnx"
    diff = export(model, args.size, path)
    scorer = FcnScorer(Segmenter(path, threads=args.threads), FACADES)
    sets = {
        "real": (test_photos, test_ids),
        "blurred": (gaussian_blur(test_photos, args.blur), test_ids),
        "shuffled": (test_photos, test_ids.roll(1, 0)),
    }
    results = {
        "command": "python benchmarks/train_segmenter.py " + " ".join(sys.argv[1:]),
        "size": args.size, "width": args.width, "params": sum(p.numel() for p in model.parameters()),
        "train_images": len(photos), "test_images": len(test_photos), "threads": args.threads, **fit,
        "onnx": str(path), "onnx_max_abs_diff": diff, "ignored_fraction": float((test_ids == IGNORE).float().mean()),
        "scores": {}, "wall_s": None,
    }
    for name, (x, y) in sets.items():
        s = scorer.score(x, y)
        results["scores"][name] = s
        line = {"set": name, **{k: s[k] for k in ("pixel_acc", "mean_class_acc", "mean_iou")}}
        print(json.dumps(line) if args.json else
              f"{name:9s} pixel acc {s['pixel_acc']:.3f}  class acc {s['mean_class_acc']:.3f}  "
              f"mIoU {s['mean_iou']:.3f}", flush=True)
    results["wall_s"] = round(time.time() - t0, 1)
    write_json(args.out / "results.json", results)
    if not args.json:
        print(f"{fit['steps']} steps in {fit['train_s']} s; wrote {path} (ONNX vs PyTorch {diff:.1e}) and "
              f"{args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
