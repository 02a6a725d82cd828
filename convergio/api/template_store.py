"""Custom templates in PostgreSQL: per tenant, versioned, written once.

A template is validated before it is stored and pinned into a run's input when the run
starts, so the worker never reads this table.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from psycopg.types.json import Jsonb
from pydantic import ValidationError
from psycopg_pool import AsyncConnectionPool

from convergio.graphflow.template import Template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredTemplate:
    tenant: str
    template: Template


class VersionConflict(Exception):
    """This tenant already has the name and version with other content."""


class UnreadableTemplate(Exception):
    """A stored template this version of Convergio no longer accepts (a model rule tightened
    after it was stored); the message says which and why, and how to go on."""


def _body(template: Template) -> dict:
    return template.model_dump(mode="json", by_alias=True)


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


async def register(
    pool: AsyncConnectionPool, tenant: str, template: Template, created_by: str
) -> Literal["created", "unchanged"]:
    """Store ``template`` for ``tenant``; the same content again is a no-op, other content a conflict."""
    body = _body(template)
    digest = _digest(body)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "INSERT INTO custom_templates (tenant, name, version, body, digest, created_by)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (tenant, template.name, template.version, Jsonb(body), digest, created_by),
        )
        if cursor.rowcount == 1:
            return "created"
        cursor = await conn.execute(
            "SELECT digest FROM custom_templates WHERE tenant = %s AND name = %s AND version = %s",
            (tenant, template.name, template.version),
        )
        row = await cursor.fetchone()
    if row is not None and row[0] == digest:
        return "unchanged"
    raise VersionConflict(f"{template.key} exists for tenant '{tenant}' with other content; bump the version")


async def get(pool: AsyncConnectionPool, tenant: str, name: str, version: int | None) -> Template:
    """The tenant's template (latest version when ``version`` is None); KeyError names what is missing."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT version, body FROM custom_templates WHERE tenant = %s AND name = %s ORDER BY version",
            (tenant, name),
        )
        rows = await cursor.fetchall()
    if not rows:
        raise KeyError(name)
    by_version = {v: body for v, body in rows}
    chosen = version if version is not None else max(by_version)
    if chosen not in by_version:
        raise KeyError(f"template '{name}' has no version {chosen}; versions: {sorted(by_version)}")
    return _decode(tenant, name, chosen, by_version[chosen])


async def list_templates(pool: AsyncConnectionPool, tenant: str | None) -> list[StoredTemplate]:
    """Every version of the tenant's templates (of all tenants when ``tenant`` is None)."""
    query = "SELECT tenant, body FROM custom_templates"
    params: tuple[str, ...] = ()
    if tenant is not None:
        query += " WHERE tenant = %s"
        params = (tenant,)
    async with pool.connection() as conn:
        cursor = await conn.execute(query + " ORDER BY tenant, name, version", params)
        rows = await cursor.fetchall()
    stored = []
    for row_tenant, body in rows:
        try:
            template = _decode(row_tenant, body.get("name", "?"), body.get("version", "?"), body)
        except UnreadableTemplate as exc:  # one such row must not hide (or fail) the others
            log.warning("%s", exc)
            continue
        stored.append(StoredTemplate(tenant=row_tenant, template=template))
    return stored


def _decode(tenant: str, name: str, version: Any, body: dict) -> Template:
    try:
        return Template.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "template"
        raise UnreadableTemplate(
            f"stored template '{name}' v{version} of tenant '{tenant}' no longer validates"
            f" ({exc.error_count()} problem(s); {where}: {first['msg']}); register a corrected version"
        ) from exc
