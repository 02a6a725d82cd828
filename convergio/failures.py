"""Reading Temporal failures: the reason a person needs is the innermost cause."""

from __future__ import annotations


def root_cause(exc: BaseException) -> str:
    """Temporal wraps failures (workflow → activity → application); the innermost says why."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)
