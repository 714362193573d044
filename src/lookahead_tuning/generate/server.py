"""Start an OpenAI-compatible server as a child process, wait until it answers, stop it by its pid.

Used where this package starts the server itself: ``run`` with ``eval.generation.server`` (one server
per model of the grid, since each cell has its own weights) and ``scripts/integration.py`` (vLLM on
the embedded model). The server runs in its own process group, so stopping it by its pid also ends
the worker processes it forked (vLLM's engine core), and nothing is left running.

The server's output reaches its log through this process, each line scrubbed of every registered
secret (:mod:`lookahead_tuning.redact`): servers print their settings on start-up, vLLM its
``--api-key`` among them, and the log lies in the run folder with everything else the run writes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..endpoint import wait_until_ready
from ..errors import UserError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(template: str, **values: str) -> list[str]:
    """Split a command template (shell words) and fill ``{model}``, ``{port}``, ``{name}`` in each word.

    Words are filled after splitting, so a model path with spaces stays one argument.
    """
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise UserError(f"server command is not valid shell words ({exc})") from None
    try:
        return [word.format(**values) for word in words]
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"server command: unknown or malformed placeholder {exc}; use {{model}}, {{port}}, "
                        "{name}") from None


@dataclass
class ServerProcess:
    """A server we started: its pid, where it answers and where its output goes."""

    command: list[str]
    base_url: str
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    startup_seconds: float | None = None
    pump: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())[-500:]

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the server's process group (its pid), SIGKILL after ``timeout``; returns its exit code."""
        return self._logged(_signal_group(self.process, signal.SIGTERM, timeout))

    def kill(self) -> int | None:
        """SIGKILL at once (an abrupt crash, as the integration check simulates)."""
        return self._logged(_signal_group(self.process, signal.SIGKILL, 30.0))

    def _logged(self, code: int | None) -> int | None:
        # The whole group is gone, so the pipe is at its end: the log holds everything the server said.
        if self.pump is not None:
            self.pump.join(timeout=10)
        return code


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still runs (zombies, which only wait to be reaped by
    whoever adopted them, do not count; read from /proc where there is one)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _signal_group(process: subprocess.Popen, sig: int, timeout: float) -> int | None:
    """Send ``sig`` to the server's whole group, then make sure nothing of it is left: the server's own
    exit does not end workers that are still shutting down, so wait for the group, SIGKILL what remains."""
    pgid = process.pid  # start_new_session: the group id is the server's pid
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process.poll() is None or group_alive(pgid)):
        time.sleep(0.2)
    if process.poll() is None or group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    code = process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while group_alive(pgid) and time.monotonic() < deadline:  # SIGKILLed workers still being reaped
        time.sleep(0.2)
    return code


def _copy_scrubbed(pipe, log) -> None:
    """The server's output into its log, line by line (at most 64 KiB a piece), every secret masked."""
    from ..redact import scrub_bytes

    writable = True
    try:
        for line in iter(lambda: pipe.readline(65536), b""):
            if not writable:
                continue  # still drained: a server whose output pipe fills up would stall
            try:
                log.write(scrub_bytes(line))
                log.flush()
            except OSError:
                writable = False  # the log cannot be written (a full disk): the server runs on without it
    finally:
        with contextlib.suppress(OSError):
            log.close()
        pipe.close()


def start_server(command: list[str], base_url: str, *, log_path: str | os.PathLike,
                 env: Mapping[str, str] | None = None, startup_timeout: float = 900.0,
                 cwd: str | os.PathLike | None = None) -> ServerProcess:
    """Start ``command`` and return once ``GET {base_url}/models`` answers (or fail with its log's tail)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # closed by the pump when the server's output ends
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, cwd=cwd,
                                   start_new_session=True)
    except OSError as exc:
        log.close()
        raise UserError(f"cannot start the server ({exc}): {' '.join(command)[:200]}") from None
    pump = threading.Thread(target=_copy_scrubbed, args=(process.stdout, log), daemon=True,
                            name=f"server-log-{process.pid}")
    pump.start()
    server = ServerProcess(command=command, base_url=base_url, log_path=log_path, process=process, pump=pump)
    started = time.monotonic()
    try:
        wait_until_ready(base_url, startup_timeout, alive=server.alive)
    except BaseException as exc:
        server.stop()
        if isinstance(exc, UserError):
            raise UserError(f"{exc.message}; server log {log_path}: {server.log_tail()}") from None
        raise
    server.startup_seconds = round(time.monotonic() - started, 1)
    return server


@contextlib.contextmanager
def served(command: list[str], base_url: str, **kwargs) -> Iterator[ServerProcess]:
    """:func:`start_server` for the duration of a ``with`` block; the server is stopped however it ends."""
    server = start_server(command, base_url, **kwargs)
    try:
        yield server
    finally:
        server.stop()
