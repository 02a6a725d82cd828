"""Who is calling: API keys or HS256 JWTs, each with a role and a tenant.

Roles are ordered ``viewer < operator < approver < admin``: a route names the least role it
needs. Keys are kept only as SHA-256 digests and compared in constant time. Every caller
belongs to one tenant and sees only that tenant's runs, knowledge and costs; ``admin`` may
cross tenants. Deciding a gate also needs one of the gate's roles (``approves_as``).

Local development: ``convergio up`` and ``convergio demo`` create an admin key in
``<data dir>/api-key`` (mode 0600); the API accepts it and the CLI sends it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

import jwt
from fastapi import Depends, HTTPException, Query, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError

from convergio.api.rate_limit import enforce_rate_limit
from convergio.settings import ApiKeyEntry, ApiRole, Settings

ROLES: tuple[ApiRole, ...] = ("viewer", "operator", "approver", "admin")
KEY_PREFIX = "cvg_"
LOCAL_KEY_FILE = "api-key"
LOCAL_ADMIN_NAME = "local-admin"


class Principal(BaseModel):
    """The authenticated caller."""

    name: str
    role: ApiRole
    tenant: str
    approves_as: list[str] = Field(default_factory=list)
    method: Literal["api_key", "jwt"]
    limit_key: str = Field(exclude=True, description="What the rate limit counts against.")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def has(self, needed: ApiRole) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)

    def gate_roles(self) -> set[str]:
        """The gate roles this caller may decide as: its ``approves_as``, its API role and the API
        roles below it (an approver is an operator too, so it decides a step's escalation gate,
        whose role is ``operator`` unless the step lists approvers)."""
        return {*self.approves_as, *ROLES[: ROLES.index(self.role) + 1]}

    def sees(self, tenant: str | None) -> bool:
        return self.is_admin or tenant == self.tenant


class JwtClaims(BaseModel):
    sub: str = Field(min_length=1, max_length=200)
    role: ApiRole
    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    approves_as: list[str] = Field(default_factory=list)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyStore:
    """The accepted keys, by digest; built once per app from the settings and the local key file."""

    def __init__(self, entries: list[tuple[str, ApiKeyEntry]]) -> None:
        self._entries = entries

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyStore:
        entries = [
            (entry.sha256 or hash_key(entry.key.get_secret_value()), entry)  # type: ignore[union-attr]
            for entry in settings.api_keys
        ]
        local = read_local_admin_key(settings)
        if local:
            entries.append(
                (
                    hash_key(local),
                    ApiKeyEntry(
                        name=LOCAL_ADMIN_NAME, role="admin", tenant="default", sha256=hash_key(local)
                    ),
                )
            )
        return cls(entries)

    def find(self, key: str) -> tuple[str, ApiKeyEntry] | None:
        digest = hash_key(key)
        found = None
        for stored, entry in self._entries:  # no early exit: timing does not tell how far a key matched
            if hmac.compare_digest(stored, digest):
                found = (stored, entry)
        return found


def local_key_path(settings: Settings) -> Path:
    return settings.resolved_data_dir / LOCAL_KEY_FILE


def read_local_admin_key(settings: Settings) -> str | None:
    try:
        return local_key_path(settings).read_text().strip() or None
    except OSError:
        return None


def ensure_local_admin_key(settings: Settings) -> str:
    """The local admin key, created (readable by this user only) on first use."""
    existing = read_local_admin_key(settings)
    if existing:
        return existing
    path = local_key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile
        return read_local_admin_key(settings) or key
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def client_key(settings: Settings) -> str | None:
    """The key a client (the CLI) sends: CONVERGIO_API_KEY, else the local admin key."""
    return settings.api_key.get_secret_value() if settings.api_key else read_local_admin_key(settings)


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_bearer = HTTPBearer(
    auto_error=False, description="An API key or an HS256 JWT.", bearerFormat="API key or JWT"
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": 'Bearer realm="convergio"'}
    )


def authenticate(settings: Settings, keys: KeyStore, token: str) -> Principal:
    """A principal for ``token`` (API key or JWT), or 401 saying why not."""
    if token.count(".") == 2 and not token.startswith(KEY_PREFIX):
        return _from_jwt(settings, token)
    found = keys.find(token)
    if found is None:
        raise _unauthorized("unknown API key")
    digest, entry = found
    return Principal(
        name=entry.name,
        role=entry.role,
        tenant=entry.tenant,
        approves_as=entry.approves_as,
        method="api_key",
        limit_key=f"key:{digest[:32]}",
    )


def _from_jwt(settings: Settings, token: str) -> Principal:
    if settings.jwt_secret is None:
        raise _unauthorized("JWTs are not accepted here (CONVERGIO_JWT_SECRET is not set)")
    try:
        payload = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=["HS256"],
            options={"require": ["exp", "sub", "role", "tenant"]},
        )
        claims = JwtClaims.model_validate(payload)
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        raise _unauthorized(f"invalid token claims: {fields}") from None
    return Principal(
        name=claims.sub,
        role=claims.role,
        tenant=claims.tenant,
        approves_as=claims.approves_as,
        method="jwt",
        limit_key=f"jwt:{claims.tenant}:{claims.sub}",
    )


async def current_principal(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Principal:
    """The caller, authenticated and counted against its rate limit."""
    return await _principal(request, api_key or (bearer.credentials if bearer else None))


async def stream_principal(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    access_token: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="Key or JWT, for clients that cannot send headers (EventSource).",
            examples=["cvg_3q2-Vx1..."],
        ),
    ] = None,
) -> Principal:
    """Like ``current_principal``; event streams also take the token as ``?access_token=``."""
    return await _principal(request, api_key or (bearer.credentials if bearer else None) or access_token)


async def _principal(request: Request, token: str | None) -> Principal:
    if not token:
        raise _unauthorized(
            "authentication required: send 'Authorization: Bearer <key or JWT>' or 'X-API-Key'"
        )
    state = request.app.state
    principal = authenticate(state.settings, state.keys, token)
    await enforce_rate_limit(state.redis, state.settings, principal.limit_key)
    return principal


def require(role: ApiRole):  # noqa: ANN201 - a FastAPI dependency
    """A dependency: the caller, if its role is at least ``role``; otherwise 403."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs role '{role}' or higher; your role is '{principal.role}'",
            )
        return principal

    return dependency


async def caller_tenant(
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    tenant: Annotated[
        str | None,
        Query(
            pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
            description="Unset: your tenant. Another tenant: admins only.",
            examples=["acme"],
        ),
    ] = None,
) -> str:
    """The tenant a request acts on: the caller's own; admins may name another. Writes need ``operator``."""
    if request.method not in ("GET", "HEAD") and not principal.has("operator"):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"this needs role 'operator' or higher; your role is '{principal.role}'",
        )
    if tenant is None or tenant == principal.tenant:
        return principal.tenant
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may act on tenant '{principal.tenant}' only")
    return tenant


Viewer = Annotated[Principal, Depends(require("viewer"))]
StreamViewer = Annotated[Principal, Depends(stream_principal)]
Operator = Annotated[Principal, Depends(require("operator"))]
Approver = Annotated[Principal, Depends(require("approver"))]
Admin = Annotated[Principal, Depends(require("admin"))]
