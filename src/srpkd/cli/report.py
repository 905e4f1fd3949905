"""``srpkd report``: a self-contained HTML report of one run, or several side by side."""
from __future__ import annotations

from ..files import refuse_to_replace
from ..report import is_srpkd_report, write_comparison, write_report


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="self-contained HTML report (config, metrics, samples, relation maps, loss curves) of one or more runs",
        description=(
            "One run: writes RUN/report.html. Several runs: one page with a column per run (default "
            "./report.html). Metrics come from RUN/metrics.json (srpkd eval) and latency from RUN/profile.json "
            "(srpkd profile RUN -o RUN/profile.json); missing ones are shown as 'not measured'."
        ),
    )
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("-o", "--out", help="output HTML file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file srpkd did not write")
    p.set_defaults(func=run)


def run(args) -> int:
    out = args.out or (None if len(args.runs) == 1 else "report.html")
    if out:
        refuse_to_replace(out, args.overwrite, ours=is_srpkd_report)
    if len(args.runs) == 1:
        path = write_report(args.runs[0], args.out)
    else:
        path = write_comparison(args.runs, args.out or "report.html")
    print(f"wrote {path}")
    return 0
