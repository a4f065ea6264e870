"""Start the local web app: upload images and videos, or use the browser's webcam.

Examples:
  face-gender-web                          http://127.0.0.1:7860/ (this computer only)
  face-gender-web --port 8000 --model models/gender_vgg16_int8.tflite
  face-gender-web --host 0.0.0.0             reachable from the network: no login (see the README, 'Web app')

Exit status: 0 after Ctrl-C, 2 on unusable settings (one `error:` line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from ..cli import Parser, add_version, int_in_range, positive_float, prog_name, setup_logging
from ..config import add_pipeline_args
from ..errors import UserError
from ..httpguard import LOOPBACK_HOSTS, is_loopback
from ..native import filter_native_stderr, unfilter_native_stderr
from . import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, KEEP_ALIVE_S, MIN_BODY_RATE

log = logging.getLogger("realtime.web")

WS_MAX_BYTES = 8 * 1024 * 1024  # one webcam JPEG frame


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=prog_name("python -m realtime.web"), description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int_in_range(1, 65535), default=7860, help="port, 1-65535 (default 7860)")
    add_pipeline_args(p, include=("model",))
    p.add_argument("--max-upload-mb", type=positive_float, default=50.0,
                   help="largest file accepted, in MB (default 50)")
    p.add_argument("--max-video-seconds", type=positive_float, default=120.0,
                   help="longest video accepted, in seconds (default 120)")
    p.add_argument("--keep-minutes", type=positive_float, default=15.0,
                   help="finished video results are deleted after this long (default 15)")
    p.add_argument("--header-timeout", type=positive_float, default=HEADER_TIMEOUT_S, metavar="S",
                   help="a request's line and headers must arrive within S seconds, or 408 and the "
                        f"connection is closed (default {HEADER_TIMEOUT_S:g})")
    p.add_argument("--body-timeout", type=positive_float, default=BODY_TIMEOUT_S, metavar="S",
                   help="a request's body must arrive within S seconds plus its size at "
                        f"{MIN_BODY_RATE // 1024} KiB/s, or the connection is closed (default {BODY_TIMEOUT_S:g}); "
                        f"idle kept-alive connections close after {KEEP_ALIVE_S:g} s")
    add_pipeline_args(p, include=("threads", "detector_backend"))
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and one line per request")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        import uvicorn

        from .app import Settings, create_app
    except ImportError as exc:
        print(f"error: the web app needs {exc.name}: pip install -r requirements-web.txt", file=sys.stderr)
        return 2
    loopback = is_loopback(args.host)
    if not loopback:
        log.warning("listening on %s: anyone who can reach this machine on port %d can use the app "
                    "(upload files, use the CPU); there is no login. Browsers allow the webcam only on "
                    "http://localhost or https pages", args.host, args.port)
    settings = Settings(model=args.model, max_upload_mb=args.max_upload_mb,
                        max_video_seconds=args.max_video_seconds, keep_minutes=args.keep_minutes,
                        threads=args.threads, detector_backend=args.detector_backend,
                        allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    try:
        if not args.model.is_file():
            raise UserError(f"gender model not found: {args.model} (export one with `python -m training "
                            "export`, or pass --model)")
        check_port_free(args.host, args.port)
        app = create_app(settings)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    log.info("open http://%s:%d/ in a browser (Ctrl-C to stop)", shown, args.port)
    # Native libraries' notes (FFmpeg, LiteRT) are filtered out line by line from here on, while
    # this is still the only thread; the server's own log lines go straight to stderr.
    filtered = filter_native_stderr()
    try:
        from .timeouts import timed_protocol

        uvicorn.run(app, host=args.host.strip("[]"), port=args.port, log_config=None, access_log=args.verbose,
                    ws_max_size=WS_MAX_BYTES, timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_S,
                    http=timed_protocol(args.header_timeout, args.body_timeout))
    finally:
        if filtered:
            unfilter_native_stderr()
    return 0


if __name__ == "__main__":
    sys.exit(main())
