"""What every command line of the project shares: logging for users, argument types, --version."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class _OneLineFormatter(logging.Formatter):
    """``warning: ...`` / ``error: ...`` for users; no tracebacks unless --verbose."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    else:
        handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``error:`` line (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def run_script(main: Callable[[], int]) -> NoReturn:
    """A script's ``if __name__ == "__main__"``: its exit status, a UserError as one ``error:`` line."""
    from .errors import UserError

    try:
        code = main()
    except UserError as exc:
        code = report_user_error(exc, False)
    raise SystemExit(code)


def report_user_error(exc: BaseException, verbose: bool) -> int:
    """The one ``error:`` line of a command that cannot go on (the traceback too with --verbose);
    returns the exit status 2."""
    if verbose:
        logging.getLogger("realtime").error("failed", exc_info=exc)
    print(f"error: {exc}", file=sys.stderr)
    return 2


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def path_arg(text: str) -> Path:
    """A path that is not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text).expanduser()


def frame_size(text: str) -> tuple[int, int]:
    """``WxH``, e.g. ``1280x720``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"width and height must be 16..8192, got {text}")
    return w, h


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def int_in_range(low: int, high: int):
    """An argparse type for integers in ``low..high``."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return value

    return parse


def unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def prog_name(module_form: str) -> str:
    """The name a user typed: ``face-gender`` for the console command, else ``python -m ...``."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("face-gender") else module_form


def package_version() -> str:
    """The installed distribution's version, or the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("face-gender-realtime")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the version and exit")


def plural(n: int, noun: str) -> str:
    """``1 frame``, ``2 frames``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
