"""Write a model card from the numbers the exporter measured: MODEL_card.md beside the model
unless --out says otherwise (the shipped model's card is models/MODEL_CARD.md).

Every figure in the card comes from a JSON file made by a command (the export metadata, the size
trade-off, the masked-face experiment), so the card never carries a number nobody measured, and it
says only what is true of the data (no age tables for data without ages).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from realtime.errors import UserError
from realtime.files import Output, check_outputs, check_writable, write_text_atomic
from realtime.machine import describe_cpu

from .history import read_history

RACES = ("White", "Black", "Asian", "Indian", "Others")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True,
                   help="exported model (.tflite); its metadata .json sits beside it")
    p.add_argument("--tradeoff", type=Path, help="JSON from scripts/size_tradeoff.py")
    p.add_argument("--region-experiment", type=Path, help="JSON of the full vs upper-half experiment")
    p.add_argument("--history", type=Path, help="history.csv of the training run (default: the training "
                   "curve in the model's metadata, if any)")
    p.add_argument("--reproduce", help="the command(s) that reproduce the model (default: the one in the "
                   "model's metadata)")
    p.add_argument("--out", type=Path, help="card to write (default: MODEL_card.md beside the model)")
    p.add_argument("--force", action="store_true", help="replace an existing card")


def default_out(model: Path) -> Path:
    return model.with_name(model.stem + "_card.md")


def run(args: argparse.Namespace) -> int:
    meta_path = args.model.with_suffix(".json")
    if not meta_path.is_file():
        raise UserError(f"metadata not found: {meta_path}")
    out = args.out or default_out(args.model)
    check_outputs([Output("--out", out)],
                  [f for f in (args.model, meta_path, args.tradeoff, args.region_experiment, args.history) if f])
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; choose another --out, or add --force to replace it")
    check_writable(out)
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("metrics"), dict):
            raise ValueError("no metrics in it: not written by `python -m training export`")
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{meta_path}: {exc}") from exc
    tradeoff = _load(args.tradeoff, "--tradeoff")
    region = _load(args.region_experiment, "--region-experiment")
    history = _history(args.history) if args.history else meta.get("training_curve") or []
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise UserError(f"{meta_path}: training_curve is not a list of epochs; give --history RUN/history.csv")
    try:
        text = render(meta, tradeoff, region, history, args.reproduce or meta.get("reproduce", ""))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        named = [str(meta_path), *(str(p) for p in (args.tradeoff, args.region_experiment, args.history) if p)]
        raise UserError(f"cannot write the card: a value in {' or '.join(named)} is missing or of the wrong type "
                        f"({exc.__class__.__name__}: {exc}); export the model again, or check the file you "
                        "edited") from exc
    write_text_atomic(out, text)
    return 0


def _load(path: Path | None, option: str) -> dict | None:
    if path is None:
        return None
    if not path.is_file():
        raise UserError(f"{option} {path}: not found")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{option} {path} is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{option} {path} is not a JSON object")
    return data


def _history(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"--history {path}: not found")
    try:
        return read_history(path)
    except ValueError as exc:
        raise UserError(f"--history {path} is not a training history.csv ({exc})") from exc


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _aggregate(rows: list[dict], key: str) -> dict[str, tuple[int, float]]:
    acc: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for r in rows:
        cell = acc[r[key]]
        cell[0] += r["n"]
        cell[1] += r["n"] * r["accuracy"]
    return {k: (int(n), s / n) for k, (n, s) in acc.items() if n}


def group_tables(rows: list[dict]) -> str:
    """Accuracy by age band x race (both genders) and by gender x age band; only rows with a
    known age band (data without ages has no by-age tables)."""
    rows = [r for r in rows if r.get("age_band") not in (None, "", "unknown")]
    if not rows:
        return "No ages in this data: no by-age tables."
    cells: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for r in rows:
        c = cells[(r["age_band"], r["race"])]
        c[0] += r["n"]
        c[1] += r["n"] * r["accuracy"]
    bands = sorted({r["age_band"] for r in rows}, key=lambda b: int(b.split("-")[0].rstrip("+")))
    races = [x for x in RACES if any(r["race"] == x for r in rows)] or sorted({r["race"] for r in rows})
    out = ["| age band | " + " | ".join(races) + " | all |", "|---" * (len(races) + 2) + "|"]
    for band in bands:
        line = [band]
        for race in races:
            n, s = cells.get((band, race), (0, 0.0))
            line.append(f"{100 * s / n:.1f} % ({int(n)})" if n else "–")
        n = sum(cells[(band, r)][0] for r in races if (band, r) in cells)
        s = sum(cells[(band, r)][1] for r in races if (band, r) in cells)
        line.append(f"{100 * s / n:.1f} % ({int(n)})" if n else "–")
        out.append("| " + " | ".join(line) + " |")
    by_gender = defaultdict(list)
    for r in rows:
        by_gender[r["gender"]].append(r)
    out += ["", "| gender | " + " | ".join(bands) + " |", "|---" * (len(bands) + 1) + "|"]
    for gender, grows in sorted(by_gender.items()):
        agg = _aggregate(grows, "age_band")
        out.append(f"| {gender} | " + " | ".join(
            f"{100 * agg[b][1]:.1f} % ({agg[b][0]})" if b in agg else "–" for b in bands) + " |")
    return "\n".join(out)


def teachers_section(dist: dict | None) -> list[str]:
    """What the model learned from: the teachers (``training teach``) and the label cleaning."""
    if not dist:
        return []
    from .teachers import TEACHER_INFO

    used = dist.get("teachers", [])
    files = dist.get("teacher_files", {})
    lines = ["", "## Teachers", "",
             "The student (this VGG16) learned from face-pretrained models that ship inside npm and PyPI "
             "packages, run once over every training crop (`python -m training teach`), as well as from the labels. "
             f"Gender target: {dist['teacher_weight']:.2f} × the mean of the teachers' logits + "
             f"{1 - dist['teacher_weight']:.2f} × the label; the student saw masked, blurred, small, turned and "
             "re-framed versions of each face while its targets came from the clean crop.", "",
             "| teacher | package and files | licence | gives the student | ms per face (teach) |",
             "|---|---|---|---|---|"]
    for name, (package, licence, gives) in TEACHER_INFO.items():
        role = gives if name in used else ("label cleaning only" if name in dist.get("cleaning_teachers", [])
                                           else "not used")
        if name == "faceres" and name not in used and dist.get("feature_weight"):
            role = "its face feature (cosine loss) and age; label cleaning"
        ms = (files.get(name) or {}).get("ms_per_face")
        lines.append(f"| {name} | {package} | {licence} | {role} | {'–' if ms is None else f'{ms:.1f}'} |")
    changed = dist.get("labels_changed", {})
    flagged = dist.get("flagged", {})
    lines += ["", f"**Labels changed.** Where {' and '.join(dist.get('cleaning_teachers', []))} both contradict the "
              f"label with p ≥ {dist.get('clean_threshold')}, the training label was flipped: "
              f"{changed.get('train', 0)} train and {changed.get('val', 0)} validation labels. The test split kept "
              f"its labels ({flagged.get('test', 0)} of its faces are flagged by the same rule; see the second "
              "line above). AgeGenderNet was trained partly on UTKFace, so its agreement with a UTKFace label "
              "was not used as evidence."]
    return lines


def _cpu(cpu: dict | str) -> str:
    """A measurement's machine: ``cpu_info()`` (described) or, in older JSON, its name only."""
    return describe_cpu(cpu) if isinstance(cpu, dict) else cpu


def _gain(g: dict | None) -> str:
    return "–" if not g else (f"{g['gain'] * 100:+.2f} ({g['ci95'][0] * 100:+.2f} to "
                              f"{g['ci95'][1] * 100:+.2f})")


def beats_baseline(val_gain: dict | None, web_gain: dict | None) -> bool:
    """The ship rule for a candidate that misses its targets: better than the baseline beyond the
    noise on one validation set (the 95 % interval of the gain above 0) and not worse beyond the
    noise on the other (its interval reaches 0)."""
    if not val_gain or not web_gain:
        return False
    (v_lo, v_hi), (w_lo, w_hi) = val_gain["ci95"], web_gain["ci95"]
    return (v_lo > 0 and w_hi >= 0) or (w_lo > 0 and v_hi >= 0)


def ablation_rows(val: dict, web: dict | None) -> list[dict]:
    """``scripts/compare_on_val.py --vs first`` rows joined with ``scripts/score_folder.py`` rows
    (same model by SHA-256); the first row is the baseline."""
    by_sha = {r["sha256"]: r for r in (web or {}).get("rows", [])}
    return [{"val": r, "web": by_sha.get(r["sha256"])} for r in val["models"]]


def ablation_table(val: dict, web: dict | None) -> list[str]:
    """Which lever moved what: each candidate against the baseline on both validation sets."""
    rows = ablation_rows(val, web)
    base = rows[0]["val"]
    lines = [f"Int8, each model with its own metadata; gains in points against `{base['model']}` on the same "
             "faces, with a paired-bootstrap 95 % interval. UTKFace validation: `scripts/compare_on_val.py --vs "
             f"first` on {describe_cpu(val['cpu'])}, the {val['split']} split ({val['n']} faces), score = mean of "
             "the plain and synthetic-mask balanced accuracy. Web portraits: `scripts/score_folder.py`, "
             f"{web['data'] if web else '–'} (not UTKFace, never trained on; detector and crop as in use), balanced "
             "accuracy and the female − male recall gap.", "",
             "| candidate: what changed | px | UTKFace val score | vs baseline | web portraits | vs baseline "
             "| F − M gap | ms / face |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v, w = r["val"], r["web"]
        gap = f"{w['gap_female_minus_male'] * 100:+.1f}" if w else "–"
        lines.append(f"| {v.get('label', v['model'])} | {v['input_size']} | {v['score']:.4f} | "
                     f"{_gain(v.get('vs_first'))} | {pct(w['balanced_accuracy']) if w else '–'} | "
                     f"{_gain(w.get('vs_first')) if w else '–'} | "
                     f"{gap} | "
                     f"{v['ms_per_face']:.2f} ({v['ms_vs_first']:.2f}x) |")
    return lines


def ship_verdict(val: dict, web: dict | None, max_cost: float = 2.0) -> str:
    """The ship decision against the baseline, from the ablation's measurements."""
    rows = ablation_rows(val, web)
    base = rows[0]["val"]
    fit = [r for r in rows[1:] if r["val"]["ms_vs_first"] <= max_cost]
    winners = [r for r in fit if beats_baseline(r["val"].get("vs_first"), (r["web"] or {}).get("vs_first"))]
    best = max(fit, key=lambda r: r["val"]["score"], default=None)
    if winners:
        top = max(winners, key=lambda r: r["val"]["score"])["val"]
        return f"**Ship decision:** {top.get('label', top['model'])} beats `{base['model']}` beyond the noise."
    text = (f"**Ship decision: `{base['model']}` stays.** No candidate within {max_cost:g}x its per-face cost "
            "beats it beyond the noise on one validation set without losing beyond the noise on the other")
    if best:
        bv = best["val"]
        text += (f" (best UTKFace validation score: {bv.get('label', bv['model'])}, "
                 f"{_gain(bv.get('vs_first'))} points)")
    return text + "."


def distillation_section(val: dict | None, web: dict | None, teachers: dict | None,
                         sizes: dict | None) -> list[str]:
    """Model v3 by distillation from face-pretrained teachers: the teachers, the labels they
    changed, the ablation against the shipped model, the input-size sweep and the decision."""
    if not val:
        return []
    from .teachers import TEACHER_INFO

    lines = ["", "## Distillation from face-pretrained teachers (model v3 candidates)", "",
             "Teachers that ship inside npm and PyPI packages were run once over every prepared crop "
             "(`python -m training teach`); candidates were then fine-tuned from this model on their soft "
             "gender targets mixed with the labels, faceres' face feature (a training-only head, dropped at "
             "export) and their ages (`train --teacher-cache auto`). Each was exported to int8 like this "
             "model and scored on two validation sets; the test split chose nothing. "
             "Reproduce the candidates and every table below: `bash scripts/train_distilled_candidates.sh "
             "DATA_DIR WEB_DIR`.", "",
             "### Teachers", "",
             "| teacher | package and files | licence | what the student takes from it | UTKFace val | web portraits "
             "| ms / face (teach) |", "|---|---|---|---|---|---|---|"]
    t_rows = (teachers or {}).get("val", {}).get("rows", {})
    w_rows = (teachers or {}).get("web", {}).get("rows", {})
    teach = (teachers or {}).get("teach", {})
    for name, (package, licence, gives) in TEACHER_INFO.items():
        ms = (teach.get(name) or {}).get("ms_per_face")
        lines.append(f"| {name} | {package} | {licence} | {gives} "
                     f"| {pct((t_rows.get(name) or {}).get('balanced_accuracy'))} "
                     f"| {pct((w_rows.get(name) or {}).get('balanced_accuracy'))} "
                     f"| {'–' if ms is None else f'{ms:.1f}'} |")
    mean = f"mean({'+'.join(n for n in TEACHER_INFO if n != 'shipped')})"
    if mean in t_rows:
        lines += ["", f"Balanced accuracy at 0.5 (`scripts/teacher_table.py`). The mean of the three face teachers' "
                  f"logits ({mean}) scores {pct(t_rows[mean]['balanced_accuracy'])} on UTKFace validation and "
                  f"{pct((w_rows.get(mean) or {}).get('balanced_accuracy'))} on the web portraits: the knowledge "
                  "a student could take."]
    clean = (teachers or {}).get("label_cleaning")
    if clean:
        lines += ["", f"**Labels changed.** Where {' and '.join(clean['teachers'])} both contradict the UTKFace "
                  f"label with p ≥ {clean['threshold']}, distillation runs flip it (`--clean-labels flip`): "
                  f"{clean['changed']['train']} of {clean['faces']['train']} train labels "
                  f"({clean['changed_adults']['train']} of them adults) and {clean['changed']['val']} of "
                  f"{clean['faces']['val']} validation labels ({clean['changed_adults']['val']} adults). The test "
                  "split keeps its labels. AgeGenderNet was trained partly on UTKFace, so its agreement with a "
                  "UTKFace label is not evidence; `teach` draws the 48 most confident disagreements on "
                  "`CACHE/teachers/flagged.jpg` for a person to check. The scores below use the labels as given."]
    lines += ["", "### Which lever moved what", "", *ablation_table(val, web)]
    if sizes:
        lines += ["", "### Input size with distillation", "",
                  f"`scripts/size_tradeoff.py` on {_cpu(sizes['cpu'])}, LiteRT int8, {sizes['threads']} "
                  f"threads, batch 1 (the sizes take turns over the timing rounds); accuracy on the "
                  f"{sizes['split']} split at threshold 0.5. A size costing over 2x the 64 px model per face "
                  "would be ruled out without training; a size listed as cost only was timed, not trained.", "",
                  "| input px | ms / face | x 64 px | val accuracy | val accuracy, masked | checkpoint |",
                  "|---|---|---|---|---|---|"]
        for r in sizes["rows"]:
            if not r.get("cost_only"):
                acc = pct(r.get("val_accuracy"))
            else:
                acc = "ruled out by its cost" if r["cost_ratio"] > 2 else "cost only: within 2x, not trained"
            lines.append(f"| {r['size']} | {r['ms_per_face']} | {r['cost_ratio']:.2f} | {acc} | "
                         f"{pct(r.get('val_masked_accuracy'))} | `{r['checkpoint']}` |")
        if sizes.get("note"):
            lines += ["", sizes["note"]]
    lines += ["", ship_verdict(val, web)]
    return lines


def threshold_note(m: dict) -> str:
    """How the threshold was set, as the exporter recorded it (older metadata: chosen on validation)."""
    rule = (m.get("validation_choices") or {}).get("threshold_rule", "")
    if rule.startswith("0.5"):
        return "kept at " + rule.split(":", 1)[1].strip().replace("validation has", "the validation split has", 1)
    return "chosen on the validation split to equalise female and male recall"


def v2_sections(m: dict) -> list[str]:
    """Apparent age and the child gate, framing robustness, calibration and flip averaging (models
    exported with these measurements)."""
    lines: list[str] = []
    age = m.get("test_age")
    if age:
        kept = age.get("gender_on_adults_not_gated") or {}
        lines += ["", "### Apparent age and the child gate", "",
                  f"Apparent-age error on the test split (all ages, n = {age['n']}): MAE "
                  f"{age['mae']:.1f} years. Faces that look younger than {age['child_age']:g} are labelled "
                  "`uncertain` (reason `child`): "
                  f"{pct(age.get('children_gated'))} of the {age['children']} children are gated, and "
                  f"{pct(age.get('adults_gated'))} of the {age['adults']} people aged ≥ {age['child_age']:g} "
                  "are gated by mistake. Gender accuracy on the adults that pass the gate: "
                  f"{pct(kept.get('accuracy'))} (n = {kept.get('n', 0)}).", "",
                  "| age band | " + " | ".join(r["age_band"] for r in age["mae_by_band"]) + " |",
                  "|---" * (len(age["mae_by_band"]) + 1) + "|",
                  "| MAE (years) | " + " | ".join(f"{r['mae']:.1f}" for r in age["mae_by_band"]) + " |",
                  "| n | " + " | ".join(str(r["n"]) for r in age["mae_by_band"]) + " |"]
    framing = m.get("test_framing")
    if framing:
        lines += ["", "### Framing: looser and tighter crops than the runtime's", "",
                  "| crop | accuracy | female recall | male recall |", "|---|---|---|---|"]
        lines += [f"| {r['framing']} | {pct(r['accuracy'])} | {pct(r['recall_female'])} | {pct(r['recall_male'])} |"
                  for r in framing]
    choices = m.get("validation_choices")
    if choices:
        lines += ["", "### Chosen on the validation split", "",
                  *flip_lines(choices),
                  f"- Calibration: temperature {choices['temperature']:.3f}; expected calibration error on "
                  f"validation {choices['val_ece_before']:.4f} before, {choices['val_ece_after']:.4f} after.",
                  "- Uncertain band: the narrowest around the threshold holding "
                  f"{pct(choices['uncertain_share_target'])} of validation faces ({pct(choices['val_uncertain'])} "
                  "there)."]
    return lines


def flip_lines(choices: dict) -> list[str]:
    """What the export chose about flip averaging, and what it costs per face."""
    on = "on" if choices["flip_average"] else "off"
    band = choices.get("flip_band")
    if "ms_per_face_flip_every_face" not in choices:  # exports before the flip band
        return [f"- Flip averaging (each face and its mirror image): {on}; validation accuracy "
                f"{pct(choices['val_accuracy_flip_on'])} with it, {pct(choices['val_accuracy_flip_off'])} without; "
                f"{choices['ms_per_face_flip_on']:.2f} vs {choices['ms_per_face_flip_off']:.2f} ms per face "
                "(in video it is paid once per track, not per frame)."]
    scope = ("every face" if band is None else
             f"only the faces whose plain p_female lies in [{band[0]:.3f}, {band[1]:.3f}), the "
             f"{pct(choices['val_mirrored'])} of validation faces nearest the threshold, where the mirror "
             "can change the label")
    return [f"- Flip averaging (each face and its mirror image): {on}, for {scope}. Validation accuracy "
            f"{pct(choices['val_accuracy_flip_on'])} with it, {pct(choices['val_accuracy_flip_off'])} without, "
            f"{pct(choices['val_accuracy_flip_every_face'])} mirroring every face. Milliseconds per face (batch 1, "
            f"mean over {choices.get('ms_timed_faces', 200)} validation faces): "
            f"{choices['ms_per_face_flip_off']:.2f} without, {choices['ms_per_face_flip_on']:.2f} with "
            f"({choices['ms_per_face_flip_on'] / choices['ms_per_face_flip_off']:.2f}x), "
            f"{choices['ms_per_face_flip_every_face']:.2f} mirroring every face; in video a track is classified "
            "once, not every frame."]


def trial_sections(trials: list[dict]) -> list[str]:
    """Candidates scored against the shipped model on validation and not shipped, and why."""
    lines: list[str] = []
    for t in trials:
        lines += ["", f"## Tried, not shipped: {t.get('title', 'a candidate model')}", "", t.get("note", ""), "",
                  f"`scripts/compare_on_val.py` on {describe_cpu(t['cpu'])}, the {t['split']} split ({t['n']} "
                  "faces), int8, each model with its own metadata (threshold, calibration, flip averaging). "
                  "Score: mean of the plain and masked balanced accuracy; gain: against the row above on the same "
                  "faces, with a paired-bootstrap 95 % interval.", "",
                  "| model | val | val, masked | score | gain (95 % interval) | ms / face |",
                  "|---|---|---|---|---|---|"]
        for r in t["models"]:
            g = r.get("vs_previous")
            gain = f"{_gain(g)} points" if g else "-"
            lines.append(f"| `{r['model']}` | {pct(r['val']['balanced_accuracy'])} "
                         f"| {pct(r['val_masked']['balanced_accuracy'])} | {r['score']:.4f} | {gain} "
                         f"| {r['ms_per_face']:.2f} |")
    return lines


def render(meta: dict, tradeoff: dict | None, region: dict | None, history: list[dict[str, str]],
           reproduce: str, trials: list[dict] | None = None, distillation: tuple | None = None) -> str:
    """The card's Markdown; ``history`` holds the training curve's rows (history.csv as dicts);
    ``trials``: ``scripts/compare_on_val.py`` reports of candidates that were not shipped;
    ``distillation``: (ablation on validation, on the web portraits, the teacher table, the size
    sweep), see :func:`distillation_section`."""
    m = meta["metrics"]
    test, masked = m["test"], m["test_masked"]
    child_key = next((k for k in m if k.startswith("test_children_under_")), None)
    child = m.get(child_key) if child_key else None
    sizes = meta.get("split_sizes", {})
    gap = abs(test["recall_female"] - test["recall_male"]) * 100
    data = meta.get("data") or {"name": "UTKFace", "licence": "UTKFace: non-commercial research only"}
    utk = data["name"] == "UTKFace"
    has_ages = data.get("has_ages", True)
    data_lines = ([f"- {meta['training_data']}. UTKFace: 23,704 aligned face photos (non-commercial research "
                   "licence; the images' copyright stays with their owners), labels with ~3-5 % noise."]
                  if utk else
                  [f"- **{data['name']}**, given by the user: {data.get('images', '?')} images "
                   f"({', '.join(f'{n} {k}' for k, n in (data.get('by_label') or {}).items())}); licence: "
                   f"{data['licence']}. Sources: {', '.join(data.get('sources') or []) or 'not recorded'}."])
    use_limit = ("Because the training data is UTKFace, the model is for non-commercial research only."
                 if utk else f"The data's licence ({data['licence']}) decides what the model may be used for.")
    lines = [
        f"# Model card: {Path(meta['model']).stem}",
        "",
        "_Generated by `python -m training card` from the exporter's measurements "
        f"(`{Path(meta['model']).with_suffix('.json').name}`); do not edit numbers by hand._",
        "",
        "## What it is",
        f"- **Task**: estimates *apparent binary gender* (`female` / `male`) from a face crop, with "
        f"`uncertain` when `p_female` lies in {meta['uncertain_band']}. It is wrong for some people, "
        "says nothing about how anyone identifies, and must not be used to make decisions about people.",
        f"- **Architecture**: {meta['architecture']}. Input {meta['input_size']} × {meta['input_size']} px "
        f"{meta['colour_order']} crops ({meta['input_scaling']}), crop margin {meta['crop_margin']} around the "
        f"BlazeFace box (`realtime/crop.py`), face region `{meta.get('face_region', 'full')}`.",
        f"- **Format**: full-integer int8 TFLite, {meta['size_bytes'] / 1e6:.1f} MB; decision threshold "
        f"{meta['threshold']} ({threshold_note(m)}).",
        f"- **Training**: {meta.get('training') or 'see below'}",
        f"- **Exported** {meta['exported']} from commit `{meta['training_commit']}`.",
        "",
        "## Intended use",
        "A demo and research tool for real-time video annotation (webcam overlay, batch video/image "
        "annotation, Raspberry Pi). Not for identification, surveillance, access control, or any decision "
        f"about a person. {use_limit}",
        "",
        "## Data",
        *data_lines,
        "- Crops are made by the runtime's own detector and crop code (`python -m training prepare`), "
        "so training and use see the same framing.",
        ("- Fixed seeded split stratified by gender × age band × race; byte-identical duplicates are kept "
         "on one side; duplicate groups whose labels disagree are dropped." if has_ages else
         "- Fixed seeded split stratified by gender (this data has no ages or races to stratify by)."),
        f"- Split sizes (all ages / ages ≥ 13): train {sizes.get('train')} / {sizes.get('train_age_13_plus')}, "
        f"validation {sizes.get('val')} / {sizes.get('val_age_13_plus')}, test {sizes.get('test')} / "
        f"{sizes.get('test_age_13_plus')}. Training and model selection used train and validation only; "
        "the test split was used once, for this report.",
        "",
        f"## Results on the {data['name']} test split (never used for training or selection)",
        "",
        "| faces | accuracy | balanced | female recall | male recall | uncertain | float32 accuracy |",
        "|---|---|---|---|---|---|---|",
        f"| unmasked | {pct(test['accuracy'])} | {pct(test['balanced_accuracy'])} | {pct(test['recall_female'])} "
        f"| {pct(test['recall_male'])} | {pct(test.get('uncertain'))} | {pct(test.get('float_accuracy'))} |",
        f"| synthetic masks | {pct(masked['accuracy'])} | {pct(masked['balanced_accuracy'])} "
        f"| {pct(masked['recall_female'])} | {pct(masked['recall_male'])} | {pct(masked.get('uncertain'))} "
        f"| {pct(masked.get('float_accuracy'))} |",
    ]
    if child:
        lines.append(f"| children < 13 (unmasked) | {pct(child['accuracy'])} | {pct(child['balanced_accuracy'])} "
                     f"| {pct(child['recall_female'])} | {pct(child['recall_male'])} "
                     f"| {pct(child.get('uncertain'))} | – |")
    lines += [
        "",
        (f"n = {test['n']} adults and teenagers" if has_ages else f"n = {test['n']} faces")
        + (f", {child['n']} children" if child else "") + ". "
        f"|female recall − male recall| = {gap:.1f} points. int8 agrees with float32 on "
        f"{pct(test.get('agreement_with_float'))} of unmasked test faces. Masks are synthetic (drawn masks "
        "and MaskTheFace templates placed from face landmarks), one fixed mask per test image.",
        "",
        "### By group (unmasked, accuracy and n)",
        "",
        group_tables(m["test_by_group"]),
        "",
        "### By group with synthetic masks",
        "",
        group_tables(m["test_masked_by_group"]),
    ]
    unflagged = m.get("test_without_teacher_flagged")
    if unflagged:
        lines += ["", f"**Test with teacher-flagged faces excluded** (a second line, not the headline): the "
                  f"{unflagged['excluded']} test faces whose label {unflagged['rule']} are left out: unmasked "
                  f"{pct(unflagged['test']['accuracy'])} (balanced {pct(unflagged['test']['balanced_accuracy'])}, "
                  f"n = {unflagged['test']['n']}), synthetic masks {pct(unflagged['test_masked']['accuracy'])}."]
    lines += teachers_section(meta.get("distillation"))
    lines += v2_sections(m)
    if meta.get("child_age") and not m.get("test_age"):
        lines += ["", "### Apparent age and the child gate", "",
                  f"The model keeps the apparent-age head of the model it was fine-tuned from, and with it the "
                  f"child gate (faces that look younger than {meta['child_age']:g} are labelled `uncertain`). This "
                  "data has no ages, so the head learned from the start model's own age outputs and its accuracy "
                  "was not measured here."]
    if m.get("test_by_face_px"):
        lines += ["", "### Accuracy vs face size", "",
                  "Test faces shrunk to N px wide and scaled back up (what a small, far face gives the model):", "",
                  "| face width px | " + " | ".join(str(r["face_px"]) for r in m["test_by_face_px"]) + " |",
                  "|---" * (len(m["test_by_face_px"]) + 1) + "|",
                  "| accuracy | " + " | ".join(pct(r["accuracy"]) for r in m["test_by_face_px"]) + " |"]
    if tradeoff:
        lines += ["", "## Input size: accuracy vs speed", "",
                  f"Measured by `scripts/size_tradeoff.py` on {_cpu(tradeoff['cpu'])}, LiteRT int8, "
                  f"{tradeoff['threads']} threads, batch 1, no flip averaging; accuracy on the "
                  f"{tradeoff['split']} split "
                  "(threshold 0.5), never the test split. How each checkpoint was trained is in the note below "
                  "the table.", "",
                  "| input px | ms / face | model MB | val accuracy | val accuracy, masked | checkpoint |",
                  "|---|---|---|---|---|---|"]
        for r in tradeoff["rows"]:
            lines.append(f"| {r['size']} | {r['ms_per_face']} | {r['size_mb']} | {pct(r['val_accuracy'])} "
                         f"| {pct(r['val_masked_accuracy'])} | `{r['checkpoint']}` |")
        if tradeoff.get("note"):
            lines += ["", tradeoff["note"]]
        best = max(tradeoff["rows"], key=lambda r: r["val_accuracy"] + r["val_masked_accuracy"])
        lines += ["", f"Shipped: {meta['input_size']} px. Most accurate on validation: {best['size']} px. "
                  "Cost grows with the square of the input side (`python scripts/benchmark.py --macs`)."]
    if region:
        lines += ["", "## Masked faces: whole face vs upper half only", "",
                  "Does seed 000's idea (classify only the upper half of the face, above a mask) help? "
                  + region.get("note", ""), "",
                  "| model | val accuracy | val accuracy, masked |", "|---|---|---|"]
        for r in region["rows"]:
            lines.append(f"| {r['name']} | {pct(r['val_accuracy'])} | {pct(r['val_masked_accuracy'])} |")
        full = next((r for r in region["rows"] if r.get("region") == "full"), None)
        upper = next((r for r in region["rows"] if r.get("region") == "upper"), None)
        if full and upper:
            d_plain = 100 * (upper["val_accuracy"] - full["val_accuracy"])
            d_masked = 100 * (upper["val_masked_accuracy"] - full["val_masked_accuracy"])
            verdict = "helps" if d_masked > 0 else "does not help"
            lines += ["", f"Classifying only the upper half of the face {verdict} here: {d_masked:+.1f} points "
                      f"with masks, {d_plain:+.1f} points without. The shipped model uses face region "
                      f"`{meta.get('face_region', 'full')}` (`face_region` in the metadata; the runtime applies "
                      "whichever the model was trained with)."]
    lines += distillation_section(*(distillation or (None, None, None, None)))
    lines += trial_sections(trials or [])
    if history:
        lines += ["", "## Training curve", "", "Per epoch (validation = ages ≥ 13, threshold 0.5; training "
                  "accuracy is on augmented crops):", "",
                  "| epoch | px | learning rate | loss | train acc | val acc | val acc, masked | seconds |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in history:
            lines.append(f"| {row['epoch']} | {row['size']} | {float(row['lr']):.2e} | {float(row['loss']):.4f} "
                         f"| {pct(float(row['acc']))} | {pct(float(row['val_acc']))} "
                         f"| {pct(float(row['val_masked_acc']))} | {float(row['seconds']):.0f} |")
    lines += [
        "",
        "## Known failure cases",
        "- Children under 13: much harder, close to chance for the youngest (see the table).",
        "- Profile and strongly tilted faces: UTKFace is mostly frontal; the detector may also miss them.",
        "- Small faces (< ~32 px wide) lose accuracy quickly (table above); far faces need `--detector full`.",
        "- Masks: accuracy drops with a mask; masks in training are synthetic, so real masks of unusual "
        "shape, colour or print may do worse.",
        "- Groups with little data (e.g. race `Others`, people over 60) have wider error bars; see n.",
        "- Make-up, long hair on men, short hair on women, and hats move predictions: the model learns "
        "appearance cues, not identity.",
        "",
        "## Reproduce",
        "",
        "```bash",
        reproduce or f"# exported from commit {meta.get('training_commit', '?')}: its scripts/train_shipped_model.sh "
                     "holds the recipe; README.md, Train on your own faces, for your own model",
        "```",
        "",
    ]
    return "\n".join(lines)
