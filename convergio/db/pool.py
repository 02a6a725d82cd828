"""The PostgreSQL connection pool every Convergio process opens."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool


def connection_pool(database_url: str, *, max_size: int) -> AsyncConnectionPool:
    """A pool (not yet open) of autocommit connections.

    Autocommit: a lone statement is its own transaction, one round trip instead of three
    (BEGIN, the statement, COMMIT). Code that needs several statements to be atomic says so
    with ``conn.transaction()``.
    """
    return AsyncConnectionPool(
        database_url, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
    )
