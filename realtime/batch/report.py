"""OUTPUT/report.html of a batch: a static page (no scripts, nothing from other hosts) with PNG plots.

Plots (matplotlib, written to OUTPUT/report_files/): distinct tracks by label per video, distinct
tracks by label per minute of each video, the dwell-time histogram; and each video's first annotated
frame (its thumbnail.jpg) beside its numbers. Every file is written under a temporary name and
renamed; report.html comes last.

matplotlib comes with the ``[batch]`` extra, not with the runtime: without it the page has its
tables and thumbnails, no plots, and says how to get them (:func:`can_plot`, :data:`NO_PLOTS`).
"""

from __future__ import annotations

import html
import io
import logging
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..overlay import hex_colour
from ..summary import LABELS, TRACK_NOTE
from .outputs import write_bytes_replacing

log = logging.getLogger(__name__)

NO_PLOTS = "matplotlib is not installed: pip install 'face-gender-realtime[batch]' for the report's plots"
COLOURS = {label: hex_colour(label) for label in ("female", "male", "uncertain")}  # the overlay's colours
FILES = "report_files"


def can_plot() -> bool:
    """Whether matplotlib can be imported here (the ``[batch]`` and ``[train]`` extras bring it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_replacing(path, buf.getvalue())


def plot_tracks_by_label(videos: list[dict[str, Any]], path: Path) -> None:
    names = [v["video"] for v in videos]
    fig = _figure(8, 1.2 + 0.32 * max(1, len(names)))
    ax = fig.add_subplot()
    left = [0] * len(names)
    y = list(range(len(names)))
    for label in LABELS:
        values = [v["distinct_tracks"].get(label, 0) for v in videos]
        ax.barh(y, values, left=left, color=COLOURS[label], label=label)
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("distinct tracks (a person who leaves and returns counts again)")
    ax.set_title("Distinct tracks by label, per video")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def plot_timeline(video: dict[str, Any], path: Path) -> None:
    bins = video["timeline"]
    bin_s = float(video.get("timeline_bin_s") or 60.0)
    fig = _figure(6, 2.4)
    ax = fig.add_subplot()
    end_s = float(video.get("last_time_s") or 0.0)
    x = [b["start_s"] / 60.0 for b in bins]
    # each bar covers the part of its bin the video lasted (a 20 s clip: a third of a minute)
    widths = [max(min(bin_s, end_s - b["start_s"]), bin_s * 0.02) / 60.0 * 0.95 for b in bins]
    bottom = [0] * len(bins)
    for label in LABELS:
        values = [b.get(label, 0) for b in bins]
        ax.bar(x, values, width=widths, bottom=bottom, align="edge", color=COLOURS[label], label=label)
        bottom = [a + b for a, b in zip(bottom, values)]
    ax.set_xlim(0, len(bins) * bin_s / 60.0)
    ax.set_xlabel(f"minute of the video (video ends at {end_s:.0f} s)")
    ax.set_ylabel("distinct tracks")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{video['video']}: tracks seen per {bin_s:g} s, by label", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def plot_dwell(videos: list[dict[str, Any]], path: Path) -> None:
    dwell = {label: [t["dwell_s"] for v in videos for t in v["tracks"] if t["label"] == label] for label in LABELS}
    values = [d for ds in dwell.values() for d in ds]
    fig = _figure(7, 3)
    ax = fig.add_subplot()
    top = max(values) if values else 1.0
    n_bins = max(1, min(30, int(math.sqrt(len(values))) + 1))
    ax.hist([dwell[label] for label in LABELS], bins=n_bins, range=(0.0, max(top, 1e-3)), stacked=True,
            color=[COLOURS[label] for label in LABELS], label=list(LABELS))
    ax.set_xlabel("dwell time of a track (seconds from first to last frame seen)")
    ax.set_ylabel("tracks")
    ax.set_title(f"Dwell time, all videos ({len(values)} tracks)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def _url(rel: str) -> str:
    return quote(rel, safe="/")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}"
    return html.escape(str(value))


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f3f3f3}.num{text-align:right}.failed{color:#b00020}.note{color:#555;font-size:14px}
img.plot{max-width:100%;border:1px solid #ddd}img.thumb{width:240px;border:1px solid #ddd}
""" + "".join(f".{label}{{color:{colour}}}" for label, colour in COLOURS.items()) + "\n"


def write_report(output: Path, aggregate: dict[str, Any], plots: bool | None = None) -> Path:
    """Plots and OUTPUT/report.html for a batch's aggregate (``realtime.batch.driver.run_batch``).

    ``plots``: draw them (default: when matplotlib is installed); without, the page says why."""
    plots = can_plot() if plots is None else plots
    files = output / FILES
    files.mkdir(parents=True, exist_ok=True)
    videos = aggregate["videos"]
    ok = [v for v in videos if v["status"] == "ok"]
    failed = [v for v in videos if v["status"] != "ok"]
    if ok and plots:
        plot_tracks_by_label(ok, files / "tracks_by_label.png")
        plot_dwell(ok, files / "dwell_hist.png")
    timelines = {}
    for i, v in enumerate(videos):
        if plots and v["status"] == "ok" and v["timeline"]:
            name = f"timeline_{i:04d}.png"
            plot_timeline(v, files / name)
            timelines[v["video"]] = f"{FILES}/{name}"
    t = aggregate["totals"]
    d = t["distinct_tracks"]
    models = ", ".join(sorted({str(v.get("model")) for v in ok})) or "–"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Face gender batch report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>Face gender batch report</h1>",
        f'<p class="note">Input <code>{html.escape(str(aggregate["input"]))}</code>; {t["videos"]} videos, '
        f'{t["ok"]} annotated, <span class="{"failed" if t["failed"] else ""}">{t["failed"]} failed</span>, '
        f'{t["frames"]} frames; model <code>{html.escape(models)}</code>; mode {html.escape(aggregate["mode"])}.</p>',
        f'<p class="note">Distinct tracks: <b>{d.get("total", 0)}</b> — '
        + ", ".join(f'<span class="{k}">{k} {d.get(k, 0)}</span>' for k in LABELS)
        + f". Apparent binary gender from a face, estimated by a model; {html.escape(TRACK_NOTE)}.</p>",
    ]
    if ok and not plots:
        parts.append(f'<p class="note">No plots: {html.escape(NO_PLOTS)}.</p>')
    if ok and plots:
        parts += ["<h2>Distinct tracks by label</h2>",
                  f'<img class="plot" src="{FILES}/tracks_by_label.png" alt="distinct tracks by label per video">',
                  "<h2>Dwell time</h2>",
                  f'<img class="plot" src="{FILES}/dwell_hist.png" alt="histogram of dwell times">']
    parts += ["<h2>Videos</h2>", "<table><tr><th>first frame</th><th>video</th><th>tracks</th>"
              "<th>dwell s (mean / max)</th><th>over time</th><th>files</th></tr>"]
    for v in ok:
        out = v["outputs"]
        thumb = (f'<img class="thumb" src="{_url(out["thumbnail"])}" alt="first frame of '
                 f'{html.escape(v["video"])}">' if out.get("thumbnail") else "–")
        dt = v["distinct_tracks"]
        counts = "<br>".join(f'<span class="{k}">{k} {dt.get(k, 0)}</span>' for k in LABELS)
        timeline = (f'<img class="plot" src="{timelines[v["video"]]}" alt="tracks per minute of '
                    f'{html.escape(v["video"])}">' if v["video"] in timelines else "–")
        links = " ".join(f'<a href="{_url(out[k])}">{k}</a>' for k in ("video", "jsonl", "summary") if out.get(k))
        parts.append(f"<tr><td>{thumb}</td><td>{html.escape(v['video'])}<br>{v['frames']} frames"
                     f"{' (resumed)' if v['resumed'] else ''}</td><td>{dt.get('total', 0)} tracks<br>{counts}</td>"
                     f"<td class=num>{_cell(v['dwell_s'].get('mean'))} / {_cell(v['dwell_s'].get('max'))}</td>"
                     f"<td>{timeline}</td><td>{links}</td></tr>")
    parts.append("</table>")
    if failed:
        parts += [f'<h2 class="failed">Failed ({len(failed)})</h2>', "<table><tr><th>video</th><th>error</th></tr>"]
        parts += [f"<tr><td>{html.escape(v['video'])}</td><td>{html.escape(v['error'] or v['status'])}</td></tr>"
                  for v in failed]
        parts.append("</table>")
    parts.append("<p class=note>Made by <code>python -m realtime.batch</code>; numbers in summary.csv and "
                 "summary.json beside this page.</p></body></html>\n")

    path = output / "report.html"
    write_bytes_replacing(path, "\n".join(parts).encode("utf-8"))
    return path
