"""realtime.native: native noise kept off stderr without ever losing a log line.

Each case runs in its own Python process (fd 2 is process-wide; pytest captures it too), and
checks what really reached that process's stderr.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from fixtures import REPO_ROOT

PRELUDE = """
import logging, os, sys, threading, time
from realtime.native import quiet_stderr, stderr_is_quiet, filter_native_stderr, unfilter_native_stderr
logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
log = logging.getLogger("t")
"""


def stderr_of(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_alone_native_writes_are_silenced_and_stderr_comes_back() -> None:
    err = stderr_of("""
        with quiet_stderr():
            os.write(2, b"native noise\\n")
            with quiet_stderr():
                os.write(2, b"nested noise\\n")
            assert stderr_is_quiet()
            os.write(2, b"still quiet\\n")
        assert not stderr_is_quiet()
        os.write(2, b"loud again\\n")
        log.warning("a warning after the block")
    """)
    assert err == "loud again\nWARNING: a warning after the block\n"


def test_a_progress_bar_monitor_thread_does_not_count() -> None:
    err = stderr_of("""
        import io
        from tqdm import tqdm
        bar = tqdm(total=3, file=io.StringIO(), mininterval=0, miniters=1)
        assert any(type(t).__name__ == "TMonitor" for t in threading.enumerate())
        with quiet_stderr():
            os.write(2, b"native noise\\n")
        bar.close()
        os.write(2, b"after\\n")
    """)
    assert err == "after\n"


def test_overlapping_blocks_in_two_threads_never_leave_stderr_silenced() -> None:
    """The old quiet_stderr: A saves fd 2 and silences it, B saves the silenced fd 2, A restores,
    B "restores" /dev/null, and every later warning of the process is lost."""
    err = stderr_of("""
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

        def a():
            with quiet_stderr():
                a_in.set()
                b_in.wait(5)
            a_out.set()

        def b():
            a_in.wait(5)
            with quiet_stderr():
                b_in.set()
                a_out.wait(5)
                log.warning("b logs inside its block")

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log.warning("the main thread logs after both blocks")
        os.write(2, b"native line after both blocks\\n")
    """)
    assert "WARNING: b logs inside its block\n" in err
    assert "WARNING: the main thread logs after both blocks\n" in err
    assert "native line after both blocks\n" in err


def test_with_another_thread_running_nothing_is_redirected() -> None:
    err = stderr_of("""
        stop = threading.Event()
        t = threading.Thread(target=lambda: (log.warning("the other thread logs"), stop.wait(5)))
        with quiet_stderr():
            t.start()  # a thread that appears inside a block: the block is already open
            time.sleep(0.2)
        assert not stderr_is_quiet()
        with quiet_stderr():
            assert not stderr_is_quiet()  # two threads now: not redirected at all
            log.warning("logged inside a block while another thread runs")
        stop.set()
        t.join()
        log.warning("end")
    """)
    assert "WARNING: logged inside a block while another thread runs\n" in err
    assert err.endswith("WARNING: end\n")


def test_filter_drops_native_noise_and_keeps_every_log_line() -> None:
    err = stderr_of("""
        assert filter_native_stderr()
        assert not filter_native_stderr()  # once
        noise = [b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n",
                 b"OpenCV: FFMPEG: tag 0x30385056/'VP80' is not supported with codec id 139 and format 'webm'\\n",
                 b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d1c0a0] moov atom not found\\n",
                 b"[ WARN:0@1.234] global cap_ffmpeg_impl.hpp:453 some note\\n",
                 b"W0000 00:00:1700000000.123456   12345 inference_feedback_manager.cc:114] Feedback\\n",
                 b"Corrupt JPEG data: 2 extraneous bytes before marker 0xd9\\n"]

        def native(i):
            for _ in range(50):
                for line in noise:
                    os.write(2, line)
            os.write(2, f"native line {i} nobody knows\\n".encode())

        def python(i):
            for j in range(50):
                log.warning("warning %d.%d", i, j)

        threads = [threading.Thread(target=f, args=(i,)) for i in range(3) for f in (native, python)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with quiet_stderr():  # a no-op under the filter
            assert not stderr_is_quiet()
        os.write(2, b"no newline at the end")
        time.sleep(1.0)
        unfilter_native_stderr()
        log.warning("after the filter")
    """)
    lines = err.splitlines()
    assert sum(line.startswith("WARNING: warning ") for line in lines) == 150
    assert {f"native line {i} nobody knows" for i in range(3)} <= set(lines)
    assert not [line for line in lines if "TensorFlow Lite" in line or "FFMPEG" in line or "moov" in line
                or "WARN:0" in line or "W0000" in line or "Corrupt JPEG" in line]
    assert "no newline at the end" in err
    assert lines[-1].endswith("WARNING: after the filter")
