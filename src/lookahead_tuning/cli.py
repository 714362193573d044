"""The ``lookahead-tuning`` command. Sub-commands mirror the pipeline stages.

Each stage module exposes ``add_parser(subparsers)`` which registers its sub-command and sets
``func`` to a callable taking the parsed ``argparse.Namespace``. Errors a user can fix
(:class:`UserError`, a failed file operation, a bad flag) print one line and exit 2; anything else is
a bug, reported as one line with exit 1. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import UserError, shorten
from .redact import scrub


class UsageError(UserError):
    """A bad command line: argparse's complaint as one line, with the hint where the usage is."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``error: argument --lr: ... (usage: PROG --help)``) instead of
    the whole usage text; sub-command parsers are made of this class too."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (usage: {self.prog} --help)")


# Each stage's cli module registers its own sub-commands. All of them ship with the package: a missing one
# is a broken installation and fails loudly (see ``build_parser``), never a quietly absent verb.
STAGES = [
    "lookahead_tuning.preview.cli",
    "lookahead_tuning.generate.cli",
    "lookahead_tuning.train.cli",
    "lookahead_tuning.analyse.cli",
    "lookahead_tuning.experiment.cli",
    "lookahead_tuning.report.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="lookahead-tuning",
        description="Fine-tune chat LLMs with LookAhead Tuning and measure what it does to safety.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        importlib.import_module(name).add_parser(sub)
    return parser


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: the path(s) and the system's reason, without a traceback."""
    reason = exc.strerror or (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    paths = [shorten(str(p), 160) for p in (exc.filename, getattr(exc, "filename2", None)) if p is not None]
    return scrub(shorten(f"{' -> '.join(paths)}: {reason}" if paths else reason, 480))


def describe_bug(exc: BaseException) -> str:
    """One line for an error no check caught: what it was and how to see the traceback."""
    if isinstance(exc, MemoryError):
        return "out of memory (a smaller --batch-size or --max-length, or fewer rows, may fit)"
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to process"
    detail = (str(exc).strip().splitlines() or [""])[0]
    return scrub(f"unexpected {type(exc).__name__}: {shorten(detail, 200)} (a bug; rerun with --debug to see where)")


class Terminated(BaseException):
    """SIGTERM (what ``timeout``, schedulers and ``kill`` send), raised where the command is, so every
    ``finally`` and failure clean-up runs: no temporary file or half-made folder is left behind."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LOOKAHEAD_TUNING_DEBUG") == "1"
    parser = build_parser()
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(parser, argv, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(parser: argparse.ArgumentParser, argv: list[str], debug: bool) -> int:
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        result = args.func(args)
        return int(result or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk, a missing permission, a path through a file: the user's to fix
        if debug:
            raise
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except Exception as exc:  # noqa: BLE001 - the promise is one line, never a traceback
        if debug:
            raise
        print(f"error: {describe_bug(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
