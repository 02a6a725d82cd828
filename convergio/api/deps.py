"""What routes get from the app: settings, clients and registries opened in the lifespan."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from convergio.agents.catalog import AgentCatalog, default_catalog
from convergio.graphflow.loader import TemplateRegistry, default_registry
from convergio.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


def get_db(request: Request) -> AsyncConnectionPool:
    return request.app.state.db


def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


def get_catalog() -> AgentCatalog:
    return default_catalog()


def get_registry() -> TemplateRegistry:
    return default_registry()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
CatalogDep = Annotated[AgentCatalog, Depends(get_catalog)]
DbDep = Annotated[AsyncConnectionPool, Depends(get_db)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
RegistryDep = Annotated[TemplateRegistry, Depends(get_registry)]
