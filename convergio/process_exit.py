"""Ending a process that used the Temporal client, without the interpreter teardown.

The client's Rust threads can outlive the event loop, and an interpreter shutting down under
them now and then dies with ``PyGILState_Release`` (SIGABRT) after the program did its job
(temporalio/sdk-python#300; seen here as ``convergio approve`` exiting with -6).
"""

from __future__ import annotations

import atexit
import os
import sys
from contextlib import suppress
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Do the exit work a normal exit does (flush the standard streams, run the atexit
    functions: log and trace flushing), then end the process with ``code``."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a reader that went away (e.g. `| head`)
            stream.flush()
    atexit._run_exitfuncs()  # noqa: SLF001 - what a normal exit runs before the teardown
    os._exit(code)


def exit_status(code: object) -> int:
    """``SystemExit.code`` as the process status Python itself would give it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
