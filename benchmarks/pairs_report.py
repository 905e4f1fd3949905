"""The table of benchmarks/pairs.sh: each candidate against the base run it shared the machine with, seed by seed.

    python benchmarks/pairs_report.py [--keep benchmarks/results/time_to_quality/main_pairs/runs]

A pair is two one-thread time_to_quality.py runs side by side with one seed: the base (record
``<base>_preset_seed<S>_vs_<candidate>.json``) and the candidate (``<candidate>_preset_seed<S>.json``).
The machine's speed drifts from hour to hour, so a candidate is judged by its differences to its own
pair's base, not against runs of another hour: per seed, then mean +- sample std over seeds. "better" /
"worse": every seed's difference has the same sign and their mean is larger than their std; otherwise
"tie"; one seed: no verdict. Writes ``results.md``, ``results.json`` and ``curves.png`` (each pair's
PSNR curves against wall minutes, one panel per candidate) beside the records' folder.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASE = re.compile(r"(?P<base>.+)_preset_seed(?P<seed>\d+)_vs_(?P<cand>.+)\.json")
METRICS = {"psnr": +1, "stlpips": -1}  # +1: higher is better


def pairs(keep: Path) -> dict[tuple[str, str], list[dict]]:
    """(base, candidate) -> one dict per seed with both records, seeds in order; a pair missing a record is left out."""
    out: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(keep.glob("*_vs_*.json")):
        m = BASE.fullmatch(path.name)
        cand_path = keep / f"{m['cand']}_preset_seed{m['seed']}.json" if m else None
        if cand_path is None or not cand_path.is_file():
            continue
        base, cand = json.loads(path.read_text()), json.loads(cand_path.read_text())
        out.setdefault((m["base"], m["cand"]), []).append({"seed": int(m["seed"]), "base": base, "candidate": cand})
    for runs in out.values():
        runs.sort(key=lambda r: r["seed"])
    return out


def verdict(diffs: list[float], sign: int) -> str:
    if len(diffs) < 2:
        return "1 seed"
    same = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    if not same or abs(statistics.mean(diffs)) <= statistics.stdev(diffs):
        return "tie"
    return "better" if statistics.mean(diffs) * sign > 0 else "worse"


def spread(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:+.{digits}f}"
    return f"{statistics.mean(values):+.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summary(found: dict[tuple[str, str], list[dict]]) -> list[dict]:
    rows = []
    for (base, cand), runs in found.items():
        row = {"base": base, "candidate": cand, "seeds": [r["seed"] for r in runs],
               "steps": [(r["base"]["steps"], r["candidate"]["steps"]) for r in runs]}
        for metric, sign in METRICS.items():
            diffs = [r["candidate"][metric] - r["base"][metric] for r in runs]
            row[metric] = {"base": [r["base"][metric] for r in runs],
                           "candidate": [r["candidate"][metric] for r in runs],
                           "difference": diffs, "verdict": verdict(diffs, sign)}
        rows.append(row)
    return rows


def markdown(rows: list[dict], keep: Path) -> str:
    lines = [f"# Pairs of the main job (`bash benchmarks/pairs.sh`; records: `{keep}`)", "",
             "Each candidate against the base run beside it (one thread each, same seed). Differences are "
             "candidate minus base; PSNR and ST-LPIPS to the teacher on the 48 held-out crops. better / worse: "
             "every seed's difference of one sign and their mean larger than their std.", "",
             "| candidate | base | seeds | PSNR base / candidate (dB) | PSNR difference (dB) "
             "| ST-LPIPS base / candidate | ST-LPIPS difference | steps base / candidate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, s = r["psnr"], r["stlpips"]
        per_seed_p = ", ".join(f"{b:.2f} / {c:.2f}" for b, c in zip(p["base"], p["candidate"]))
        per_seed_s = ", ".join(f"{b:.3f} / {c:.3f}" for b, c in zip(s["base"], s["candidate"]))
        lines.append(f"| {r['candidate']} | {r['base']} | {', '.join(map(str, r['seeds']))} | {per_seed_p} | "
                     f"{spread(p['difference'], 2)} ({p['verdict']}) | {per_seed_s} | "
                     f"{spread(s['difference'], 3)} ({s['verdict']}) | "
                     f"{', '.join(f'{b} / {c}' for b, c in r['steps'])} |")
    return "\n".join(lines) + "\n"


def plot(found: dict[tuple[str, str], list[dict]], path: Path) -> None:
    """One panel per candidate: its PSNR curve (colour) and its pair's base (grey), one line style per seed."""
    if not found:
        return
    cols = min(3, len(found))
    rows = -(-len(found) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(found):]:
        ax.set_visible(False)
    styles = ["-", "--", ":", "-."]
    for ax, ((base, cand), runs) in zip(axes.flat, found.items()):
        for r in runs:
            ls = styles[r["seed"] % len(styles)]
            for who, name, color in (("base", base, "0.55"), ("candidate", cand, "C0")):
                xs, ys = zip(*r[who]["curve"]) if r[who].get("curve") else ((), ())
                ax.plot(xs, ys, color=color, ls=ls, label=f"{name} seed {r['seed']}")
        copy = runs[0]["base"].get("copy_psnr")
        if copy is not None:
            ax.axhline(copy, color="k", lw=0.8, ls="--", label="copy of the input")
        ax.set_title(f"{cand} against {base}", fontsize=10)
        ax.set_xlabel("wall minutes (one thread each)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("PSNR to the teacher, held-out crops (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, default=Path("benchmarks/results/time_to_quality/main_pairs/runs"),
                    help="the pairs' records (pairs.sh's KEEP)")
    args = ap.parse_args(argv)
    if not args.keep.is_dir():
        raise SystemExit(f"pairs_report: no records folder {args.keep}")
    found = pairs(args.keep)
    rows = summary(found)
    plot(found, args.keep.parent / "curves.png")
    (args.keep.parent / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = markdown(rows, args.keep)
    (args.keep.parent / "results.md").write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
