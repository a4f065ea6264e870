#!/usr/bin/env python3
"""Put measured numbers into the docs: every figure comes from a JSON file under docs/measurements.

The shipped model card (``models/MODEL_CARD.md``) is generated whole by ``training.card`` from the
model's metadata (``models/gender_vgg16_int8.json``, written by ``training export``, with its
training curve) and, when committed, ``docs/measurements/size_tradeoff.json``,
``face_region.json``, ``trial_*.json`` (candidates not shipped) and the distillation ablation
(``distill_val.json``, ``distill_web.json``, ``teachers.json``, ``size_tradeoff_distilled.json``;
``scripts/train_distilled_candidates.sh`` writes them). Every other document holds
generated blocks between two markers::

    <!-- measured:NAME -->
    ...generated, do not edit...
    <!-- /measured:NAME -->

``python scripts/render_docs.py`` rewrites every block from its JSON; ``--check`` only reports
blocks that differ (``tests/test_docs_measured.py`` runs it, so a figure typed by hand, or a
JSON updated without re-rendering, fails the tests). This is the one renderer of measured blocks:
a measuring script may keep its own renderers beside its measurements (``scripts/batch_bench.py``
does, for docs/batch.md's ``batch-*`` blocks) and they are registered in :data:`RENDERERS` here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
if str(REPO_ROOT / "scripts") not in sys.path:  # (imported by the tests, not run)
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
from batch_bench import RENDERERS as BATCH_RENDERERS  # noqa: E402  (after the repo is on the path)

from realtime.machine import describe_cpu  # noqa: E402

MEASURED = REPO_ROOT / "docs" / "measurements"
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
MODEL_CARD = REPO_ROOT / "models" / "MODEL_CARD.md"
SHIPPED_META = REPO_ROOT / "models" / "gender_vgg16_int8.json"
BLOCK = re.compile(r"(<!-- measured:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /measured:(?P=name) -->)", re.S)


def load(name: str) -> dict[str, Any]:
    return json.loads((MEASURED / name).read_text())


def machine(report: dict[str, Any]) -> str:
    return describe_cpu(report.get("cpu", {}))


def model_name(report: dict[str, Any]) -> str:
    """The measured model as the docs name it: file, input size and (when recorded) its hash."""
    info = report.get("model_info", {})
    sha = f", SHA-256 {info['sha256'][:12]}…" if info.get("sha256") else ""
    return f"model `{Path(report['model']).name}` ({info.get('input_size', '?')} px{sha})"


def detector_parity() -> str:
    r = load("detector.json")
    lines = [f"Measured by `python scripts/detector_report.py` on {machine(r)}; "
             f"{r['frames']} frames of `{r['clip']}` ({r['frame_size'][0]} x {r['frame_size'][1]}) "
             f"and {r['stills']} still images.", "",
             "| model | faces (MediaPipe / LiteRT) | images with another count | matched pairs | IoU min | "
             "IoU mean | pairs with IoU ≥ 0.9 | max score difference |",
             "|---|---|---|---|---|---|---|---|"]
    for model, e in r["models"].items():
        p = e["parity"]
        lines.append(f"| {model}-range | {p['faces']['mediapipe']} / {p['faces']['litert']} | "
                     f"{p['images_with_other_count']} | {p['pairs']} | {p['iou_min']:.3f} | {p['iou_mean']:.3f} | "
                     f"{p['share_iou_at_least_0_9']:.1%} | {p['score_diff_max']:.3f} |")
    return "\n".join(lines) + "\n"


def detector_speed() -> str:
    r = load("detector.json")
    lines = [f"Detector alone, ms per frame (median of 3 passes over `{r['clip']}`, "
             f"{r['frame_size'][0]} x {r['frame_size'][1]}) on {machine(r)}:", "",
             "| model | MediaPipe Tasks | LiteRT (ours) | speed-up |", "|---|---|---|---|"]
    for model, e in r["models"].items():
        lines.append(f"| {model}-range | {e['mediapipe']['ms_per_frame']:.2f} | {e['litert']['ms_per_frame']:.2f} | "
                     f"{e['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def _benchmark_rows(report: dict[str, Any], backend: str) -> list[str]:
    rows = []
    for run in report.get("compare", [report]):
        rows.append(f"| {backend} | {run['mode']} | {run['cache']} | {run['fps']:.1f} | {run['ms']['detect']:.2f} | "
                    f"{run['ms']['classify']:.2f} | {run['ms']['total']:.2f} | {run['rss_mb']:.0f} |")
    return rows


def benchmark_backends() -> str:
    before, after = load("benchmark_640x480_mediapipe.json"), load("benchmark_640x480_litert.json")
    lines = [f"`python scripts/benchmark.py --source {after['source']} --compare --detector-backend "
             f"mediapipe|litert` (one process per row, second run after install, so bytecode is compiled) "
             f"on {machine(after)}; {model_name(after)}, detector {after['detector']}-range:", "",
             "| backend | mode | cache | FPS | detect ms | classify ms | total ms | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|",
             *_benchmark_rows(before, "mediapipe (before)"), *_benchmark_rows(after, "litert (now default)")]
    return "\n".join(lines) + "\n"


def soak() -> str:
    r = load("soak_demo_litert.json")
    s = r["soak"]
    slope = s.get("rss_slope_mb_per_min")
    return (f"`python scripts/benchmark.py --source {r['source']} --soak {s['seconds']:g} --interval "
            f"{s['interval_s']:g} --async` on {machine(r)}, {model_name(r)}: {r['frames']} frames at "
            f"{r['fps']:.0f} FPS; "
            f"RSS {s['rss_start_mb']:.1f} MB after warm-up, {s['rss_end_mb']:.1f} MB at the end, peak "
            f"{s['rss_max_mb']:.1f} MB over {len(s['samples'])} samples; least-squares slope "
            f"{'n/a' if slope is None else f'{slope:+.2f} MB/min'}. (A memory check: other jobs shared the "
            f"cores, so its FPS is no speed figure.)\n")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def model_summary() -> str:
    """The shipped model's headline figures, from its metadata (written by `training export`)."""
    meta = json.loads((REPO_ROOT / "models" / "gender_vgg16_int8.json").read_text())
    m = meta["metrics"]
    test, masked = m["test"], m["test_masked"]
    child = next((v for k, v in m.items() if k.startswith("test_children_under_")), None)
    data = (meta.get("data") or {}).get("name", "UTKFace")
    lines = [f"`models/{meta['model']}` ({meta['size_bytes'] / 1e6:.1f} MB, full-integer int8, "
             f"{meta['input_size']} x {meta['input_size']} px input). Training: {meta.get('training', '')}", "",
             f"On the {data} **test split** ({test['n']} people aged ≥ 13; never used for training or model "
             f"selection), int8, threshold {meta['threshold']} chosen on the validation split:", "",
             "| | accuracy | female recall | male recall |", "|---|---|---|---|",
             f"| unmasked | {_pct(test['accuracy'])} | {_pct(test['recall_female'])} | {_pct(test['recall_male'])} |",
             f"| synthetic masks | {_pct(masked['accuracy'])} | {_pct(masked['recall_female'])} | "
             f"{_pct(masked['recall_male'])} |"]
    if child:
        lines.append(f"| children < 13 ({child['n']}, unmasked) | {_pct(child['accuracy'])} | "
                     f"{_pct(child['recall_female'])} | {_pct(child['recall_male'])} |")
    lines += ["", f"int8 agrees with float32 on {_pct(test.get('agreement_with_float'))} of unmasked test faces."]
    age = m.get("test_age")
    if age:
        lines.append(f"Apparent age: MAE {age['mae']:.1f} years on the test split; faces that look under "
                     f"{age['child_age']:g} are labelled `uncertain` (child): {_pct(age['children_gated'])} of "
                     f"children, {_pct(age['adults_gated'])} of adults.")
    lines += ship_decision(meta)
    return "\n".join(lines) + "\n"


def ship_decision(meta: dict[str, Any]) -> list[str]:
    """Why this model replaced the previous one: both scored and timed on the validation split."""
    path = MEASURED / "ship_decision.json"
    if not path.is_file():
        return []
    r = json.loads(path.read_text())
    models = r["models"]
    at = next((k for k, m in enumerate(models) if Path(m["model"]).name == meta["model"]), None)
    if not at or "ms_per_face" not in models[at]:  # absent, or listed first: nothing it was chosen over
        return []
    new, old, first = models[at], models[at - 1], models[0]
    also = ""
    if at > 1:  # the first model is the reference of the speed target (model v1)
        also = (f"; {new['ms_per_face'] / first['ms_per_face']:.2f}x the time of `{first['model']}` "
                f"({first['ms_per_face']:.2f} ms), score {first['score']:.4f}")
    g = new.get("vs_previous")
    gain = (f", a gain of {g['gain'] * 100:+.2f} points, paired-bootstrap 95 % interval {g['ci95'][0] * 100:+.2f} "
            f"to {g['ci95'][1] * 100:+.2f}" if g else "")
    return ["", f"Chosen over the previous model (`{old['model']}`, SHA-256 {old['sha256'][:12]}…) "
            f"on the validation split only: score {new['score']:.4f} vs {old['score']:.4f} (mean of plain and "
            f"masked balanced accuracy{gain}); {new['ms_per_face']:.2f} vs {old['ms_per_face']:.2f} ms per face "
            f"({new['ms_per_face'] / old['ms_per_face']:.2f}x{also}; batch 1, flip averaging included, on "
            f"{machine(r)}; `python scripts/compare_on_val.py`, "
            "[measurements/ship_decision.json](docs/measurements/ship_decision.json))."]


def _web_load_rows(r: dict[str, Any], version: str) -> list[str]:
    rows = []
    for key, name in (("pixel_limit", "images at the limit"), ("mixed", "images + videos")):
        s = r[key]
        img, vid = s["images"], s["videos"]
        size = f"{s['image']['width']} x {s['image']['height']}"
        videos = (f"{vid['ok']} / {vid['n']} | {vid['p50_s']:.1f} / {vid['p95_s']:.1f}" if vid.get("n")
                  else "- | -")
        rows.append(f"| {name} | {version} | {img['n']} x {size} | {img['ok']} / {img['n']} | {img['p50_s']:.1f} / "
                    f"{img['p95_s']:.1f} | {videos} | {s['idle_rss_mb']} → **{s['peak_rss_mb']}** |")
    return rows


def web_load() -> str:
    after = load("web_load.json")
    before = load("web_load_before.json") if (MEASURED / "web_load_before.json").is_file() else None
    m = after["mixed"]
    loads = f"{after['load_average']['before'][0]:.1f}"
    where = f"on {machine(after)}"
    caveat = "other jobs shared them, so the seconds are no speed figure; the memory is"
    if before is not None:
        loads = f"{before['load_average']['before'][0]:.1f} (before) and {loads} (now)"
        if before.get("cpu") != after.get("cpu"):
            where = f"(before: on {machine(before)}; now: on {machine(after)})"
            caveat = ("other jobs may have shared them, and before and now ran on different machines, so the "
                      "seconds are no speed figure; the memory is")
    lines = [f"`python scripts/web_load.py` {where}, model `{after['model']}`: each row is a freshly "
             f"started server on 127.0.0.1 receiving every request at once; the mixed rows add "
             f"{m['videos']['n']} uploads of `{m['video']['file']}` ({m['video']['frames']} frames). Latency: "
             "an image from request to response, a video from upload to job done. Load average before the "
             f"run {loads} on {after['cpu']['cores']} cores ({caveat}).", "",
             "| scenario | version | images | done / sent | image p50 / p95 s | videos done / sent | "
             "video p50 / p95 s | server RSS MB, idle → peak |",
             "|---|---|---|---|---|---|---|---|"]
    reports = [before, after] if before is not None else [after]
    if before is not None:
        lines += _web_load_rows(before, "before (decode outside the lock)")
    lines += _web_load_rows(after, "now")
    lost = sum(r[k][kind].get("lost", 0) for r in reports for k in ("pixel_limit", "mixed")
               for kind in ("images", "videos"))
    lines += ["", f"Requests or jobs lost (not ending in a result) over all rows: {lost}."]
    return "\n".join(lines) + "\n"


def pi_emulation() -> str:
    runs = [load(f"pi_emulation_{core}.json") for core in ("cortex-a72", "cortex-a76")]

    def agree(block: dict) -> str:
        return (f"{block['same_label']} / {block['faces_compared']} = **{block['agreement']:.1%}** "
                f"(mean box IoU {block['mean_iou']:.3f})")

    def mediapipe(r: dict) -> tuple[str, str]:
        m = r["mediapipe_backend"]
        if m.get("expected") == "refusal":
            why = ("naming the `[mediapipe]` extra (not installed: the lean runtime)"
                   if m.get("reason") == "not installed" else "about atomics")
            return f"refused: exit status {m['exit_status']}, one `error:` line {why}", "-"
        strict = f"{m['same_label']} / {m['faces_compared']} = {m['agreement']:.1%} strictly"
        return (f"ran: {m['frames_written']} frames, {m['faces']} faces (mean IoU {m['mean_iou']:.3f})",
                f"{strict}; {m['agreement_with_borderline']:.1%} with the {m['borderline_label']} borderline faces")

    def serve(r: dict) -> str:
        v = r.get("serve")
        if not v:
            return "not run (an earlier version of the emulation)"
        return (f"{v['frame_bytes']} B JPEG after {v['seconds_to_first_frame']:g} s, an event with "
                f"{v['event_faces']} faces; Ctrl-C: exit {v['exit_status_after_ctrl_c']}")

    def hwcap(r: dict) -> str:
        a = r["arm64"]
        return ", ".join(("" if a[k] else "no ") + name for k, name in
                         (("hwcap_atomics", "atomics"), ("hwcap_asimddp", "asimddp"), ("hwcap2_sme", "SME")))

    a72, a76 = runs
    env = a72["arm64"]

    def package(name: str) -> str:
        v72, v76 = (r["arm64"]["packages"].get(name) for r in runs)
        if v72 == v76:
            return f"{name} {v72}" if v72 else f"no {name}"
        only = "Cortex-A76" if v76 else "Cortex-A72"
        return f"{name} {v72 or v76} (the {only} run only)"

    names = dict.fromkeys([*a72["arm64"]["packages"], *a76["arm64"]["packages"]])
    packages = ", ".join(package(name) for name in names)
    built = " and ".join(f"the {r['qemu_cpu']} run {'built' if r['rootfs']['built_this_run'] else 'reused'} it"
                         for r in runs)
    intro = [f"Host: {a72['host']['qemu']} on {a72['host']['machine']}, kernel {a72['host']['kernel']}; guest: "
             f"Debian {a72['rootfs']['debian_version']} ({a72['rootfs']['suite']}) arm64, CPython {env['python']}, "
             f"{packages}. Root file system (arm64 bookworm): {built}.", ""]
    rows = [("frames in / video out / JSONL lines", *(f"{r['input_frames']} / {r['auto']['frames_written']} / "
                                                        f"{r['auto']['jsonl_lines']}" for r in runs)),
            ("faces (x86 run)", *(f"{r['auto']['faces']} ({r['auto']['x86_reference']['faces']})" for r in runs)),
            ("`--detector-backend auto` chose", *(r["auto"]["backend"] for r in runs)),
            ("labels agreeing with x86, auto", *(agree(r["auto"]) for r in runs)),
            ("`--detector-backend mediapipe`", mediapipe(a72)[0], mediapipe(a76)[0]),
            ("labels agreeing with x86 MediaPipe", mediapipe(a72)[1], mediapipe(a76)[1]),
            ("`--serve` on loopback: a frame and an event fetched inside", *(serve(r) for r in runs)),
            ("emulated CPU (HWCAP)", hwcap(a72), hwcap(a76)),
            ("emulated speed (meaningless for a Pi)", *(f"{r['auto']['emulated_fps']:g} FPS" for r in runs))]
    lines = [*intro, "| | Cortex-A72 (Pi 4) | Cortex-A76 (Pi 5) |", "|---|---|---|",
             *(f"| {name} | {x} | {y} |" for name, x, y in rows), "", "Seconds per step:", "",
             "| step | Cortex-A72 | Cortex-A76 |", "|---|---|---|"]
    steps = (("x86 reference (tools, binfmt)", ("tools", "binfmt", "reference")), ("root file system (mmdebstrap)",
             ("rootfs",)), ("wheels (download on the host)", ("wheels",)), ("project copy and mounts", ("copy",)),
             ("`setup_pi.sh` (apt, venv, pip, self-check)", ("setup",)), ("demo, `--detector-backend auto`",
             ("demo",)), ("demo, `--serve`", ("serve",)), ("`--detector-backend mediapipe`", ("mediapipe",)),
             ("checks", ("check",)),
             ("**total**", ("total",)))
    for name, keys in steps:
        cells = [f"{sum(r['seconds'].get(k, 0.0) for k in keys):.1f}" for r in runs]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def _vgg16_conv_gmacs(size: int) -> float:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from benchmark import vgg16_conv_macs

    return vgg16_conv_macs(size) / 1e9


def vgg_macs() -> str:
    """VGG16's conv cost by input size (computed by ``scripts/benchmark.py --macs``)."""
    base = _vgg16_conv_gmacs(64)
    return "\n".join(["| input px | VGG16 conv GMACs | vs 64 px |", "|---|---|---|",
                      *(f"| {s} | {_vgg16_conv_gmacs(s):.2f} | {_vgg16_conv_gmacs(s) / base:.2f}x |"
                        for s in (64, 96, 128, 224))]) + "\n"


def pi_estimate() -> str:
    """The Pi 4 / Pi 5 speed estimate, computed from the published figure and the stated assumptions."""
    e = load("pi_estimate.json")
    pub, a = e["published"], e["assumptions"]
    vgg224 = _vgg16_conv_gmacs(224) + pub["vgg16_fc_gmacs"]
    rate = {t: vgg224 / (ms / 1000) for t, ms in pub["vgg16_int8_224_ms"].items()}
    pi4 = {s: _vgg16_conv_gmacs(s) / rate["threads_4"] * 1000 for s in (64, 96, 128)}
    face = {"pi4": pi4, "pi5": {s: ms / a["pi5_over_pi4_int8"] for s, ms in pi4.items()}}
    det, other, camera = a["short_range_detector_ms"], a["other_ms_per_frame"], a["camera_fps"]

    def default(board: str) -> str:
        frame = det[board] + other[board]
        bound = "camera-bound" + (f", {camera} FPS" if 1000 / frame > camera else "")
        return (f"~{frame:.0f} ms/frame: **{bound}** (compute ~{1000 / frame:.0f} FPS); a new face is labelled "
                f"~{face[board][64]:.0f}-{3 * face[board][64]:.0f} ms after it appears")

    def every(board: str, n: int) -> str:
        total = det[board] + n * face[board][64] + other[board]
        return (f"{det[board]:g} + {n * face[board][64]:.0f} + {other[board]:g} = ~{total:.0f} ms: "
                f"**~{1000 / total:.0f} FPS**")

    def sizes(board: str) -> str:
        return ", ".join(f"{face[board][s]:.0f} ms at {s} px" for s in (96, 128))

    full = {b: det[b] * (a["full_range_over_short_range"] - 1) for b in det}
    lines = [
        "Inputs ([measurements/pi_estimate.json](measurements/pi_estimate.json)):", "",
        f"* **Published Pi 4 int8 VGG16 figure**: {pub['source']} lists `vgg16_int8` (224 x 224) at "
        f"{pub['vgg16_int8_224_ms']['threads_4']} ms with 4 threads and {pub['vgg16_int8_224_ms']['threads_1']} ms "
        f"with 1 thread, and `blazeface` at {pub['blazeface_ms_threads_4']:g} ms (4 threads). "
        f"{_vgg16_conv_gmacs(224):.2f} GMACs (+{pub['vgg16_fc_gmacs']:g} in its FC layers) in "
        f"{pub['vgg16_int8_224_ms']['threads_4']} ms is **about {rate['threads_4']:.0f} GMAC/s** (4 threads; "
        f"{rate['threads_1']:.0f} GMAC/s on one core).",
        f"* **Assumption 1**: {a['litert_gmacs_per_s_as_ncnn']}.",
        f"* **Assumption 2**: {a['pi5_over_pi4_note']}; {a['pi5_over_pi4_int8']:g}x below.",
        f"* **Assumption 3**: {a['other_note']} cost about {other['pi4']:g} ms per frame on a Pi 4 and "
        f"{other['pi5']:g} ms on a Pi 5; the short-range detector costs about the ncnn BlazeFace figure "
        f"({det['pi4']:g} ms on a Pi 4, {det['pi5']:g} ms on a Pi 5) and full-range "
        f"{a['full_range_over_short_range']:g}x that.", "",
        f"Per face (4 threads): {_vgg16_conv_gmacs(64):.2f} / {rate['threads_4']:.0f} = "
        f"**~{face['pi4'][64]:.0f} ms at 64 px on a Pi 4** ({sizes('pi4')}); "
        f"**~{face['pi5'][64]:.0f} ms at 64 px on a Pi 5** ({sizes('pi5')}).", "",
        "| 640 x 480 camera, short-range, 64 px | Pi 4 (estimate) | Pi 5 (estimate) |", "|---|---|---|",
        f"| default: async + cache, 1-3 faces | {default('pi4')} | {default('pi5')} |",
        f"| sync, classify every frame, 1 face | {every('pi4', 1)} | {every('pi5', 1)} |",
        f"| sync, classify every frame, 3 faces | {every('pi4', 3)} | {every('pi5', 3)} |",
        f"| full-range detector instead | add ~{full['pi4']:.0f} ms/frame | add ~{full['pi5']:.0f} ms/frame |",
    ]
    return "\n".join(lines) + "\n"


def finetune_own_faces() -> str:
    """Fine-tuned vs from scratch vs shipped, on a user-sized folder (scripts/finetune_bench.py)."""
    r = load("finetune_own_faces.json")
    d = r["data"]
    lines = [f"`python scripts/finetune_bench.py` on {machine(r)}: {d['own_per_class']} + {d['own_per_class']} "
             f"adult faces (age ≥ {d['min_age']}) as `own/female` and `own/male`, a disjoint "
             f"{d['test_per_class']} + {d['test_per_class']} as the test folder, all from the {d['source']}; "
             f"shipped model `{r['shipped_model']['file']}` (SHA-256 {r['shipped_model']['sha256'][:12]}…); both "
             f"trainings get `--schedule {r['schedule']}` and `--seed {d['seed']}`, and run the README's "
             "commands above. Scores of the int8 models on the test folder:", "",
             "| model | accuracy | balanced | female recall | male recall | uncertain | training time |",
             "|---|---|---|---|---|---|---|"]
    for name, res in r["results"].items():
        took = r["seconds"].get(f"train {name}")
        lines.append(f"| {name} | {_pct(res['accuracy'])} | {_pct(res['balanced_accuracy'])} | "
                     f"{_pct(res['recall_female'])} | {_pct(res['recall_male'])} | {_pct(res['uncertain'])} | "
                     f"{'–' if took is None else f'{took / 60:.1f} min'} |")
    return "\n".join(lines) + "\n"


def serve_fps() -> str:
    """What ``--serve`` costs the default pipeline (scripts/serve_bench.py fps)."""
    r = load("serve_fps.json")
    lines = [f"`{r['command']}` on {machine(r)}, source `{r['source']}` (`--sync`, the shipped model), each "
             "configuration run in turns and its median kept:", "",
             "| run | FPS (median) | vs no `--serve` | peak RSS |", "|---|---|---|---|"]
    for name, row in r["rows"].items():
        lines.append(f"| {name} | {row['fps_median']:.0f} | {100 * (row['fps_vs_no_serve'] - 1):+.1f} % | "
                     f"{row['rss_mb_peak_median']:.0f} MB |")
    return "\n".join(lines) + "\n"


def serve_soak() -> str:
    """A long ``--serve`` run with viewers coming and going (scripts/serve_bench.py soak)."""
    r = load("serve_soak.json")
    samples = r["samples"]
    threads = sorted({s["threads"] for s in samples if s.get("threads") is not None})
    fds = sorted({s["fds"] for s in samples if s.get("fds") is not None})
    left = r["after_viewers_left"]
    return (f"`{r['command']}` on {machine(r)}: {r['minutes']:g} minutes, {r['viewer_connections']} viewer "
            f"connections (MJPEG and events, 0 to 5 at a time). RSS {r['rss_mb_minute_1']:.1f} MB in minute 1, "
            f"{r['rss_mb_last_minute']:.1f} MB in the last minute; threads {threads[0]}–{threads[-1]} and open "
            f"files {fds[0]}–{fds[-1]} while viewers came and went, {left['threads']} threads and {left['fds']} "
            f"open files once they had all left; SIGTERM ended the run with exit status "
            f"{r['exit_status_on_sigterm']}.\n")


def teachers() -> str:
    """The teachers and their combinations on UTKFace validation and the web portraits."""
    r = load("teachers.json")
    names = ["faceres", "agegender", "cydral", "shipped"]
    keep = [*names, "mean(" + "+".join(names[:3]) + ")", "mean(" + "+".join(names) + ")",
            "mean(faceres+cydral+shipped)", "mean(agegender+shipped)"]
    lines = [f"`python scripts/teacher_table.py` on {machine(r)}; balanced accuracy at 0.5 (female / male recall). "
             f"Validation: {r['val']['set']}. Web: {r['web']['set']}.", "",
             "| teacher or mean of logits | UTKFace validation | web portraits |", "|---|---|---|"]
    for key in keep:
        v, w = r["val"]["rows"].get(key), r["web"]["rows"].get(key)
        if v and w:
            lines.append(f"| {key} | {_pct(v['balanced_accuracy'])} ({_pct(v['recall_female'])} / "
                         f"{_pct(v['recall_male'])}) | {_pct(w['balanced_accuracy'])} ({_pct(w['recall_female'])} / "
                         f"{_pct(w['recall_male'])}) |")
    return "\n".join(lines) + "\n"


def setup() -> str:
    """`make test`'s time and the size of .venv (scripts/measure_setup.py). It measures the suite
    that checks this block, so until its first run the block says so instead."""
    if not (MEASURED / "setup.json").is_file():
        return "Not measured yet: `python3 scripts/measure_setup.py --json docs/measurements/setup.json`.\n"
    r = load("setup.json")
    busy_before = r.get("load_average_before")
    busy = f" (load average {busy_before[0]:.1f} when it started)" if busy_before else ""
    return (f"Measured by `python3 scripts/measure_setup.py` on {machine(r)}, a warm checkout{busy}: `make test` "
            f"took {r['wall_s'] / 60:.1f} min ({r['pytest_summary']}), and `.venv` with every extra installed holds "
            f"{r['venv_mb'] / 1024:.1f} GB.\n")


INSTALL_LABELS = {"runtime": "runtime (`requirements.txt`: what `pip install .` brings)", "mediapipe": "`[mediapipe]`",
                  "web": "`[web]`", "train": "`[train]`", "batch": "`[batch]`",
                  "all": "every extra (`make test`'s set)"}


def installs() -> str:
    """Fresh-venv installs before and after the lean runtime (scripts/measure_setup.py installs)."""
    r = load("installs.json")

    def cell(e: dict[str, Any] | None) -> str:
        if not e:
            return "–"
        return f"{e['venv_mb']:.0f} MB, {e['install_s']:.0f} s ({e['packages']} packages)"

    def opencv(e: dict[str, Any] | None) -> str:
        return "–" if not e else ", ".join(f"`{k}` {v}" for k, v in e["opencv_wheels"].items()) or "none"

    after = next(e["after"] for e in r["targets"].values() if e.get("after"))
    load_before = ", ".join(f"{v:.1f}" for v in r["load_average_before"])
    lines = [f"`{r['command']}` on {machine(r)}, Python {r['python']}, pip {after['pip']}: each install a fresh "
             f"venv and `pip install --no-cache-dir -r FILE...` (pip upgraded first, not timed), so every wheel is "
             f"downloaded again, through this machine's pip configuration and network: the times say little "
             f"about another machine's, and other jobs shared the cores (load average {load_before} before). "
             f"Size: the whole venv, pip included. Before: the requirement files of `{r['before_ref']}` "
             f"({r['before_commit']}); after: {r['after_commit']}.", "",
             "| install | before | after | OpenCV wheels in the venv |", "|---|---|---|---|"]
    for name, e in r["targets"].items():
        wheels = [opencv(e.get(side)) for side in ("before", "after") if e.get(side)]
        shown = wheels[0] if len(set(wheels)) == 1 else " before, ".join(wheels) + " after"
        lines.append(f"| {INSTALL_LABELS.get(name, name)} | {cell(e.get('before'))} | {cell(e.get('after'))} | "
                     f"{shown} |")
    lines += ["", "OpenCV wheels (one download each, unpacked size = what lands in the venv; aarch64 = Linux "
              "manylinux, the Pi):", "", "| wheel | this machine | aarch64 |", "|---|---|---|"]

    def size(w: dict[str, Any] | None) -> str:
        return "–" if not w else f"{w['unpacked_mb']:.0f} MB ({w['wheel_mb']:.0f} MB wheel)"

    for row in r["opencv_candidates"]:
        lines.append(f"| `{row['wheel']}` | {size(row.get('host'))} | {size(row.get('aarch64'))} |")
    return "\n".join(lines) + "\n"


def distill_ablation() -> str:
    """Distilled candidates against the shipped model on both validation sets (the card's table)."""
    from training.card import ablation_table, ship_verdict

    val = load("distill_val.json")
    web = load("distill_web.json") if (MEASURED / "distill_web.json").is_file() else None
    return "\n".join([*ablation_table(val, web), "", ship_verdict(val, web)]) + "\n"


def fuzz() -> str:
    """Mutated inputs through the command-line tools (scripts/fuzz_cli.py)."""
    r = load("fuzz.json")
    kinds = ", ".join(f"{n} {kind}" for kind, n in r["runs_by_kind"].items())
    codes = ", ".join(f"{code}: {n}" for code, n in r["exit_codes"].items())
    other = sum(n for outcome, n in r["outcomes"].items() if outcome not in ("ok", "traceback", "hang", "crash"))
    return (f"`python scripts/fuzz_cli.py --runs {r['runs_by_kind'].get('clip', 0)} --batch-videos "
            f"{r['batch_videos']}` on {machine({'cpu': r['machine']})} (seed {r['seed']}): {r['runs']} runs "
            f"({kinds}; the batch run holds {r['batch_videos']} mutated clips) in {r['seconds']:.0f} s. "
            f"Exit statuses {codes}. **Tracebacks {r['tracebacks']}, hangs {r['hangs']}, crashes "
            f"{r['crashes']}**, other failures (no `error:` line, an output left after a failure, a partial "
            f"file left) {other}.\n")


def flat_graphic() -> str:
    """The faceless fake camera and the flat-graphic rule (scripts/flat_graphic_check.py)."""
    r = load("flat_graphic.json")
    rule = r["rule"]
    text = (f"`python scripts/flat_graphic_check.py` on {machine({'cpu': r['machine']})}; the rule drops a "
            f"detection scored below {rule['score_below']} whose box, contrast-stretched into 8 grey tones, has "
            f"at least {rule['two_tone_share_at_least']:.0%} of its pixels in two tones.")
    cam = r.get("fake_camera")
    if cam:
        text += (f" Chromium's fake camera ({cam['frames']} frames, 50 ms apart): the short-range model found a "
                 f"\"face\" in {cam['short']['frames_with_a_face']} frames (scores up to {cam['short']['max_score']}), "
                 f"{cam['short']['frames_with_a_face_with_rule']} with the rule; the full-range model in "
                 f"{cam['full']['frames_with_a_face']} (up to {cam['full']['max_score']}).")
    real = r.get("real_faces") or {}
    if real:
        lost = sum(v["faces_without_rule"] - v["faces_with_rule"] for v in real.values())
        total = sum(v["faces_without_rule"] for v in real.values())
        sets = "; ".join(f"{k}: {v['faces_without_rule']} faces, largest two-tone share {v['max_two_tone_share']}"
                         for k, v in real.items())
        text += f" Real faces the rule dropped: **{lost} of {total}** ({sets})."
    return text + "\n"


RENDERERS: dict[str, Callable[[], str]] = {
    "flat-graphic": flat_graphic,
    "fuzz": fuzz,
    "distill-ablation": distill_ablation,
    "setup": setup,
    "installs": installs,
    "serve-fps": serve_fps,
    "serve-soak": serve_soak,
    "teachers": teachers,
    "finetune-own-faces": finetune_own_faces,
    "vgg-macs": vgg_macs,
    "pi-estimate": pi_estimate,
    "pi-emulation": pi_emulation,
    "web-load": web_load,
    "model-summary": model_summary,
    "soak": soak,
    "detector-parity": detector_parity,
    "detector-speed": detector_speed,
    "benchmark-backends": benchmark_backends,
    **BATCH_RENDERERS,  # batch-scaling, batch-ray, batch-cluster, batch-estimate, batch-demo
}


def model_card() -> str:
    """The shipped model's card, from committed measurements only."""
    from training.card import render as render_card

    meta = json.loads(SHIPPED_META.read_text())

    def optional(name: str) -> dict[str, Any] | None:
        return load(name) if (MEASURED / name).is_file() else None

    trials = [json.loads(path.read_text()) for path in sorted(MEASURED.glob("trial_*.json"))]
    distillation = (optional("distill_val.json"), optional("distill_web.json"), optional("teachers.json"),
                    optional("size_tradeoff_distilled.json"))
    return render_card(meta, optional("size_tradeoff.json"), optional("face_region.json"),
                       meta.get("training_curve") or [], meta.get("reproduce", ""), trials, distillation)


def render(text: str, path: Path) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in RENDERERS:
            raise SystemExit(f"error: {path}: unknown measured block {name!r}")
        return match.group(1) + RENDERERS[name]() + match.group(4)

    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale blocks, change nothing")
    args = parser.parse_args(argv)
    stale = []
    for path in [*DOCS, MODEL_CARD]:
        text = path.read_text() if path.is_file() else ""
        new = model_card() if path == MODEL_CARD else render(text, path)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("error: generated blocks differ from their JSON in: " + ", ".join(
            str(p.relative_to(REPO_ROOT)) for p in stale) + " (run python scripts/render_docs.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
