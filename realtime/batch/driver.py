"""The driver: every input video through the local pool or Ray, their outputs kept, the aggregate
and the report written (:func:`run_batch`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..config import PipelineConfig
from ..errors import UserError
from ..summary import LABELS, dumps
from .inputs import JSONL_NAME, SUMMARY_NAME, THUMB_NAME, collect_inputs
from .outputs import remove_unfinished, sweep_partials, write_aggregate, write_bytes_replacing
from .pool import LocalPool, cores
from .ray_backend import import_ray, ray_init, ray_preflight, ray_shutdown, run_ray
from .signals import STOP
from .state import completed_entry, video_entry
from .task import VideoResult, VideoTask, check_pipeline

log = logging.getLogger("realtime.batch")

EXIT_SOME_FAILED = 3


def _frame_count(path: Path) -> int:
    """Frames the container says it has (0 when unknown or unreadable): the progress bar's total."""
    import cv2

    from ..native import quiet_stderr

    with quiet_stderr():  # FFmpeg's notes on damaged files; the worker reports them as one line
        cap = cv2.VideoCapture(str(path))
        try:
            return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
        finally:
            cap.release()



@dataclass
class BatchOptions:
    input: str
    output: Path
    workers: int | None = None
    ray: str | None = None
    video: bool = True
    resume: bool = False
    report: bool = True
    progress: bool = True
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # every video's (--model, --sync, ...)
    max_frames: int | None = None  # at most this many frames of each video
    shipped_model: bool = False  # no --model: each worker uses the model its installation ships (task.config_here)

    def options_record(self) -> dict[str, Any]:
        """The options as OUTPUT/summary.json records them (``model`` only when one was given)."""
        p = self.pipeline
        out: dict[str, Any] = {} if self.shipped_model else {"model": str(p.model)}
        out.update({name: getattr(p, name) for name in ("detector", "detector_backend", "min_face_score", "threads",
                                                         "mode", "classify_every_frame", "max_age_s", "blur",
                                                         "privacy", "detector_threads")})
        out["max_frames"] = self.max_frames
        return out


def run_batch(opts: BatchOptions) -> tuple[dict[str, Any], int]:
    """Annotate every input video; returns the aggregate and the exit status (0 or 3).

    A stop signal (:data:`realtime.batch.signals.STOP`) raises ``KeyboardInterrupt`` out of here, after the
    workers are stopped and reaped, the Ray runtime it started is shut down and the partial
    outputs are removed; no aggregate is written then."""
    started = time.perf_counter()
    from ..sinks import check_writable

    output = opts.output.expanduser()
    if not str(opts.output).strip():
        raise UserError("--output is empty: give a folder")
    if output.exists() and not output.is_dir():
        raise UserError(f"output {output} exists and is not a folder")
    videos = collect_inputs(opts.input, output)
    check_writable(output, is_dir=True)
    if opts.report:
        from .report import NO_PLOTS, can_plot

        if not can_plot():  # said before the work, not after hours of it
            log.warning("%s (report.html gets its tables only; --no-report for none)", NO_PLOTS)
    if opts.ray in (None, "local"):  # on a cluster, each node is checked (ray_preflight)
        check_pipeline(opts.pipeline)  # (the driver's model when none was given: the one the workers ship too)
    output.mkdir(parents=True, exist_ok=True)
    output = output.resolve()

    entries: dict[int, dict[str, Any]] = {}
    tasks = []
    for i, video in enumerate(videos):
        if opts.resume and (done := completed_entry(video, output, opts.video)) is not None:
            entries[i] = done
            continue
        sweep_partials([output / video.folder])
        tasks.append(VideoTask(i, str(video.path), video.rel, str(output / video.folder), opts.video,
                               opts.pipeline, opts.max_frames, opts.shipped_model))
    if opts.resume and entries:
        log.info("resuming: %d of %d videos are complete and skipped", len(entries), len(videos))
    # (probed before Ray starts threads: see native.quiet_stderr)
    totals = {t.index: min(_frame_count(Path(t.path)), opts.max_frames or 1 << 62) for t in tasks}
    mode = "local" if not opts.ray else "ray-local" if opts.ray == "local" else "ray"
    workers = opts.workers or cores()
    ray = import_ray() if tasks and opts.ray else None
    ray_start_s = None
    pool: LocalPool | None = None
    bar = None
    failed = 0
    finished = False
    reported: dict[int, int] = {}

    def keep(result: VideoResult) -> None:
        """A finished video's JSONL, thumbnail and summary (last: it marks the video complete)."""
        video = videos[result.index]
        folder = output / video.folder
        try:
            with STOP.deferred():  # all three or, with the summary missing, a video done again
                if result.thumbnail:
                    write_bytes_replacing(folder / THUMB_NAME, result.thumbnail)
                write_bytes_replacing(folder / JSONL_NAME, result.jsonl)
                write_bytes_replacing(folder / SUMMARY_NAME, dumps(result.summary or {}).encode("utf-8"))
        except OSError as exc:  # (write errors are UserErrors already; this is anything else)
            raise UserError(f"cannot write the outputs of {video.rel} in {folder}: "
                            f"{exc.strerror or exc}") from exc
        entries[result.index] = video_entry(video, result.status, result.error, result.summary, output,
                                       seconds=result.seconds, worker=result.worker)

    def on_result(result: VideoResult) -> None:
        nonlocal failed
        video = videos[result.index]
        if result.status == "interrupted":
            raise KeyboardInterrupt
        if result.status == "ok":
            keep(result)
        else:
            failed += 1
            log.warning("%s failed: %s", video.rel, result.error)
            entries[result.index] = video_entry(video, result.status, result.error, result.summary, output,
                                           seconds=result.seconds, worker=result.worker)
        bar.update(max(0, result.frames - reported.get(result.index, 0)))
        done = sum(1 for t in tasks if t.index in entries)
        bar.set_description(f"{done}/{len(tasks)} videos" + (f", {failed} failed" if failed else ""))

    def on_frames(index: int, n: int) -> None:
        reported[index] = reported.get(index, 0) + n
        bar.update(n)

    try:
        if ray is not None:
            t0 = time.perf_counter()
            ray_init(opts.ray, opts.workers)
            nodes = ray_preflight(ray, opts.pipeline, opts.shipped_model)
            log.debug("Ray nodes: %s", "; ".join(nodes))
            ray_start_s = round(time.perf_counter() - t0, 3)
            log.info("Ray %s: %s CPUs, %s in %.1f s", opts.ray, ray.cluster_resources().get("CPU", "?"),
                     "started" if opts.ray == "local" else "joined", ray_start_s)
        bar = tqdm(total=sum(totals.values()) or None, unit="frame", desc=f"0/{len(tasks)} videos",
                   disable=not opts.progress or not tasks, dynamic_ncols=True)
        if ray is not None:
            run_ray(ray, tasks, opts.workers if opts.ray != "local" else None, on_result)
        elif tasks:
            pool = LocalPool(min(workers, len(tasks)))
            pool.run(tasks, on_frames, on_result)
        finished = True
    except KeyboardInterrupt:
        log.debug("interrupted (%s): stopping the workers", STOP.name())
        if pool is not None:
            pool.interrupt(keep, hurry=lambda: STOP.hurry)
        raise
    finally:
        with STOP.deferred():  # the first signal is already being handled (or none came): finish cleaning up
            if bar is not None:
                bar.close()
            if pool is not None:
                pool.close()
            if ray is not None:
                ray_shutdown(ray, local=opts.ray == "local")
            if not finished:  # (after the workers are gone: none can write again)
                folders = [output / v.folder for v in videos]
                sweep_partials(folders)
                remove_unfinished([output / videos[t.index].folder for t in tasks if t.index not in entries])
    aggregate = {
        "schema": 1, "input": opts.input, "mode": mode, "workers": None if mode == "ray" else workers,
        "video": opts.video, "options": opts.options_record(),
        "totals": _totals([entries[i] for i in sorted(entries)], time.perf_counter() - started),
        "ray_start_s": ray_start_s,
        "videos": [entries[i] for i in sorted(entries)],
    }
    write_aggregate(output, aggregate)
    if opts.report:
        from .report import write_report

        write_report(output, aggregate)
    return aggregate, EXIT_SOME_FAILED if failed else 0


def _totals(entries: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    ok = [e for e in entries if e["status"] == "ok"]
    tracks = {k: sum(e["distinct_tracks"].get(k, 0) for e in ok) for k in (*LABELS, "total")}
    return {"videos": len(entries), "ok": len(ok), "failed": len(entries) - len(ok),
            "resumed": sum(1 for e in entries if e["resumed"]), "frames": sum(e["frames"] for e in ok),
            "distinct_tracks": tracks, "seconds": round(seconds, 3)}

