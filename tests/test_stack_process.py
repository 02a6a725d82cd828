"""Starting a child server: retries for a known startup panic, nothing else retried."""

from __future__ import annotations

import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from convergio.stack.process import ManagedProcess, StackError, free_port, tail
from convergio.stack.temporal_server import _panicked

# A stand-in server: its first start panics the way Go reports it; later starts listen on PORT.
CHILD = """
import pathlib, socket, sys, time
runs = pathlib.Path(sys.argv[1])
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
if sys.argv[3] == "panic" and len(runs.read_text()) == 1:
    print("panic: failed assigning ephemeral port", flush=True)
    print("\\n".join(f"goroutine frame {i}" for i in range(40)), flush=True)
    sys.exit(2)
if sys.argv[3] == "exit":
    print("error: bad flag", flush=True)
    sys.exit(1)
server = socket.create_server(("127.0.0.1", int(sys.argv[2])))
time.sleep(60)
"""


def _child(tmp_path: Path, mode: str, port: int) -> tuple[ManagedProcess, Path]:
    runs = tmp_path / "runs"
    command = [sys.executable, "-c", CHILD, str(runs), str(port), mode]
    return ManagedProcess("stand-in", command, tmp_path / "child.log"), runs


def _listening(port: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    return probe


async def test_a_start_that_panicked_is_tried_again(tmp_path: Path) -> None:
    port = free_port()
    process, runs = _child(tmp_path, "panic", port)
    try:
        await process.start_until_ready(_listening(port), 20, "listening", attempts=3, retry_when=_panicked)
        assert process.is_running()
        assert runs.read_text() == "xx"  # one panicked start, one good one
    finally:
        process.stop()


async def test_other_early_exits_are_not_retried_and_the_panic_leads_the_log_tail(tmp_path: Path) -> None:
    port = free_port()
    process, runs = _child(tmp_path, "exit", port)
    with pytest.raises(StackError, match="bad flag"):
        await process.start_until_ready(_listening(port), 20, "listening", attempts=3, retry_when=_panicked)
    assert runs.read_text() == "x"

    panicking, _ = _child(tmp_path / "p", "panic", port)
    (tmp_path / "p").mkdir()
    with pytest.raises(StackError):  # one attempt only: the panic is reported, not retried
        await panicking.start_until_ready(_listening(port), 20, "listening", attempts=1, retry_when=_panicked)
    shown = tail(panicking.log_path)
    assert shown.splitlines()[0] == "panic: failed assigning ephemeral port"  # 40 frames follow it
    assert shown.splitlines()[-1] == "goroutine frame 39"


def test_a_pidfile_naming_another_program_is_stale(tmp_path: Path) -> None:
    """After a reboot the pid in PostgreSQL's pidfile often belongs to some other process: `up`
    refused to start ("PostgreSQL already runs"). A pidfile naming a live PostgreSQL still stops
    it, so a running server's data directory is never shared."""
    import subprocess

    from convergio.stack.postgres_server import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path, port=free_port())
    server.pgdata.mkdir(parents=True)
    pidfile = server.pgdata / "postmaster.pid"
    other = subprocess.Popen(["sleep", "60"])
    looks_like_postgres = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)", "postgres"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert looks_like_postgres.stdout is not None
        assert looks_like_postgres.stdout.readline() == "up\n"  # running its own command line now
        pidfile.write_text(f"{other.pid}\n{server.pgdata}\n")
        server._remove_stale_pidfile()  # noqa: SLF001 - the check `start` runs first
        assert not pidfile.exists()

        pidfile.write_text(f"{looks_like_postgres.pid}\n{server.pgdata}\n")
        with pytest.raises(StackError, match="PostgreSQL already runs"):
            server._remove_stale_pidfile()  # noqa: SLF001
        assert pidfile.exists()
    finally:
        other.kill()
        looks_like_postgres.kill()


async def test_the_worker_is_ready_when_its_own_process_polls(dev_client, settings, resources) -> None:
    """`up` waits for its worker to poll the task queue. Any poller counted: a worker of another
    stack on the same queue made a worker that had not started look ready."""
    import asyncio
    import os

    from convergio.stack.supervisor import worker_polls
    from convergio.workers.worker import build_worker

    queue = settings.model_copy(update={"temporal_task_queue": "convergio-readiness"})
    assert not await worker_polls(dev_client, queue, os.getpid())  # nobody polls yet
    async with build_worker(dev_client, queue, resources):  # polls as "<this pid>@<host>"
        for _ in range(100):
            if await worker_polls(dev_client, queue, os.getpid()):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("this process's worker never showed as a poller")
        assert not await worker_polls(dev_client, queue, 4_000_000)  # another process: not ready
        assert not await worker_polls(dev_client, queue, None)  # not started
