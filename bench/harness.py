"""What the benchmarks share: progress on stderr, percentiles, and a ``main`` that runs one
coroutine and prints its JSON result as the last line of stdout (progress never goes there)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def progress(name: str) -> Callable[[str], None]:
    """A ``log(message)`` writing ``[bench/<name>] message`` to stderr."""

    def log(message: str) -> None:
        print(f"[bench/{name}] {message}", file=sys.stderr, flush=True)

    return log


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN without values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run_bench(
    name: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]],
    *,
    clean_env: bool = True,
) -> None:
    """Parse the arguments, run ``run`` and print its result as one JSON line. ``clean_env``
    drops ``CONVERGIO_*`` variables first: the bench configures everything itself."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from convergio.process_exit import exit_now
    args = parser.parse_args()
    if clean_env:
        for variable in [v for v in os.environ if v.startswith("CONVERGIO_")]:
            del os.environ[variable]
    log = progress(name)
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` or `timeout` stops the servers like Ctrl-C does
    try:
        result = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; servers stopped")
        exit_now(130)
    log(f"done in {time.perf_counter() - started:.1f}s")
    print(json.dumps(result))
    exit_now(0)  # not the interpreter teardown, which the Temporal client can abort


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
