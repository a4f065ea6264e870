"""realtime.sources: one interface for cameras, files, folders, streams and synthetic frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from realtime_helpers import synthetic_frames, write_clip

from realtime.errors import SourceError
from realtime.sources import (
    CameraSource,
    ImageFileSource,
    ImageFolderSource,
    StreamSource,
    SyntheticSource,
    VideoFileSource,
    open_source,
    read_image,
)


def test_dispatch(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    img = tmp_path / "a.PNG"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    clip = write_clip(tmp_path / "c.mp4", synthetic_frames(2))
    assert isinstance(open_source("0"), CameraSource)
    assert isinstance(open_source(str(tmp_path / "d")), ImageFolderSource)
    assert isinstance(open_source(str(img)), ImageFileSource)
    assert isinstance(open_source(str(clip)), VideoFileSource)
    assert isinstance(open_source("rtsp://127.0.0.1:1/x"), StreamSource)
    assert isinstance(open_source("synthetic:faces=2,frames=5"), SyntheticSource)
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="bad synthetic"):
        open_source("synthetic:faces=two")


def test_video_file_frames_and_metadata(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", synthetic_frames(12, (320, 240)), fps=24.0)
    with open_source(str(clip)) as src:
        frames = list(src)
        assert (src.total, src.size, src.fps) == (12, (320, 240), 24.0)
    assert [f.index for f in frames] == list(range(12))
    assert frames[6].time_s == pytest.approx(0.25)
    assert frames[0].name is None and frames[0].image.shape == (240, 320, 3)


def test_folder_is_sorted_case_insensitive_and_skips_bad_files(tmp_path: Path, caplog) -> None:
    image = np.full((16, 16, 3), 99, np.uint8)
    for name in ("b.JPG", "a.png", "sub/c.WebP", "d.bmp", "e.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(Path(name).suffix.lower(), image)
        assert ok
        (tmp_path / name).write_bytes(buf.tobytes())
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("ignored")
    with open_source(str(tmp_path)) as src:
        names = [f.name for f in src]
    assert names == ["a.png", "b.JPG", "d.bmp", "e.jpeg", "sub/c.WebP"]
    assert src.skipped == ["zero.png"]
    assert "zero.png" in caplog.text


def test_images_read_or_none(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    assert read_image(tmp_path / "x.jpg") is None
    assert read_image(tmp_path / "missing.jpg") is None
    with pytest.raises(SourceError, match="cannot read image"):
        with open_source(str(tmp_path / "x.jpg")) as src:
            list(src)


def test_synthetic_source_is_deterministic() -> None:
    a = synthetic_frames(3, (320, 240), faces=2)
    b = synthetic_frames(3, (320, 240), faces=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[2])  # the faces move


def test_camera_that_does_not_exist() -> None:
    with pytest.raises(SourceError, match="camera 97"), CameraSource(97):
        pass
