"""The shared connection pool: lone statements commit by themselves, transactions stay atomic."""

from __future__ import annotations

import uuid

import pytest

from convergio.db.pool import connection_pool


async def test_a_lone_statement_commits_and_a_failed_transaction_leaves_nothing(postgres_url: str) -> None:
    table = f"pool_probe_{uuid.uuid4().hex[:8]}"
    async with connection_pool(postgres_url, max_size=2) as pool:
        async with pool.connection() as conn:
            assert conn.autocommit
            await conn.execute(f"CREATE TABLE {table} (n int)")
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
            # Another connection sees the row while this one is still held: nothing left uncommitted.
            async with pool.connection() as other:
                assert await (await other.execute(f"SELECT count(*) FROM {table}")).fetchone() == (1,)
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} VALUES (2)")
                    raise ZeroDivisionError
            assert await (await conn.execute(f"SELECT n FROM {table}")).fetchall() == [(1,)]
            await conn.execute(f"DROP TABLE {table}")
