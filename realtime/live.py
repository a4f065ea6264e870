"""The live window: what a person using the webcam overlay sees and the keys they press.

Keys (``h`` shows them on screen):

========  ======================================================================
space     pause / resume (the frame stays; nothing is processed while paused)
s         snapshot: the annotated frame as a PNG in the captures folder
r         start / stop recording a clip to a new timestamped file there
h         show / hide the key help
q, Esc    quit (closing the window quits too)
========  ======================================================================

On screen: FPS, faces now, distinct tracks seen this session by label, a REC badge while
recording, and the path of the last snapshot or clip for a few seconds. The picture is mirrored
for cameras by default (a selfie view); boxes, JSONL, snapshots and recordings stay in the
coordinates of the frame as captured, and text is never mirrored.

Keys and the screen are injectable (``keys``, ``screen``), so tests drive the window with
scripted key presses and no display.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .face import Face
from .overlay import LiveStatus, draw_faces, draw_status
from .sinks import VideoSink, write_image_atomic

log = logging.getLogger(__name__)

WINDOW = "Face gender (h: keys)"
DEFAULT_CAPTURES = Path("~/face-gender-captures")
TOAST_SECONDS = 4.0
KEY_SPACE, KEY_ESC = 32, 27
PAUSED_POLL_MS = 30


def _cv_keys(delay_ms: int) -> int:
    return cv2.waitKey(delay_ms) & 0xFF


class _CvScreen:
    def __init__(self) -> None:
        self.opened = False

    def __call__(self, image: np.ndarray) -> bool:
        """Show a frame; False once the user has closed the window."""
        if not self.opened:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
            cv2.resizeWindow(WINDOW, image.shape[1], image.shape[0])
            self.opened = True
        cv2.imshow(WINDOW, image)
        return True

    def visible(self) -> bool:
        return not self.opened or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        if self.opened:
            cv2.destroyAllWindows()
            cv2.waitKey(1)


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


class LiveWindow:
    """Shows each frame with the live status and handles the keys; :meth:`show` returns False
    when the user wants to quit."""

    def __init__(self, mirror: bool = False, captures: Path = DEFAULT_CAPTURES,
                 fps: float = 30.0, keys: Callable[[int], int] | None = None,
                 screen: Callable[[np.ndarray], bool] | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.mirror = mirror
        self.captures = captures.expanduser()
        self.fps = fps
        self._keys = keys or _cv_keys
        self._screen = screen or _CvScreen()
        self._clock = clock
        self.status = LiveStatus(seen={"female": 0, "male": 0, "uncertain": 0})
        self._labels: dict[int, str] = {}  # track id -> its latest label
        self._toast_until = 0.0
        self.recording: VideoSink | None = None
        self.recordings: list[Path] = []
        self.snapshots: list[Path] = []
        self._last_shown: np.ndarray | None = None
        self._last_annotated: np.ndarray | None = None

    # -- per frame ------------------------------------------------------------------------------
    def show(self, picture: np.ndarray, faces: Sequence[Face], annotated: np.ndarray,
             fps: float | None) -> bool:
        """Show one frame: ``picture`` as the outputs show it (already blurred with --blur: the
        window never blurs again), mirrored if asked, with boxes and the live status on top;
        ``annotated`` is the output image (snapshots and clips)."""
        self._count(faces)
        self.status.fps = fps
        self.status.faces_now = len(faces)
        self._last_annotated = annotated
        if self.recording is not None:
            self.recording.write(annotated)
        shown = draw_faces(picture, faces, mirror=self.mirror)
        self._last_shown = shown
        if not self._present(shown):
            return False
        key = self._keys(1)
        go_on = self._handle(key)
        while go_on and self.status.paused:  # the frame stays; nothing else happens until resumed
            if not self._present(shown):
                return False
            go_on = self._handle(self._keys(PAUSED_POLL_MS))
        return go_on

    def _present(self, shown: np.ndarray) -> bool:
        if self._toast_until and self._clock() > self._toast_until:
            self.status.toast, self._toast_until = None, 0.0
        self.status.recording = self.recording is not None
        image = draw_status(shown.copy(), self.status)
        ok = self._screen(image)
        visible = getattr(self._screen, "visible", None)
        return bool(ok) and (visible is None or visible())

    def _count(self, faces: Sequence[Face]) -> None:
        for v in faces:
            if v.track_id is not None and v.label is not None:
                self._labels[v.track_id] = v.label
        seen = {"female": 0, "male": 0, "uncertain": 0}
        for label in self._labels.values():
            seen[label] = seen.get(label, 0) + 1
        self.status.seen = seen

    # -- keys -----------------------------------------------------------------------------------
    def _handle(self, key: int) -> bool:
        if key in (ord("q"), KEY_ESC):
            return False
        if key == KEY_SPACE:
            self.status.paused = not self.status.paused
        elif key == ord("h"):
            self.status.show_help = not self.status.show_help
        elif key == ord("s"):
            self.snapshot()
        elif key == ord("r"):
            self.toggle_recording()
        return True

    def _toast(self, text: str) -> None:
        self.status.toast = text
        self._toast_until = self._clock() + TOAST_SECONDS
        log.info("%s", text)

    def snapshot(self) -> Path | None:
        if self._last_annotated is None:
            return None
        path = self.captures / f"snapshot_{_stamp()}_{len(self.snapshots) + 1:03d}.png"
        try:
            write_image_atomic(path, self._last_annotated)
        except (UserError, OSError) as exc:
            self._toast(f"snapshot failed: {exc}")
            return None
        self.snapshots.append(path)
        self._toast(f"snapshot: {path}")
        return path

    def toggle_recording(self) -> None:
        if self.recording is not None:
            self._stop_recording()
            return
        if self._last_annotated is None:
            return
        h, w = self._last_annotated.shape[:2]
        path = self.captures / f"clip_{_stamp()}_{len(self.recordings) + 1:03d}.mp4"
        try:
            self.recording = VideoSink(path, self.fps, (w, h))
        except UserError as exc:
            self._toast(f"cannot record: {exc}")
            return
        self._toast(f"recording: {path}")

    def _stop_recording(self) -> None:
        sink, self.recording = self.recording, None
        if sink is None:
            return
        try:
            sink.finalize()  # reopens the finished file and counts its frames (a full disk leaves a broken one)
            sink.close(keep=True)
        except UserError as exc:
            sink.close(keep=False)
            self._toast(f"clip failed: {exc}")
            log.warning("clip failed: %s", exc)
            return
        if sink.path.exists():
            self.recordings.append(sink.path)
            self._toast(f"clip saved: {sink.path} ({sink.count} frames)")

    def close(self) -> None:
        """Stop a recording (a complete file) and close the window."""
        self._stop_recording()
        close = getattr(self._screen, "close", None)
        if close is not None:
            close()
