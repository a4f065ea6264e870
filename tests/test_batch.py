"""``python -m realtime.batch``: many videos on local worker processes or on Ray, one report.

The tests make three short clips (synthetic moving faces) and check that a single-process run of
``python -m realtime``, the local pool and Ray on this machine give identical JSONL and summaries
(``--sync``), then failures, ``--resume``, Ctrl-C and bad input. Ray tests skip when Ray is not
installed (``pip install -r requirements-batch.txt``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from realtime_helpers import (
    REPO_ROOT,
    assert_one_error,
    count_frames,
    leftovers,
    read_jsonl,
    run_realtime,
    synthetic_frames,
    write_clip,
)

pytestmark = pytest.mark.slow

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="needs Ray (pip install -r requirements-batch.txt)")
CLIPS = {"a.mp4": (24, 1, "mp4v"), "cam2/b.mp4": (18, 2, "mp4v"), "c.avi": (20, 1, "MJPG")}
FOLDERS = {"a.mp4": "a", "cam2/b.mp4": "cam2/b", "c.avi": "c"}


def run_batch(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "realtime.batch", *args, "--no-progress"]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)


def no_ray_env(tmp: Path, *modules: str) -> dict[str, str]:
    """An environment where ``import ray`` (or each of ``modules``) fails, as on a machine without
    requirements-batch.txt."""
    shim = tmp / "no_ray"
    for name in modules or ("ray",):
        (shim / name).mkdir(parents=True, exist_ok=True)
        (shim / name / "__init__.py").write_text(f"raise ImportError(\"No module named '{name}' (test shim)\")\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(REPO_ROOT)])}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for rel, (n, faces, fourcc) in CLIPS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_clip(root / rel, synthetic_frames(n, (320, 240), faces=faces), fps=12.0, fourcc=fourcc)
    return root


@pytest.fixture(scope="module")
def single(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict]]:
    """``python -m realtime --sync --jsonl --summary`` on each clip: JSONL text and summary."""
    out = tmp_path_factory.mktemp("single")
    results = {}
    for rel in CLIPS:
        jsonl, summary = out / f"{FOLDERS[rel].replace('/', '_')}.jsonl", out / f"{FOLDERS[rel].replace('/', '_')}.json"
        proc = run_realtime("--source", str(inputs / rel), "--jsonl", str(jsonl), "--summary", str(summary), "--sync")
        assert proc.returncode == 0, proc.stderr
        results[rel] = (jsonl.read_text(), json.loads(summary.read_text()))
    return results


@pytest.fixture(scope="module")
def local_run(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The local pool (2 workers), with ``import ray`` made to fail: Ray is not needed without --ray."""
    out = tmp_path_factory.mktemp("local") / "out"
    proc = run_batch("--input", str(inputs), "--output", str(out), "--workers", "2", "--sync",
                     env=no_ray_env(tmp_path_factory.mktemp("shim")))
    return out, proc


def strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "source"}


def check_outputs_match(out: Path, single: dict[str, tuple[str, dict]], video: bool) -> None:
    for rel, (jsonl, summary) in single.items():
        folder = out / FOLDERS[rel]
        assert (folder / "faces.jsonl").read_text() == jsonl, rel  # byte for byte
        got = json.loads((folder / "summary.json").read_text())
        assert got["source"] == rel
        assert strip(got) == strip(summary), rel
        assert (folder / "thumbnail.jpg").stat().st_size > 0
        assert (folder / "annotated.mp4").is_file() == video
        if video:
            n, _, size = count_frames(folder / "annotated.mp4")
            assert n == CLIPS[rel][0] and size == (320, 240)
    assert not leftovers(out)


def test_local_pool_matches_single_process(local_run: tuple[Path, subprocess.CompletedProcess],
                                           single: dict[str, tuple[str, dict]]) -> None:
    out, proc = local_run
    assert proc.returncode == 0, proc.stderr
    check_outputs_match(out, single, video=True)
    agg = json.loads((out / "summary.json").read_text())
    assert agg["mode"] == "local" and agg["workers"] == 2
    assert agg["totals"]["videos"] == 3 and agg["totals"]["ok"] == 3 and agg["totals"]["failed"] == 0
    assert agg["totals"]["frames"] == sum(n for n, _, _ in CLIPS.values())
    assert [v["video"] for v in agg["videos"]] == sorted(CLIPS)
    total = sum(s["distinct_tracks"]["total"] for _, s in single.values())
    assert agg["totals"]["distinct_tracks"]["total"] == total
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["video"] for r in rows] == sorted(CLIPS)
    for row in rows:
        s = single[row["video"]][1]
        assert row["status"] == "ok" and row["error"] == ""
        assert int(row["frames"]) == s["frames"] and int(row["tracks"]) == s["distinct_tracks"]["total"]
        assert int(row["female"]) == s["distinct_tracks"]["female"]


def test_report_files(local_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, proc = local_run
    assert proc.returncode == 0, proc.stderr
    html = (out / "report.html").read_text()
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html
    for name in ("tracks_by_label.png", "dwell_hist.png"):
        assert (out / "report_files" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"report_files/{name}" in html
    assert len(list((out / "report_files").glob("timeline_*.png"))) == 3
    for folder in FOLDERS.values():
        assert f'src="{folder}/thumbnail.jpg"' in html


@needs_ray
def test_ray_local_matches_single_process(inputs: Path, single: dict[str, tuple[str, dict]], tmp_path: Path) -> None:
    out = tmp_path / "ray"
    proc = run_batch("--input", str(inputs), "--output", str(out), "--ray", "local", "--workers", "2", "--sync",
                     "--no-video", "--no-report")
    assert proc.returncode == 0, proc.stderr
    check_outputs_match(out, single, video=False)
    agg = json.loads((out / "summary.json").read_text())
    assert agg["mode"] == "ray-local" and agg["ray_start_s"] > 0 and agg["totals"]["ok"] == 3
    assert not (out / "report.html").exists()


# --- the model is loaded once per process, not once per video -------------------------------------
def test_one_model_load_for_many_videos_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a worker process does with its videos, here in-process: the model is loaded for the
    first video and shared by the others (GenderClassifier.__init__ counted)."""
    from realtime import classifier
    from realtime.batch import task
    from realtime.config import PipelineConfig

    loads: list[int] = []
    init = classifier.GenderClassifier.__init__

    def counting(self: classifier.GenderClassifier, *args: object, **kwargs: object) -> None:
        loads.append(os.getpid())
        init(self, *args, **kwargs)

    monkeypatch.setattr(classifier.GenderClassifier, "__init__", counting)
    monkeypatch.setattr(task, "_classifiers", {})  # a fresh process
    clip = write_clip(tmp_path / "v.mp4", synthetic_frames(4, (160, 120)), fps=12.0)
    config = PipelineConfig(threads=1, detector_threads=1, mode="sync")
    for i in range(5):
        result = task.process_video(task.VideoTask(i, str(clip), f"v{i}.mp4", str(tmp_path / f"v{i}"), False, config,
                                                   shipped_model=True))
        assert result.status == "ok" and result.frames == 4, result.error
    assert len(loads) == 1


COUNTING_MAIN = """
import os, sys
import realtime.classifier as c

_init = c.GenderClassifier.__init__


def counting(self, *args, **kwargs):  # every load, in the driver and in each spawned worker
    with open(os.environ["LOADS"], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    _init(self, *args, **kwargs)


c.GenderClassifier.__init__ = counting  # (spawned workers run this file as __mp_main__: patched too)
if __name__ == "__main__":
    from realtime.batch import main

    sys.exit(main(sys.argv[1:]))
"""


def test_one_model_load_per_worker_process(tmp_path: Path) -> None:
    """5 videos on 2 local workers: the driver's check loads the model once, each worker process
    once (it was 1 + 5: once per video)."""
    src = tmp_path / "in"
    src.mkdir()
    frames = synthetic_frames(4, (160, 120))
    for i in range(5):
        write_clip(src / f"v{i}.mp4", frames, fps=12.0)
    script = tmp_path / "counting_batch.py"
    script.write_text(COUNTING_MAIN)
    loads = tmp_path / "loads.txt"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(script), "--input", str(src), "--output", str(out), "--workers", "2",
                           "--no-video", "--no-report", "--no-progress"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, "LOADS": str(loads), "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr
    agg = json.loads((out / "summary.json").read_text())
    assert agg["totals"]["ok"] == 5
    workers = {int(v["worker"].rsplit(":", 1)[1]) for v in agg["videos"]}
    pids = [int(line) for line in loads.read_text().split()]
    per_process = {pid: pids.count(pid) for pid in set(pids)}
    assert all(n == 1 for n in per_process.values()), per_process  # once per process
    assert workers <= set(per_process) and 1 <= len(workers) <= 2
    assert len(pids) == len(workers) + 1, per_process  # each worker's, and the driver's check


def test_failed_videos_are_listed_and_resume_retries_only_them(inputs: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for rel in ("a.mp4", "c.avi"):
        (src / rel).write_bytes((inputs / rel).read_bytes())
    (src / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    data = (inputs / "c.avi").read_bytes()
    (src / "cut.avi").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    proc = run_batch("--input", str(src), "--output", str(out), "--workers", "2", "--no-video")
    assert proc.returncode == 3, proc.stderr  # finished, but some videos failed
    assert "Traceback" not in proc.stderr
    with (out / "summary.csv").open() as fh:
        rows = {r["video"]: r for r in csv.DictReader(fh)}
    assert {v: r["status"] for v, r in rows.items()} == {"a.mp4": "ok", "c.avi": "ok", "corrupt.mp4": "failed",
                                                         "cut.avi": "failed"}
    assert "corrupt.mp4" in rows["corrupt.mp4"]["error"]
    assert "truncated" in rows["cut.avi"]["error"] and "kept" not in rows["cut.avi"]["error"]
    assert not (out / "cut").exists() or not any((out / "cut").iterdir())  # nothing kept of a failed video
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    report = (out / "report.html").read_text()
    assert "Failed (2)" in report and "truncated" in report

    done = out / "a" / "summary.json"
    before = done.stat().st_mtime_ns
    (out / "c" / "summary.json").unlink()  # as if the batch had stopped before c.avi's summary
    proc = run_batch("--input", str(src), "--output", str(out), "--workers", "2", "--no-video", "--resume")
    assert proc.returncode == 3, proc.stderr
    assert "1 of 4 videos are complete" in proc.stderr
    assert done.stat().st_mtime_ns == before  # skipped
    agg = json.loads((out / "summary.json").read_text())
    status = {v["video"]: (v["status"], v["resumed"]) for v in agg["videos"]}
    assert status == {"a.mp4": ("ok", True), "c.avi": ("ok", False), "corrupt.mp4": ("failed", False),
                      "cut.avi": ("failed", False)}
    assert (out / "c" / "summary.json").is_file() and not leftovers(out)


def test_ctrl_c_leaves_no_incomplete_output_then_resume_finishes(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    frames = synthetic_frames(150, (320, 240))
    for i in range(6):
        write_clip(src / f"long{i}.mp4", frames, fps=12.0)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "realtime.batch", "--input", str(src), "--output", str(out), "--workers", "2",
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.rglob("*.partial-*")):  # a worker is writing a video
        time.sleep(0.05)
    assert proc.poll() is None, "the batch ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert not leftovers(out)
    assert not (out / "summary.json").exists() and not (out / "report.html").exists()
    for folder in out.iterdir():  # whatever is at a final name is complete
        summary = folder / "summary.json"
        if summary.exists():
            frames_done = json.loads(summary.read_text())["frames"]
            assert frames_done == 150 == len(read_jsonl(folder / "faces.jsonl"))
            assert count_frames(folder / "annotated.mp4")[0] == 150
        else:
            assert not (folder / "faces.jsonl").exists()
    proc2 = run_batch("--input", str(src), "--output", str(out), "--workers", "2", "--resume", "--no-report")
    assert proc2.returncode == 0, proc2.stderr
    agg = json.loads((out / "summary.json").read_text())
    assert agg["totals"]["ok"] == 6 and all(v["frames"] == 150 for v in agg["videos"])
    assert not leftovers(out)


# --- bad input: one error line, exit 2 -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_empty_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no videos here")
    assert_one_error(run_batch("--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")), "no videos")
    assert not (tmp_path / "o").exists()


def test_list_naming_missing_files(inputs: Path, tmp_path: Path) -> None:
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# cameras\n{inputs / 'a.mp4'}\nmissing1.mp4\n{tmp_path / 'missing2.mp4'}\n")
    proc = run_batch("--input", str(listing), "--output", str(tmp_path / "o"))
    assert_one_error(proc, "2 missing file(s)", "missing1.mp4")


def test_output_inside_input(inputs: Path) -> None:
    proc = run_batch("--input", str(inputs), "--output", str(inputs / "cam2" / "out"))
    assert_one_error(proc, "--output", "overlaps the input")  # the rule of every command (files.check_outputs)
    assert not (inputs / "cam2" / "out").exists()


def test_list_file_and_glob(inputs: Path, tmp_path: Path) -> None:
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{inputs / 'cam2' / 'b.mp4'}\n\n{inputs / 'a.mp4'}\n")
    out = tmp_path / "list"
    proc = run_batch("--input", str(listing), "--output", str(out), "--no-video", "--no-report", "--max-frames", "3")
    assert proc.returncode == 0, proc.stderr
    agg = json.loads((out / "summary.json").read_text())
    assert [v["video"] for v in agg["videos"]] == ["cam2/b.mp4", "a.mp4"]  # list order, relative to a common folder
    assert all(v["frames"] == 3 for v in agg["videos"])
    out = tmp_path / "glob"
    proc = run_batch("--input", str(inputs / "**" / "*.mp4"), "--output", str(out), "--no-video", "--no-report",
                     "--max-frames", "2", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert [v["video"] for v in json.loads((out / "summary.json").read_text())["videos"]] == ["a.mp4", "cam2/b.mp4"]


def test_report_without_matplotlib_has_tables_and_says_why(inputs: Path, tmp_path: Path) -> None:
    """The runtime alone (no [batch] extra, so no matplotlib): the batch runs, warns once before the
    work, and report.html has its tables and no plots."""
    out = tmp_path / "o"
    proc = run_batch("--input", str(inputs / "a.mp4"), "--output", str(out), "--no-video", "--max-frames", "3",
                     "--workers", "1", env=no_ray_env(tmp_path, "ray", "matplotlib"))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "pip install 'face-gender-realtime[batch]'" in warnings[0], proc.stderr
    assert "Traceback" not in proc.stderr
    html = (out / "report.html").read_text()
    assert "No plots: matplotlib is not installed" in html and "<img class=\"plot\"" not in html
    assert 'src="a/thumbnail.jpg"' in html
    assert not list((out / "report_files").glob("*.png"))


def test_missing_ray_names_the_requirements_file(inputs: Path, tmp_path: Path) -> None:
    proc = run_batch("--input", str(inputs), "--output", str(tmp_path / "o"), "--ray", "local",
                     env=no_ray_env(tmp_path))
    assert_one_error(proc, "requirements-batch.txt")


@needs_ray
def test_ray_address_that_does_not_answer(inputs: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = run_batch("--input", str(inputs), "--output", str(tmp_path / "o"), "--ray", f"127.0.0.1:{free_port()}")
    assert_one_error(proc, "does not answer")
    assert time.monotonic() - t0 < 60


# --- the report in a browser -------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs {CHROMIUM} (apt-get install chromium)")
def test_report_in_headless_chromium(local_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (requirements-web.txt)")
    out, proc = local_run
    assert proc.returncode == 0, proc.stderr
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert len(images) == 2 + 3 + 3  # two plots, a thumbnail and a timeline per video
        assert all(width > 0 for _, width in images), images  # every picture loaded
        assert all(url.startswith("file://") for url in requests), requests  # nothing from any host
        assert page.locator("h1").inner_text() == "Face gender batch report"
        assert page.locator("table tr").count() >= 4
        page.screenshot(path=str(ARTIFACTS / "batch_report.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "batch_report.png").stat().st_size > 10_000
