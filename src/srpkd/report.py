"""Self-contained HTML reports of training runs (images inlined as base64 PNG).

``write_report(run_dir)`` writes ``run_dir/report.html``: the resolved config,
a teacher-vs-student table (parameters, MACs, latency per runtime from
``profile.json`` / ``profile_teacher.json``, which ``srpkd distill`` writes at
the end, FID/KID and FCN-score from ``metrics.json``), the fidelity to the
teacher beside a copy of the input (from ``metrics.json``, else the training
loop's last held-out validation), the sample grid (``samples.png``), the
relation maps of teacher and student on the first held-out image
(:mod:`srpkd.relmap`) and the loss curves drawn from ``log.jsonl``.
``write_comparison(run_dirs, out)`` puts several runs side by side, one column
per run, with each run's relation maps on the same held-out image and the mean
distance of its relation rows to the teacher's (the variants of a reproduction,
with and without the relation loss, side by side). Rows that do not apply to
the run's task are left out (no ground truth in a teacher_only run); what was
not measured is shown as "not measured", or, for a whole row, named in a note
with the command that measures it. A report never fails because a run is
incomplete.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from PIL import Image

from . import run_folder
from ._version import __version__
from .assets import resolve_teacher
from .checkpoint import load_generator
from .config import load_config
from .errors import SrpkdError
from .files import atomic_path, read_json_object, read_lines
from .metrics.latency import RUNTIME_NAMES, RUNTIMES, median_ms, where
from .models import count_macs, count_params
from .plots import figure_png, pyplot
from .relmap import RelationMaps, held_out_relation_maps
from .relmap import render as render_relation_maps
from .train.validation import sample_columns

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.na{color:#999;font-style:italic}.note{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em;max-height:30em}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
"""

GENERATOR_TAG = '<meta name="generator" content="srpkd">'  # how srpkd knows a report it may replace


def is_srpkd_report(path: Path) -> bool:
    """Whether ``path`` is a report srpkd wrote (its head carries GENERATOR_TAG)."""
    try:
        with open(path, "rb") as f:
            return GENERATOR_TAG.encode() in f.read(4096)
    except OSError:
        return False


NOT_MEASURED = '<span class="na">not measured</span>'

# (label, key, format, direction hint)
METRIC_ROWS = [
    ("FID (vs real)", "fid", "{:.2f}", "lower is better"),
    ("KID (vs real)", "kid", "{:.4f}", "lower is better"),
    ("PSNR to ground truth (dB)", "psnr", "{:.2f}", "higher is better"),
    ("SSIM to ground truth", "ssim", "{:.4f}", "higher is better"),
]
# the METRIC_ROWS keys that apply to a task: no real target images in teacher_only, no ground truth in unpaired
TASK_METRICS = {"teacher_only": (), "unpaired": ("fid", "kid"), "paired": ("fid", "kid", "psnr", "ssim")}
FCN_ROWS = [
    ("FCN-score pixel accuracy", "pixel_acc", "{:.3f}", "higher is better"),
    ("FCN-score mean class accuracy", "mean_class_acc", "{:.3f}", "higher is better"),
    ("FCN-score mean IoU", "mean_iou", "{:.3f}", "higher is better"),
]
FIDELITY_ROWS = [
    ("FID student vs teacher", "fid", "{:.2f}", "lower is better"),
    ("KID student vs teacher", "kid", "{:.4f}", "lower is better"),
    ("PSNR student vs teacher (dB)", "psnr", "{:.2f}", "higher is better"),
    ("L1 student vs teacher", "l1", "{:.4f}", "lower is better"),
    ("ST-LPIPS student vs teacher", "st_lpips", "{:.4f}", "lower is better"),
]


# ----------------------------------------------------------------------------- reading a run


def read_log(path: Path) -> list[dict]:
    """Records of log.jsonl; unreadable lines (e.g. a line cut by a crash) are skipped."""
    records = []
    try:
        lines = read_lines(path)
    except SrpkdError:
        return records
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut by a crash, or bytes that are not UTF-8 (read as U+FFFD)
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step", 0), (int, float)):
            records.append(rec)
    return records


def _config(run: Path) -> tuple[Any, str | None]:
    """(Config or None, config text or None)."""
    path = run / run_folder.CONFIG
    if not path.is_file():
        return None, None
    text = path.read_text(errors="replace")
    try:
        return load_config(path), text
    except SrpkdError:
        return None, text


def _relation_maps(cfg, teacher, student) -> tuple[RelationMaps | None, str]:
    """(relation maps on the run's first held-out image, or None and why there are none)."""
    if cfg is None or teacher is None or student is None:
        return None, "the run's config, teacher or student could not be read"
    try:
        return held_out_relation_maps(cfg, teacher, student), ""
    except SrpkdError as e:
        return None, str(e)


def _model_info(model, size: int) -> dict:
    info = {"params": count_params(model), "arch": getattr(model, "arch", None),
            "kwargs": getattr(model, "arch_kwargs", {})}
    try:
        info["macs"] = count_macs(model, size)
    except Exception:  # noqa: BLE001 - an uncountable model only loses its MAC figure
        info["macs"] = None
    return info


def collect(run_dir: str | os.PathLike) -> dict:
    """Everything a report shows about one run; missing pieces are None."""
    run = Path(run_dir)
    if not run.is_dir():
        raise SrpkdError(f"run folder not found: {run}")
    cfg, cfg_text = _config(run)
    size = cfg.data.crop_size if cfg else 256
    info: dict[str, Any] = {"name": run.name, "path": str(run), "config": cfg, "config_text": cfg_text, "size": size}
    info["metrics"] = read_json_object(run / run_folder.METRICS)
    info["profile"] = read_json_object(run / run_folder.PROFILE)
    info["teacher_profile"] = read_json_object(run / run_folder.PROFILE_TEACHER)
    info["log"] = read_log(run / run_folder.LOG)
    info["samples"] = run / run_folder.SAMPLES if (run / run_folder.SAMPLES).is_file() else None
    student = teacher = None
    try:
        student = load_generator(run)
    except SrpkdError:
        pass
    spec = cfg.teacher.checkpoint if cfg else None
    if spec:
        try:
            teacher = resolve_teacher(spec)
        except SrpkdError:
            pass
    info["student"] = _model_info(student, size) if student is not None else None
    info["teacher"] = _model_info(teacher, size) if teacher is not None else None
    info["teacher_spec"] = spec
    info["relation_maps"], info["relation_maps_missing"] = _relation_maps(cfg, teacher, student)
    return info


# ----------------------------------------------------------------------------- rendering pieces


def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _image_file_uri(path: Path) -> str | None:
    try:
        with Image.open(path) as img:
            img.load()
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="PNG")
        return _png_data_uri(buf.getvalue())
    except Exception:  # noqa: BLE001 - a damaged image is reported as missing
        return None


def loss_curves_png(records: list[dict]) -> bytes | None:
    """A grid of loss curves (one panel per ``loss/*`` key, against the step), as PNG bytes."""
    keys = sorted({k for r in records for k, v in r.items() if k.startswith("loss/") and isinstance(v, (int, float))})
    if not keys:
        return None
    plt = pyplot()
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [
            (r["step"], r[key])
            for r in records
            if isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), (int, float))
            and math.isfinite(r[key])
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, lw=1.2)
            if min(ys) > 0 and max(ys) / max(min(ys), 1e-12) > 100:
                ax.set_yscale("log")
        ax.set_title(key[len("loss/"):], fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return figure_png(fig)


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NOT_MEASURED
    return html.escape(fmt.format(value))


def _count(value, unit: float, suffix: str) -> str:
    return NOT_MEASURED if value is None else f"{value / unit:.2f} {suffix}"


def _primary(metrics: dict | None) -> dict:
    if not metrics or not isinstance(metrics.get("directions"), dict) or not metrics["directions"]:
        return {}
    d = metrics["directions"]
    return d.get(metrics.get("primary")) or next(iter(d.values()))


def _latency(profile: dict | None) -> str:
    """Every runtime of a profile in one cell (the comparison page)."""
    times = median_ms(profile)
    if not times:
        return NOT_MEASURED
    parts = ", ".join(f"{name} {ms:.1f}" for name, ms in times.items())
    return html.escape(f"{parts} ms ({where(profile)})")


def _latency_rows(teacher: dict | None, student: dict | None) -> tuple[list[list[str]], str]:
    """One row per runtime measured (teacher, student), and a note: where, and the student's speed-up."""
    t, s = median_ms(teacher), median_ms(student)
    runtimes = [r for r in RUNTIMES if r in t or r in s]
    if not runtimes:
        return [["Latency, median", NOT_MEASURED, NOT_MEASURED]], ""
    rows = [[f"Latency, {RUNTIME_NAMES[r]} (median) <span class=note>(lower is better)</span>",
             _fmt(t.get(r), "{:.1f} ms"), _fmt(s.get(r), "{:.1f} ms")] for r in runtimes]
    places = {where(p) for p in (teacher, student) if median_ms(p)}
    place = places.pop() if len(places) == 1 else f"teacher {where(teacher)}, student {where(student)}"
    note = f"Latency: {place}, median of {(student if s else teacher).get('runs', '?')} runs after a warm-up"
    speedups = [f"{t[r] / s[r]:.1f}x in {RUNTIME_NAMES[r]}" for r in runtimes if r in t and r in s and s[r] > 0]
    if speedups:
        note += f"; the student is faster by {', '.join(speedups)}"
    return rows, html.escape(note) + "."


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


VALIDATED = ("psnr", "l1", "st_lpips")  # what the training loop measures against the teacher on held-out images


def _logged(rec: dict, name: str) -> float | None:
    """``test/NAME`` (the split a run is reported on when it has a val split), else ``val/NAME``, of a record."""
    for prefix in ("test/", "val/"):
        value = rec.get(prefix + name)
        if isinstance(value, (int, float)):
            return value
    return None


def _with_validation(fidelity: dict, copy: dict, records: list[dict]) -> tuple[dict, dict, int | None]:
    """Fill the student's and the copy's PSNR / L1 / ST-LPIPS to the teacher from the last log.jsonl record
    that has them, where ``srpkd eval`` has not measured them; and the step of that record (None: not used)."""
    for rec in reversed(records):
        student = {k: _logged(rec, f"{k}_to_teacher") for k in VALIDATED if fidelity.get(k) is None}
        baseline = {k: _logged(rec, f"copy_{k}_to_teacher") for k in VALIDATED if copy.get(k) is None}
        student = {k: v for k, v in student.items() if v is not None}
        baseline = {k: v for k, v in baseline.items() if v is not None}
        if student:
            return {**fidelity, **student}, {**copy, **baseline}, rec.get("step")
    return fidelity, copy, None


def _task(info: dict) -> str | None:
    cfg = info["config"]
    return cfg.task if cfg else (info["metrics"] or {}).get("task")


def _measured_rows(rows: list[tuple[str, str, list]], unmeasured: list[str]) -> list[list[str]]:
    """Table rows from (label, format, values); a row without any value is named in ``unmeasured`` instead."""
    out = []
    for label, fmt, values in rows:
        if all(v is None for v in values):
            unmeasured.append(label)
        else:
            out.append([label, *[_fmt(v, fmt) for v in values]])
    return out


def _hinted(label: str, hint: str) -> str:
    return f"{label} <span class=note>({hint})</span>"


def _not_measured_note(labels: list[str], run: str) -> str:
    if not labels:
        return ""
    return (f'<p class="note">Not measured: {html.escape(", ".join(labels))}; '
            f"<code>srpkd eval {html.escape(run)}</code> measures them.</p>")


def _main_table(info: dict, m: dict) -> str:
    """Teacher and student side by side: size, latency, and the metrics that apply to the run's task."""
    s, t = info["student"] or {}, info["teacher"] or {}
    rows = [
        ["Architecture", html.escape(f"{t.get('arch')} {t.get('kwargs')}") if t else NOT_MEASURED,
         html.escape(f"{s.get('arch')} {s.get('kwargs')}") if s else NOT_MEASURED],
        ["Parameters", _count(t.get("params"), 1e6, "M"), _count(s.get("params"), 1e6, "M")],
        [f"MACs at {info['size']} px", _count(t.get("macs"), 1e9, "G"), _count(s.get("macs"), 1e9, "G")],
    ]
    latency, latency_note = _latency_rows(info["teacher_profile"], info["profile"])
    rows += latency
    task = _task(info)
    keys = TASK_METRICS.get(task, TASK_METRICS["paired"])
    unmeasured: list[str] = []
    metric_rows = [(_hinted(label, hint), fmt, [m.get("teacher", {}).get(key), m.get("student", {}).get(key)])
                   for label, key, fmt, hint in METRIC_ROWS if key in keys]
    fcn = m.get("fcn") or {}
    metric_rows += [(_hinted(label, hint), fmt, [fcn.get("teacher", {}).get(key), fcn.get("student", {}).get(key)])
                    for label, key, fmt, hint in FCN_ROWS if fcn]
    rows += _measured_rows(metric_rows, unmeasured)
    notes = [f'<p class="note">{latency_note}</p>' if latency_note else ""]
    if task == "teacher_only":
        notes.append('<p class="note">A teacher_only run has no real target images: no FID against real images '
                     "and no ground truth; its figures are the fidelity to the teacher below.</p>")
    elif task == "unpaired":
        notes.append('<p class="note">Unpaired data has no ground truth: no PSNR or SSIM to it.</p>')
    if fcn:
        real = fcn.get("real") or {}
        real_note = ("; the real photos score " + ", ".join(
            f"{label.removeprefix('FCN-score ')} {real[key]:.3f}" for label, key, _, _ in FCN_ROWS
            if isinstance(real.get(key), (int, float)))) if real else ""
        notes.append(f'<p class="note">FCN-score: {html.escape(str(fcn.get("segmenter")))} on the generated photos '
                     f"against the input label maps (palette {html.escape(str(fcn.get('palette')))}, "
                     f"{fcn.get('ignored_fraction', 0):.1%} of label pixels ignored){html.escape(real_note)}.</p>")
    notes.append(_not_measured_note([label.split(" <span")[0] for label in unmeasured], info["path"]))
    return _table(["", "teacher", "student"], rows) + "".join(notes)


def _fidelity_table(info: dict, m: dict) -> str:
    """The student against the teacher, beside a copy of the input (the baseline a student must beat)."""
    fidelity, copy, val_step = _with_validation(m.get("fidelity", {}), m.get("copy", {}), info["log"])
    unmeasured: list[str] = []
    rows = _measured_rows([(_hinted(label, hint), fmt, [fidelity.get(key), copy.get(key)])
                           for label, key, fmt, hint in FIDELITY_ROWS], unmeasured)
    out = "<h3>Fidelity to the teacher</h3>"
    if rows:
        out += _table(["", "student", "copy of the input"], rows)
    if val_step is not None:
        out += (f'<p class="note">PSNR, L1 and ST-LPIPS from the training loop\'s held-out validation at step '
                f"{val_step}: the run's student and a copy of its input, each against the teacher's output.</p>")
    return out + _not_measured_note([label.split(" <span")[0] for label in unmeasured], info["path"])


def _run_table(info: dict) -> str:
    m = _primary(info["metrics"])
    table = _main_table(info, m)
    if info["teacher_spec"] or m.get("fidelity"):
        table += _fidelity_table(info, m)
    if m:
        ref = m.get("reference")
        note = f"{m.get('n_images')} test images, direction {m.get('direction')}, {m.get('size')} px"
        if ref:
            note += f"; FID/KID reference: {ref.get('name')} ({ref.get('count')} images)"
        kid_subset = m.get("student", m.get("fidelity", {})).get("kid_subset_size", "?")
        table += f'<p class="note">srpkd eval: {html.escape(note)}. KID uses subsets of {kid_subset} images.</p>'
    other = [k for k in (info["metrics"] or {}).get("directions", {}) if k != (info["metrics"] or {}).get("primary")]
    for direction in other:
        d = info["metrics"]["directions"][direction]
        rows = [
            [label, _fmt(d.get("teacher", {}).get(key), fmt), _fmt(d.get("student", {}).get(key), fmt)]
            for label, key, fmt, _ in METRIC_ROWS if key in TASK_METRICS.get(_task(info), ())
        ]
        table += f"<h3>Direction {html.escape(direction)}</h3>" + _table(["", "teacher", "student"], rows)
    return table


def _sample_caption(info: dict) -> str:
    cfg = info["config"]
    if cfg is None:
        return "samples.png"
    columns = sample_columns(bool(cfg.teacher.checkpoint), cfg.task == "paired")
    return (f"{' | '.join(columns)}: the first held-out images of the run (samples.png; "
            f"each column at least 128 px wide)")


def _images(info: dict) -> str:
    if info["samples"] is None:
        return '<p class="na">no samples.png in this run</p>'
    uri = _image_file_uri(info["samples"])
    if uri is None:
        return '<p class="na">samples.png could not be read</p>'
    return (f'<figure><img alt="samples of {html.escape(info["name"])}" src="{uri}">'
            f"<figcaption>{html.escape(_sample_caption(info))}</figcaption></figure>")


def _relation_maps_html(info: dict) -> str:
    maps = info["relation_maps"]
    if maps is None:
        return f'<p class="na">no relation maps: {html.escape(info["relation_maps_missing"])}</p>'
    distances = ", ".join(f"{d:.3f}" for d in maps.distances.tolist())
    caption = (f"Rows of the semantic relation matrix at tap '{maps.tap}', teacher and student, for "
               f"{len(maps.pixels)} query pixels of the first image of the test split: how much "
               f"each pixel's features resemble the query pixel's. ||R_t - R_s||² per pixel: {distances} "
               f"(0: the teacher's row exactly). <code>srpkd relmap {html.escape(info['name'])} IMAGE "
               f"--pixels X,Y -o out.png</code> draws them for any image.")
    return (f'<figure><img alt="relation maps of {html.escape(info["name"])}" '
            f'src="{_png_data_uri(render_relation_maps(maps))}"><figcaption>{caption}</figcaption></figure>')


def _curves(info: dict) -> str:
    png = loss_curves_png(info["log"])
    if png is None:
        return '<p class="na">no losses logged (log.jsonl missing or empty)</p>'
    return (f'<figure><img alt="loss curves of {html.escape(info["name"])}" src="{_png_data_uri(png)}">'
            "<figcaption>losses from log.jsonl</figcaption></figure>")


def _page(title: str, body: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{GENERATOR_TAG}'
            f'<title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}"
            f'<p class="note">srpkd {html.escape(__version__)}, {stamp}</p></body></html>')


def render_run(info: dict) -> str:
    cfg = info["config"]
    if cfg:
        summary = f"task {cfg.task}, data {cfg.data.mode} {cfg.data.root or ''} {cfg.data.direction}"
    else:
        summary = "no readable config.yaml"
    body = [
        f"<h1>srpkd run {html.escape(info['name'])}</h1>",
        (f'<p class="note">{html.escape(info["path"])} &mdash; {html.escape(summary)}; '
         f'teacher {html.escape(str(info["teacher_spec"]))}</p>'),
        "<h2>Metrics</h2>", _run_table(info),
        "<h2>Samples</h2>", _images(info),
        "<h2>Relation maps</h2>", _relation_maps_html(info),
        "<h2>Loss curves</h2>", _curves(info),
        "<h2>Configuration</h2>",
        f"<pre>{html.escape(info['config_text'])}</pre>" if info["config_text"] else '<p class="na">no config.yaml</p>',
    ]
    return _page(f"srpkd {info['name']}", "\n".join(body))


def _relation_distance(maps: RelationMaps | None) -> str:
    if maps is None:
        return NOT_MEASURED
    return f"{float(maps.distances.mean()):.3f} <span class=note>at {html.escape(maps.tap)}</span>"


def render_comparison(infos: list[dict]) -> str:
    names = [html.escape(i["name"]) for i in infos]
    prim = [_primary(i["metrics"]) for i in infos]
    rows = [
        ["Task"] + [html.escape(i["config"].task) if i["config"] else NOT_MEASURED for i in infos],
        ["Student"] + [html.escape(f"{i['student']['arch']} {i['student']['kwargs']}") if i["student"] else NOT_MEASURED
                       for i in infos],
        ["Parameters"] + [_count((i["student"] or {}).get("params"), 1e6, "M") for i in infos],
        ["MACs"] + [_count((i["student"] or {}).get("macs"), 1e9, "G") for i in infos],
        ["Latency, median"] + [_latency(i["profile"]) for i in infos],
        ["SRP weight (loss.srp)"] + [html.escape(str(i["config"].loss.srp)) if i["config"] else NOT_MEASURED
                                     for i in infos],
        ["KD weight (loss.kd)"] + [html.escape(str(i["config"].loss.kd)) if i["config"] else NOT_MEASURED
                                   for i in infos],
    ]
    for label, key, fmt, hint in METRIC_ROWS:
        rows.append([f"{label} <span class=note>({hint})</span>"]
                    + [_fmt(p.get("student", {}).get(key), fmt) for p in prim])
    for label, key, fmt, hint in FIDELITY_ROWS:
        rows.append([f"{label} <span class=note>({hint})</span>"]
                    + [_fmt(p.get("fidelity", {}).get(key), fmt) for p in prim])
    rows.append(["Relation rows to the teacher <span class=note>(mean ||R<sub>t,i</sub> - R<sub>s,i</sub>||² over "
                 "the query pixels of the relation maps below; 0: the teacher's rows)</span>"]
                + [_relation_distance(i["relation_maps"]) for i in infos])
    body = ["<h1>srpkd runs compared</h1>", "<h2>Metrics</h2>", _table([""] + names, rows)]
    for info in infos:
        body += [f"<h2>{html.escape(info['name'])}</h2>", _images(info), _relation_maps_html(info), _curves(info)]
    return _page("srpkd comparison", "\n".join(body))


def _write(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``out``) atomically and return its path."""
    info = collect(run_dir)
    return _write(Path(out) if out else Path(run_dir) / run_folder.REPORT, render_run(info))


def write_comparison(run_dirs: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """One page comparing several runs (one column per run)."""
    if not run_dirs:
        raise SrpkdError("no runs to compare")
    return _write(Path(out), render_comparison([collect(r) for r in run_dirs]))
