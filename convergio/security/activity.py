"""The ``screen_text`` Temporal activity: screen, decide the policy action, record the verdict.

Register ``SecurityActivities(pool).screen_text`` on the worker; call it from a workflow
before using a workflow input, an agent's instruction, retrieved context or an agent output,
and act on ``ScreenOutput.action``:

* ``allow``    - go on with ``text_after`` (the original text);
* ``redact``   - go on with ``text_after`` (secrets, personal data, exfil links and attack spans replaced);
* ``approval`` - raise an approval gate showing ``verdict.reasons``; ``text_after`` is the original text;
* ``block``    - stop; ``text_after`` is ``None``.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity

from convergio.contracts import SecurityFinding
from convergio.observability.tracing import span
from convergio.security import store
from convergio.security.guardian import ScreenRequest, Surface, Verdict, screen
from convergio.security.policy import Action, SecurityPolicy, decide_action


class ScreenInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    step_id: str | None = None
    surface: Surface
    tenant: str = "default"
    text: str
    policy: SecurityPolicy = Field(default_factory=SecurityPolicy)


class ScreenOutput(BaseModel):
    verdict: Verdict
    action: Action
    text_after: str | None  # redacted text on "redact", None on "block", else the text itself
    verdict_id: int | None = None

    def finding(self, surface: str, step_id: str | None) -> SecurityFinding:
        """What the run's result shows for a verdict that was not a plain allow."""
        return SecurityFinding(
            surface=surface, step_id=step_id, decision=self.verdict.decision, action=self.action,
            score=self.verdict.score, categories=self.verdict.categories, reasons=self.verdict.reasons,
        )


class SecurityActivities:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @activity.defn(name="screen_text")
    async def screen_text(self, inp: ScreenInput) -> ScreenOutput:
        return await screen_and_record(self._pool, inp)


async def screen_and_record(pool: AsyncConnectionPool, inp: ScreenInput) -> ScreenOutput:
    """Screen one text, decide the policy's action, record the verdict (also used inside agent turns)."""
    with span("security.screen", surface=inp.surface, tenant=inp.tenant) as screen_span:
        verdict = screen(ScreenRequest(text=inp.text, surface=inp.surface, tenant=inp.tenant), inp.policy.thresholds)
        action = decide_action(verdict, inp.policy, inp.surface)
        screen_span.set_attributes(
            {"decision": verdict.decision, "score": verdict.score, "action": action,
             "categories": ",".join(verdict.categories)}
        )
    if action == "redact":
        text_after: str | None = verdict.redacted if verdict.redacted is not None else inp.text
    elif action == "block":
        text_after = None
    else:
        text_after = inp.text
    verdict_id = await store.record_verdict(
        pool, inp.workflow_id, inp.step_id, inp.surface, inp.tenant, verdict, inp.text, action=action
    )
    return ScreenOutput(verdict=verdict, action=action, text_after=text_after, verdict_id=verdict_id)
