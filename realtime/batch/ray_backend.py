"""Ray: start or join a cluster (:func:`ray_init`), check every node (:func:`ray_preflight`), run
the videos as Ray tasks (:func:`run_ray`) and stop what the batch started (:func:`ray_shutdown`).
Named so that it never shadows the ``ray`` package."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import PipelineConfig
from ..errors import UserError
from .pool import cores
from .signals import STOP, helpers_immune_to_sighup
from .task import VideoResult, VideoTask, check_pipeline, config_here, process_video

log = logging.getLogger("realtime.batch")

REQUIREMENTS_BATCH = "requirements-batch.txt"


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UserError(f"--ray needs Ray, which is not installed: pip install -r {REQUIREMENTS_BATCH} "
                        f"({exc})") from exc
    return ray


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line, when a Ray address does not answer (ray.init would wait long)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--ray {address}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UserError(f"the Ray cluster at {address} does not answer ({exc.strerror or exc}); "
                        "is `ray start --head` running there and the port reachable?") from exc


def _one_line(exc: BaseException) -> str:
    """A Ray exception as one readable line: its cause when it has one, without colour codes."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def _source_root() -> str | None:
    """The checkout this package runs from (None when it is installed): Ray workers get it on their
    PYTHONPATH, so a cluster whose nodes share this path (or this one machine) needs no install."""
    root = Path(__file__).resolve().parents[2]  # realtime/batch/ray_backend.py -> the checkout
    return str(root) if (root / "pyproject.toml").is_file() and (root / "realtime").is_dir() else None


def ray_init(mode: str, num_cpus: int | None) -> Any:
    """Join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) or start (``local``) a Ray cluster."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    root = _source_root()
    if root is not None:
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}}
    if mode == "local":
        kwargs.update(address="local", num_cpus=num_cpus or cores(), include_dashboard=False)
    else:
        if mode != "auto":
            _probe(mode)
        kwargs["address"] = mode
    from ..native import quiet_stderr

    pgid = os.getpgrp()
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    set_sigterm = getattr(utils, "set_sigterm_handler", None)
    try:  # joining: Ray's C++ client repeats its connection warnings on fd 2 until it gives up
        # Ray replaces the SIGTERM handler while it starts (its own exits with status 1 and leaves
        # our workers and partial files behind): ours stays, and a signal now is acted on after.
        with STOP.deferred(), helpers_immune_to_sighup(), \
                quiet_stderr() if mode != "local" else contextlib.nullcontext():
            if set_sigterm is not None:
                utils.set_sigterm_handler = lambda handler: None
            try:
                ray.init(**kwargs)
            finally:
                if set_sigterm is not None:
                    utils.set_sigterm_handler = set_sigterm
                STOP.install()
                _restore_pgid(pgid)
    except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError...: one line for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        cause = f" ({_one_line(exc.__cause__)})" if exc.__cause__ is not None else ""
        if "AuthToken" in cause or "AuthenticationError" in cause:
            cause = (" (the cluster uses token authentication: set RAY_AUTH_MODE=token and give this machine the "
                     "head's token, ~/.ray/auth_token or RAY_AUTH_TOKEN; see the README, 'Many videos')")
        raise UserError(f"cannot {'start' if mode == 'local' else 'join'} Ray ({mode}): {first}{cause}") from exc
    return ray


def _restore_pgid(pgid: int) -> None:
    """``ray.init(address="local")`` makes the driver leader of a new process group (for Ray's
    reaper) when it was not one: back to the user's group, so that Ctrl-C and ``kill -- -PGID``
    still reach the batch; Ray's processes stay in their own group and the driver stops them."""
    if os.getpgrp() != pgid:
        with contextlib.suppress(OSError):
            os.setpgid(0, pgid)


def _ray_check(pipeline: PipelineConfig, shipped_model: bool) -> str:
    """Runs on each node before any video: can it import this package, load the model and the
    detector with these options?"""
    from .. import __version__

    try:
        check_pipeline(config_here(pipeline, shipped_model), keep=True)
    except UserError as exc:
        raise UserError(f"on {socket.gethostname()}: {exc}") from None
    return f"{socket.gethostname()} realtime {__version__}"


def ray_preflight(ray: Any, pipeline: PipelineConfig, shipped_model: bool) -> list[str]:
    """One small task on every alive node with CPUs; a node that cannot run the batch is bad input."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=1, max_retries=0)(_ray_check)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(pipeline, shipped_model) for n in nodes]
    out = []
    for node, ref in zip(nodes, refs):
        try:
            out.append(ray.get(ref, timeout=300))
        except Exception as exc:
            raise UserError(f"Ray node {node.get('NodeManagerAddress', '?')} cannot annotate videos: "
                            f"{_one_line(exc)} (every node needs this package, requirements.txt and "
                            f"{REQUIREMENTS_BATCH}: see the README, 'Many videos')") from exc
    if not out:
        raise UserError("the Ray cluster has no node with a free CPU")
    return out


def _ray_task(task: VideoTask) -> VideoResult:
    return process_video(task)


def run_ray(ray: Any, tasks: list[VideoTask], max_in_flight: int | None,
            on_result: Callable[[VideoResult], None]) -> None:
    remote = ray.remote(num_cpus=1, max_retries=1)(_ray_task)  # retried only when a node/worker is lost
    todo = deque(tasks)
    refs: dict[Any, VideoTask] = {}
    try:
        while todo or refs:
            while todo and (max_in_flight is None or len(refs) < max_in_flight):
                task = todo.popleft()
                refs[remote.remote(task)] = task
            done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for ref in done:
                task = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # RayTaskError, WorkerCrashedError, NodeDiedError...
                    result = VideoResult(task.index, task.rel, "failed", error=f"Ray task failed: {_one_line(exc)}")
                on_result(result)
    except KeyboardInterrupt:
        _ray_cancel(ray, list(refs))
        raise


def _ray_cancel(ray: Any, refs: list[Any], grace_s: float = 10.0) -> None:
    """Stop running tasks: KeyboardInterrupt in each (its video stops cleanly and removes its
    temporary file), then, after ``grace_s`` or a second signal, kill the workers still at it."""
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    deadline = time.monotonic() + grace_s
    pending = refs
    while pending and time.monotonic() < deadline and not STOP.hurry:
        try:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        except Exception:
            break
    for ref in pending:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


def _process_tree(root: int) -> dict[int, str]:
    """Every descendant of ``root`` (Linux /proc; empty elsewhere): pid -> start time, so that a
    pid reused later is never taken for one of them."""
    children: dict[int, list[int]] = {}
    start: dict[int, str] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        start[int(entry.name)] = fields[19]
    out: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in out and pid in start:
            out[pid] = start[pid]
            todo.extend(children.get(pid, []))
    return out


def _still_running(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[19] == started and fields[0] != "Z"


def ray_shutdown(ray: Any, local: bool, wait_s: float = 10.0) -> None:
    """Disconnect; with ``--ray local``, stop every process that Ray started for the batch: those
    ``ray.shutdown`` leaves (its agents outlive their raylet now and then) are killed."""
    tree = _process_tree(os.getpid()) if local else {}
    try:
        with STOP.deferred():
            ray.shutdown(**({"wait_for_processes": True} if local else {}))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        log.debug("ray.shutdown: %s", exc)
    deadline = time.monotonic() + wait_s
    left = {pid: t for pid, t in tree.items() if _still_running(pid, t)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pid: t for pid, t in left.items() if _still_running(pid, t)}
    for pid in left:
        log.debug("killing Ray process %d, still running after ray.shutdown", pid)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in left:  # our own children: reaped here; others are reaped by their parent or init
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)

