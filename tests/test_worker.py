"""realtime.worker and the pipeline's use of it: the display never waits for the classifier.

Fake detectors and classifiers stand in for the models, so these tests need no model files, no
display and no TensorFlow, and each runs in well under a second (the slow-classifier ones sleep).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from realtime.face_detector import Detection
from realtime.pipeline import FacePipeline
from realtime.sources import Frame
from realtime.tracker import CachePolicy, Tracker
from realtime.worker import ClassifierWorker

REPO_ROOT = Path(__file__).resolve().parent.parent
Box = tuple[int, int, int, int]
IMAGE = np.zeros((240, 320, 3), np.uint8)


# --- fakes ----------------------------------------------------------------------------------------
class ScriptedDetector:
    """Returns the boxes scripted for each call, in order (then no faces)."""

    def __init__(self, script: Sequence[Sequence[Box]]) -> None:
        self.script = list(script)
        self.calls = 0
        self.closed = False

    def detect(self, image: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        boxes = self.script[self.calls] if self.calls < len(self.script) else []
        self.calls += 1
        return [Detection(tuple(b), 0.9) for b in boxes]

    def close(self) -> None:
        self.closed = True


class FakeClassifier:
    """``predict_crops`` returns ``p`` for every crop (``p`` may be a callable of the call number),
    optionally after ``delay_s``, or after waiting for ``gate`` to be set."""

    def __init__(self, p: float | Callable[[int], float] = 0.9, delay_s: float = 0.0,
                 gate: threading.Event | None = None) -> None:
        self.p, self.delay_s, self.gate = p, delay_s, gate
        self.calls: list[int] = []  # crops per call
        self.started = threading.Event()

    def crops(self, frame_bgr: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        return np.zeros((len(boxes), 8, 8, 3), np.uint8)

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        p = self.p(len(self.calls)) if callable(self.p) else self.p
        self.calls.append(len(crops))
        return np.full(len(crops), p, np.float32)

    def predict(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """The face-attribute protocol: named outputs (this fake has only p_female)."""
        return {"p_female": self.predict_crops(crops)}

    def label_for(self, p: float) -> str:
        return "female" if p >= 0.5 else "male"

    def decide(self, p: float, apparent_age: float | None = None) -> tuple[str, str | None]:
        return self.label_for(p), None


def frames(n: int, fps: float = 10.0, start: int = 0) -> list[Frame]:
    return [Frame(i, i / fps, IMAGE) for i in range(start, start + n)]


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def poll_until(worker: ClassifierWorker, n: int, timeout_s: float = 5.0) -> list:
    got: list = []
    wait_for(lambda: bool(got.extend(worker.poll())) or len(got) >= n, timeout_s)
    return got


# --- the worker on its own ------------------------------------------------------------------------
def test_results_arrive() -> None:
    worker = ClassifierWorker(lambda crops: {"p_female": crops.reshape(len(crops), -1).mean(axis=1) / 255.0})
    try:
        crops = np.stack([np.full((4, 4, 3), 51, np.uint8), np.full((4, 4, 3), 204, np.uint8)])
        assert worker.submit([7, 8], crops, 1.5)
        results = poll_until(worker, 2)
        assert [(r.track_id, round(r.values["p_female"], 3), r.frame_time_s) for r in results] == [
            (7, 0.2, 1.5), (8, 0.8, 1.5)]
        assert all(r.latency_s >= 0 for r in results)
        assert wait_for(lambda: not worker.busy) and worker.completed == 1
        assert worker.poll() == []  # each result is delivered once
    finally:
        assert worker.close()


def test_submit_never_blocks_while_the_worker_is_busy() -> None:
    gate = threading.Event()
    fake = FakeClassifier(0.7, gate=gate)
    worker = ClassifierWorker(fake.predict)
    try:
        crops = np.zeros((1, 8, 8, 3), np.uint8)
        assert worker.submit([1], crops, 0.0)
        assert worker.busy  # from the moment it is accepted, not only once the thread picks it up
        assert fake.started.wait(5)
        t0 = time.perf_counter()
        refused = [worker.submit([2], crops, 0.1) for _ in range(100)]
        assert not any(refused) and time.perf_counter() - t0 < 0.5  # no queue grows, nothing waits
        assert worker.poll() == []
        gate.set()
        (result,) = poll_until(worker, 1)
        assert result.track_id == 1 and abs(result.values["p_female"] - 0.7) < 1e-6
        assert wait_for(lambda: not worker.busy)
        assert worker.submit([2], crops, 0.2)  # free again
        assert [r.track_id for r in poll_until(worker, 1)] == [2]
        assert fake.calls == [1, 1]
    finally:
        gate.set()
        worker.close()


def test_worker_error_surfaces_through_poll() -> None:
    def broken(crops: np.ndarray) -> np.ndarray:
        raise RuntimeError("inference failed: boom")

    worker = ClassifierWorker(broken)
    try:
        assert worker.submit([1], np.zeros((1, 8, 8, 3), np.uint8), 0.0)
        assert wait_for(lambda: worker.error is not None)
        with pytest.raises(RuntimeError, match="boom"):
            worker.poll()
        with pytest.raises(RuntimeError, match="boom"):  # and again: it is not lost after one poll
            worker.poll()
        assert not worker.submit([2], np.zeros((1, 8, 8, 3), np.uint8), 0.1)  # no job for a dead thread
    finally:
        worker.close()


def test_close_returns_within_its_timeout_while_the_classifier_is_slow() -> None:
    fake = FakeClassifier(delay_s=2.0)
    worker = ClassifierWorker(fake.predict)
    assert worker.submit([1], np.zeros((1, 8, 8, 3), np.uint8), 0.0)
    assert fake.started.wait(5)
    t0 = time.perf_counter()
    assert worker.close(timeout_s=0.3) is False  # still inside predict: reported, not waited for
    assert time.perf_counter() - t0 < 1.0
    assert not worker.submit([2], np.zeros((1, 8, 8, 3), np.uint8), 0.1)  # closed


def test_idle_worker_closes_at_once() -> None:
    worker = ClassifierWorker(FakeClassifier().predict)
    t0 = time.perf_counter()
    assert worker.close(timeout_s=2.0) is True
    assert time.perf_counter() - t0 < 1.0


def test_process_exits_while_the_classifier_is_still_busy() -> None:
    """A worker thread stuck in a slow classifier must not keep the process alive."""
    script = textwrap.dedent("""
        import threading, time
        import numpy as np
        from realtime.worker import ClassifierWorker
        started = threading.Event()
        def slow(crops):
            started.set()
            time.sleep(30)
            return np.zeros(len(crops))
        worker = ClassifierWorker(slow)
        assert worker.submit([1], np.zeros((1, 8, 8, 3), np.uint8), 0.0)
        assert started.wait(10)
        print("closed", worker.close(timeout_s=0.2))
    """)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=25, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "closed False"
    assert time.perf_counter() - t0 < 20  # far less than the 30 s the classifier would take


# --- the pipeline with the worker ---------------------------------------------------------------
def test_async_pipeline_never_waits_for_a_slow_classifier() -> None:
    fake = FakeClassifier(0.8, delay_s=0.4)
    detector = ScriptedDetector([[(40, 40, 80, 80)]] * 200)
    pipeline = FacePipeline(detector, fake, asynchronous=True)
    try:
        worst, labels = 0.0, []
        for frame in frames(15, fps=30):
            t0 = time.perf_counter()
            (face,) = pipeline.process(frame)
            worst = max(worst, time.perf_counter() - t0)
            labels.append(face.label)
        assert worst < 0.2  # each frame returns long before the 0.4 s classification
        assert labels[0] is None  # first frames are shown before any result exists
        # The result arrives later, and is picked up by a later frame.
        assert wait_for(lambda: not pipeline.worker.busy)
        (face,) = pipeline.process(frames(1, fps=30, start=15)[0])
        assert face.label == "female" and abs(face.p_female - 0.8) < 1e-6
        assert fake.calls == [1]  # the track was pending: never submitted twice
    finally:
        t0 = time.perf_counter()
        pipeline.close()
        assert time.perf_counter() - t0 < 2.5 and detector.closed


def test_result_for_a_track_that_disappeared_is_dropped_and_new_faces_still_get_classified() -> None:
    gate = threading.Event()
    fake = FakeClassifier(0.9, gate=gate)
    a, b = (20, 20, 60, 60), (200, 100, 70, 70)
    tracker = Tracker(max_misses=2)
    detector = ScriptedDetector([[a]] + [[]] * 4 + [[b]] * 50)
    pipeline = FacePipeline(detector, fake, asynchronous=True, tracker=tracker)
    try:
        clip = frames(60)
        (face_a,) = pipeline.process(clip[0])
        assert tracker.tracks[face_a.track_id].pending
        for frame in clip[1:5]:
            assert pipeline.process(frame) == []
        assert face_a.track_id not in tracker.tracks  # gone while its classification was in flight
        gate.set()
        assert wait_for(lambda: not pipeline.worker.busy)
        (face_b,) = pipeline.process(clip[5])  # polls A's result: dropped without error
        assert face_b.track_id != face_a.track_id and face_b.label is None
        track_b = tracker.tracks[face_b.track_id]
        assert track_b.pending  # B was submitted at once: no stale pending flag blocks the worker
        assert wait_for(lambda: not pipeline.worker.busy)
        (face_b,) = pipeline.process(clip[6])
        assert face_b.label == "female" and not track_b.pending
        assert fake.calls == [1, 1]
    finally:
        gate.set()
        pipeline.close()


def test_worker_error_stops_the_pipeline() -> None:
    class Broken(FakeClassifier):
        def predict_crops(self, crops: np.ndarray) -> np.ndarray:
            raise RuntimeError("classifier crashed")

        def predict(self, crops: np.ndarray) -> dict[str, np.ndarray]:
            raise RuntimeError("classifier crashed")

    pipeline = FacePipeline(ScriptedDetector([[(40, 40, 80, 80)]] * 50), Broken(), asynchronous=True)
    try:
        pipeline.process(frames(1)[0])
        assert wait_for(lambda: pipeline.worker.error is not None)
        with pytest.raises(RuntimeError, match="classifier crashed"):
            pipeline.process(frames(1, start=1)[0])
    finally:
        pipeline.close()


# --- what gets (re-)classified: CachePolicy through the pipeline ----------------------------------
def run_sync(script: Sequence[Sequence[Box]], policy: CachePolicy, fps: float = 10.0,
             p: float | Callable[[int], float] = 0.9) -> tuple[FakeClassifier, list, FacePipeline]:
    fake = FakeClassifier(p)
    pipeline = FacePipeline(ScriptedDetector(script), fake, policy=policy)
    out = [pipeline.process(frame) for frame in frames(len(script), fps=fps)]
    pipeline.close()
    return fake, out, pipeline


def test_cached_track_is_classified_once_while_fresh() -> None:
    fake, out, pipeline = run_sync([[(40, 40, 80, 80)]] * 10, CachePolicy(max_age_s=5.0))
    assert fake.calls == [1]  # new track: classified; then served from the cache
    assert all(face.label == "female" for (face,) in out)
    assert pipeline.timing.classified == 1 and pipeline.timing.faces == 10


def test_every_frame_classifies_every_face_on_every_frame() -> None:
    script = [[(40, 40, 80, 80), (200, 60, 70, 70)]] * 6
    fake, _, pipeline = run_sync(script, CachePolicy(every_frame=True))
    assert fake.calls == [2] * 6 and pipeline.timing.classified == 12


def test_stale_result_is_renewed_and_smoothed_into_the_track() -> None:
    # 10 fps, max age 0.5 s: results at t = 0.0, 0.5, 1.0; the model's answer changes each time.
    answers = [0.9, 0.1, 0.1]
    fake, out, pipeline = run_sync([[(40, 40, 80, 80)]] * 11, CachePolicy(max_age_s=0.5),
                                   p=answers.__getitem__)
    assert fake.calls == [1, 1, 1]
    track = next(iter(pipeline.tracker.tracks.values()))
    assert track.classified_at == pytest.approx(1.0) and track.n_results == 3
    p = [face.p_female for (face,) in out]
    assert p[0] == pytest.approx(0.9) and p[4] == pytest.approx(0.9)  # cached between renewals
    assert p[5] == pytest.approx(0.5)  # newer result replaces the smoothed value: EMA 0.5*0.1 + 0.5*0.9
    assert p[10] == pytest.approx(0.3) and out[10][0].label == "male"


def test_grown_face_is_reclassified() -> None:
    boxes = [(100, 100, 40, 40)] * 3 + [(100, 100, 44, 44)] + [(95, 95, 52, 52)] * 3  # area 1600 -> 2704
    fake, _, _ = run_sync([[b] for b in boxes], CachePolicy(max_age_s=60.0, grow_ratio=1.5))
    assert fake.calls == [1, 1]  # new, then grown by more than 1.5x in area (not for 1.21x)


@pytest.mark.parametrize(("case", "expected"), [
    ("new", True), ("fresh", False), ("stale", True), ("grown", True), ("every_frame", True),
    ("pending", False), ("pending_every_frame", False)])
def test_cache_policy(case: str, expected: bool) -> None:
    policy = CachePolicy(every_frame=case.endswith("every_frame"), max_age_s=1.0, grow_ratio=1.5)
    tracker = Tracker()
    (track,) = tracker.update([(0, 0, 40, 40)], [0.9], 0.0)
    now = 0.5
    if case != "new":
        tracker.add_result(track.track_id, {"p_female": 0.7}, 0.0)
    if case == "stale":
        now = 1.0
    if case == "grown":
        tracker.update([(0, 0, 50, 50)], [0.9], now)
    if case.startswith("pending"):
        track.pending = True
    assert policy.needs(track, now) is expected
