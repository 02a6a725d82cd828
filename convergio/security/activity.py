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

import time
from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity

from convergio.contracts import SecurityFinding
from convergio.observability.metrics import get_metrics
from convergio.observability.tracing import span
from convergio.security import store
from convergio.security.guardian import (
    ScreenRequest,
    Surface,
    Verdict,
    screen,
    screen_parts,
    screen_with_model,
    uncertain,
)
from convergio.security.policy import Action, SecurityPolicy, decide_action

if TYPE_CHECKING:
    from convergio.security.classifier import Classifier


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
    def __init__(self, pool: AsyncConnectionPool, classifier: Classifier | None = None) -> None:
        self._pool = pool
        self._classifier = classifier

    @activity.defn(name="screen_text")
    async def screen_text(self, inp: ScreenInput) -> ScreenOutput:
        return await screen_and_record(self._pool, inp, self._classifier)


async def screen_and_record(
    pool: AsyncConnectionPool, inp: ScreenInput, classifier: Classifier | None = None
) -> ScreenOutput:
    """Screen one text, decide the policy's action, record the verdict (also used inside agent turns)."""
    screened, record = await screen_input(inp, classifier)
    screened.verdict_id = await store.record_verdict(
        pool, record.workflow_id, record.step_id, record.surface, record.tenant, record.verdict, record.text,
        action=record.action,
    )
    return screened


async def screen_input(
    inp: ScreenInput, classifier: Classifier | None = None, *, parts: list[str] | None = None
) -> tuple[ScreenOutput, store.VerdictRecord]:
    """Screen and decide, without writing: the caller records the returned verdict (the agent
    turn writes its verdicts in the same transaction as the turn itself). ``parts``: the
    pieces ``inp.text`` was joined from (see :func:`~convergio.security.guardian.screen_parts`).
    Counts the verdict in the metrics."""
    started = time.perf_counter()
    with span("security.screen", surface=inp.surface, tenant=inp.tenant) as screen_span:
        if parts is not None:
            verdict = screen_parts(parts, inp.surface, inp.policy.thresholds)
        else:
            verdict = screen(ScreenRequest(text=inp.text, surface=inp.surface, tenant=inp.tenant), inp.policy.thresholds)
        consulted = False
        if classifier is not None and uncertain(verdict, inp.policy.thresholds):
            consulted = True
            verdict = await screen_with_model(
                ScreenRequest(text=inp.text, surface=inp.surface, tenant=inp.tenant), classifier,
                inp.policy.thresholds, verdict=verdict,
            )
        action = decide_action(verdict, inp.policy, inp.surface)
        screen_span.set_attributes(
            {"decision": verdict.decision, "score": verdict.score, "action": action,
             "categories": ",".join(verdict.categories), "classifier": consulted}
        )
    get_metrics().record_verdict(
        inp.surface, verdict.decision, verdict.categories, action, time.perf_counter() - started, classifier=consulted
    )
    if action == "redact":
        text_after: str | None = verdict.redacted if verdict.redacted is not None else inp.text
    elif action == "block":
        text_after = None
    else:
        text_after = inp.text
    record = store.VerdictRecord(inp.workflow_id, inp.step_id, inp.surface, inp.tenant, verdict, inp.text, action)
    return ScreenOutput(verdict=verdict, action=action, text_after=text_after), record
