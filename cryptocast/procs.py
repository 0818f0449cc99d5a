"""Child service processes for ``cryptocast up`` and ``cryptocast demo``.

Each service runs as ``python -m cryptocast [--config F] <command>`` in its own session, so a
terminal's Ctrl-C reaches only the supervisor, which then stops the children in order (SIGTERM,
then SIGKILL of the whole process group, training child included, if one does not stop in
time). On Linux a child is also asked to receive SIGTERM when its supervisor dies, so even a
``kill -9`` of the supervisor leaves no orphan service behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import structlog

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only async-signal-safe work here.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildService:
    """One long-running ``cryptocast`` service process."""

    def __init__(
        self,
        command: str,
        env: dict[str, str],
        *,
        config_file: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.command = command
        self.env = env
        self.config_file = config_file
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> ChildService:
        """Start the process; its output goes to ``log_path``, else to our stdout/stderr."""
        args = [sys.executable, "-m", "cryptocast"]
        if self.config_file:
            args += ["--config", self.config_file]
        args.append(self.command)
        out: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )
        log.info("service.started", service=self.command, pid=self.proc.pid)
        return self

    def poll(self) -> int | None:
        """The exit code, or None while running."""
        return None if self.proc is None else self.proc.poll()

    def terminate(self) -> None:
        """Ask the service to stop (SIGTERM: it finishes what it accepted and exits 0)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        """Wait for the exit; past ``timeout_s`` kill the whole process group. Returns the code."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("service.kill", service=self.command, pid=self.proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def stop(self, timeout_s: float = 30.0) -> int:
        """:meth:`terminate` then :meth:`wait`."""
        self.terminate()
        return self.wait(timeout_s)

    def tail(self, n: int = 3000) -> str:
        """The end of the service's log file (empty without one)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n:]


def stop_all(services: list[ChildService], timeout_s: float = 30.0) -> dict[str, int]:
    """SIGTERM every running service at once, then wait for each (killing laggards)."""
    for s in services:
        s.terminate()
    deadline = time.monotonic() + timeout_s
    codes: dict[str, int] = {}
    for s in services:
        if s.proc is not None:
            codes[s.command] = s.wait(max(0.1, deadline - time.monotonic()))
    return codes
