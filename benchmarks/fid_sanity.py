"""FID/KID sanity check on real photos, with the project's own `srpkd eval --images`.

Scores two folders against the 106 real facades test photos (the A halves of
``facades/test``, label -> photo is B -> A): the same photos as stored in
``facades_unpaired/testA`` (the same pictures, JPEG re-encoded: FID should be
near 0), and a Gaussian-blurred copy of them (clearly worse). Prints one JSON
object per folder with FID, KID and the wall time.

    python benchmarks/fid_sanity.py [--data ../shared/data] [--radius 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageFilter


def score(folder: Path, facades: Path, out: Path) -> dict:
    t0 = time.time()
    cmd = [sys.executable, "-m", "srpkd", "eval", "--images", str(folder), "--data", str(facades),
           "--mode", "aligned", "--direction", "BtoA", "--no-perceptual", "-q", "-o", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return {"metrics": json.loads(out.read_text()), "wall_s": round(time.time() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--radius", type=float, default=2.0, help="Gaussian blur radius in px (PIL)")
    args = ap.parse_args()
    facades, photos = args.data / "facades", args.data / "facades_unpaired" / "testA"
    with tempfile.TemporaryDirectory() as tmp:
        blurred = Path(tmp) / "blurred"
        blurred.mkdir()
        for p in sorted(photos.glob("*.jpg")):
            Image.open(p).convert("RGB").filter(ImageFilter.GaussianBlur(args.radius)).save(blurred / f"{p.stem}.png")
        for name, folder in (("photos", photos), (f"blurred_r{args.radius:g}", blurred)):
            r = score(folder, facades, Path(tmp) / f"{name}.json")
            print(json.dumps({"folder": name, "wall_s": r["wall_s"], **r["metrics"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
