"""A child server process that is started, probed until ready and stopped without orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """A part of the embedded stack could not start; the message says which and why."""


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ensure_port_free(name: str, host: str, port: int, setting: str) -> None:
    if not port_is_free(host, port):
        raise StackError(
            f"{name}: port {port} on {host} is already in use. Stop whatever uses it, "
            f"or choose another port with {setting}."
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (for tests and ephemeral servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 20) -> str:
    """The log's last ``lines``, led by the line that says why a Go program panicked when the
    panic's stack trace alone would fill them."""
    try:
        all_lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    last = all_lines[-lines:]
    panic = go_panic(all_lines[:-lines])
    return "\n".join([panic, "...", *last] if panic else last)


def go_panic(lines: Sequence[str]) -> str | None:
    """The last line of ``lines`` in which a Go program says why it panicked, if any."""
    return next((line for line in reversed(lines) if line.startswith("panic: ")), None)


class ManagedProcess:
    """One child process with its own log file and process group.

    The child runs in a new session so a terminal's Ctrl-C reaches only the supervisor,
    which then stops children in order; ``stop`` signals the whole group so helper
    processes a server forks (e.g. PostgreSQL's backends) go too.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.command = [str(part) for part in command]
        self.log_path = log_path
        self.env = env
        self.user = user
        self.cwd = cwd
        self.stop_signal = stop_signal
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self._popen = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(self.env or {})},
                    cwd=self.cwd,
                    user=self.user,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StackError(f"{self.name}: cannot run {self.command[0]}: {exc}") from exc

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    async def wait_ready(
        self, probe: Callable[[], Awaitable[bool]], timeout: float, what: str
    ) -> None:
        """Poll ``probe`` until it returns True; fail early if the child exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self.is_running():
                raise StackError(
                    f"{self.name} exited with code {self.exit_code()} before {what}. "
                    f"Last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                if await probe():
                    return
            except Exception:  # noqa: BLE001 - any failure means "not ready yet"
                pass
            if loop.time() > deadline:
                raise StackError(
                    f"{self.name} did not become ready ({what}) within {timeout:.0f}s. "
                    f"Last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            await asyncio.sleep(0.1)

    async def start_until_ready(
        self,
        probe: Callable[[], Awaitable[bool]],
        timeout: float,
        what: str,
        *,
        attempts: int = 1,
        retry_when: Callable[[str], bool] = lambda log: False,
    ) -> None:
        """``start`` then ``wait_ready``. A child that exits before it is ready, and whose log
        lines of that attempt satisfy ``retry_when``, is started again (``attempts`` in all);
        any other failure is raised at once."""
        for attempt in range(1, attempts + 1):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.start()
            try:
                await self.wait_ready(probe, timeout, what)
                return
            except StackError:
                if self.is_running() or attempt == attempts or not retry_when(self._log_since(offset)):
                    raise

    def _log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the process group to stop, then kill it if it does not within ``timeout``."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._signal_group(self.stop_signal)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait(5)
        # Helpers left in the group after the leader exited must not outlive us.
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._popen is not None
        try:
            os.killpg(self._popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
