"""An agent as data: who it is, what it knows, and how the speaker selector should see it."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MissionPhase = Literal["discovery", "analysis", "strategy", "execution", "monitoring"]
MISSION_PHASES: tuple[MissionPhase, ...] = ("discovery", "analysis", "strategy", "execution", "monitoring")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


class AgentDefinition(BaseModel):
    """One agent, loaded from ``convergio/agents/definitions/<name>.yaml`` (or ``.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Identifier used in templates and by AutoGen, e.g. 'cfo'.")
    role: str = Field(min_length=1, max_length=200, description="Human title, e.g. 'Chief Financial Officer'.")
    system_message: str = Field(min_length=1, max_length=20_000)
    expertise: list[str] = Field(default_factory=list, description="Expertise domains, lower case: finance, strategy…")
    phases: list[MissionPhase] = Field(default_factory=list, description="Mission phases this agent is strong in.")
    complexity: int = Field(default=3, ge=1, le=5, description="Hardest task complexity it handles well (1–5).")
    collaborators: list[str] = Field(default_factory=list, description="Agents it works well after or with.")
    performance: float = Field(default=0.8, ge=0.0, le=1.0, description="Historic quality/speed/success, 0–1.")
    fast_response: bool = Field(default=False, description="Prefer it when the conversation is urgent.")
    tools: list[str] = Field(default_factory=list, description="Names of registered tools it may call.")
    model: str | None = Field(default=None, description="Model override in CONVERGIO_MODEL syntax.")

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be a lower-case identifier such as 'cfo' or 'market_analyst'")
        return value

    @field_validator("expertise")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [item.strip().lower() for item in value if item.strip()]
