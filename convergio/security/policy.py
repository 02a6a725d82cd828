"""Per-template security policy: what to do with a flagged or blocked verdict.

Templates get a ``security:`` section parsed into :class:`SecurityPolicy`::

    security:
      on_flag: approval      # allow | redact | approval | block
      on_block: block        # block | redact | approval
      surfaces: [input, instruction, context, output]
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from convergio.security.guardian import SURFACES, Surface, Thresholds, Verdict

Action = Literal["allow", "redact", "approval", "block"]


class SecurityPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_flag: Literal["allow", "redact", "approval", "block"] = "approval"
    on_block: Literal["block", "redact", "approval"] = "block"
    surfaces: list[Surface] = Field(default_factory=lambda: list(SURFACES))
    thresholds: Thresholds = Field(default_factory=Thresholds)


def decide_action(verdict: Verdict, policy: SecurityPolicy, surface: Surface | None = None) -> Action:
    """The action for a verdict: ``allow`` verdicts and unscreened surfaces are always allowed."""
    if surface is not None and surface not in policy.surfaces:
        return "allow"
    if verdict.decision == "block":
        return policy.on_block
    if verdict.decision == "flag":
        return policy.on_flag
    return "allow"
